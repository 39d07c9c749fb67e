//! The `weir` command line: run, validate, components, --version.
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: measured against the system allocator with benches/e2e.sh (see
/// benches/RESULTS.md); it wins on every path that decodes.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
weir: a gateway collector for OpenTelemetry data

usage:
  weir [--config FILE]... [--watch-config]
                                     run (no --config: the embedded config/default.yaml);
                                     --watch-config reloads when the files change
  weir validate [--config FILE]...   check a config, list every error, exit non-zero if any
  weir components                    list the component types weir has
  weir --version                     print the version

Several --config files merge: maps deep-merge, later files win.
Signals: SIGTERM/SIGINT drain queues within service.shutdown_timeout, then exit 0.
SIGHUP (or POST /-/reload on the telemetry endpoint) reloads the config: an invalid one
changes nothing; a valid one is applied touching only what changed.";

/// Transparent huge pages only once weir is busy. mimalloc asks for them on its arena
/// (`madvise`); touching one byte of it then faults in 2 MiB: idle RSS was 15.5 MiB, 6 of it
/// in three huge pages. Under load they are worth having (pass-through measured 10-30 % faster
/// with them, benches/RESULTS.md). So weir starts with them off (from the ELF constructors,
/// before the heap is touched: idle RSS 9.7 MiB) and turns them on for good when its RSS
/// first passes [`THP_FROM_RSS`]. `MIMALLOC_ALLOW_THP=1` in the environment keeps them on
/// from the start.
extern "C" fn thp_off_until_busy() {
    // SAFETY: a NUL-terminated name; getenv only reads the environment (nothing here
    // allocates).
    let keep = unsafe { !getenv(c"MIMALLOC_ALLOW_THP".as_ptr()).is_null() };
    if !keep {
        set_thp_disabled(true);
    }
}

extern "C" {
    fn getenv(name: *const std::ffi::c_char) -> *mut std::ffi::c_char;
    fn prctl(option: std::ffi::c_int, ...) -> std::ffi::c_int;
}

fn set_thp_disabled(off: bool) -> bool {
    const PR_SET_THP_DISABLE: std::ffi::c_int = 41;
    let zero: std::ffi::c_ulong = 0;
    // SAFETY: PR_SET_THP_DISABLE takes integers only; it sets a flag of this process.
    unsafe {
        prctl(
            PR_SET_THP_DISABLE,
            std::ffi::c_ulong::from(off),
            zero,
            zero,
            zero,
        ) == 0
    }
}

fn thp_disabled() -> bool {
    const PR_GET_THP_DISABLE: std::ffi::c_int = 42;
    let zero: std::ffi::c_ulong = 0;
    // SAFETY: PR_GET_THP_DISABLE takes integers only and reads a flag of this process.
    unsafe { prctl(PR_GET_THP_DISABLE, zero, zero, zero, zero) == 1 }
}

/// RSS past which transparent huge pages are turned on.
const THP_FROM_RSS: u64 = 32 << 20;

/// Watches RSS twice a second until it passes [`THP_FROM_RSS`], then turns transparent huge
/// pages on and stops.
fn thp_when_busy() {
    if !thp_disabled() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("weir-thp".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            // VmRSS is in kB whatever the page size.
            let rss = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))?
                        .split_whitespace()
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .map_or(0, |kb| kb * 1024);
            if rss > THP_FROM_RSS {
                set_thp_disabled(false);
                return;
            }
        });
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static THP_OFF: extern "C" fn() = thp_off_until_busy;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut command: Option<&str> = None;
    let mut configs: Vec<PathBuf> = Vec::new();
    let mut opts = weir::app::RunOptions::default();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--version" | "-v" | "version" => {
                println!("weir {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" | "help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--config" | "-c" => {
                let Some(v) = args.get(i + 1) else {
                    eprintln!("weir: --config needs a file\n\n{USAGE}");
                    return ExitCode::from(2);
                };
                configs.push(PathBuf::from(v));
                i += 1;
            }
            "--watch-config" => opts.watch_config = true,
            _ if a.starts_with("--config=") => {
                configs.push(PathBuf::from(&a["--config=".len()..]));
            }
            "run" | "validate" | "components" if command.is_none() => command = Some(a),
            _ => {
                eprintln!("weir: unknown argument {a:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
        i += 1;
    }
    match command.unwrap_or("run") {
        "validate" => match weir::config::load(&configs) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "config is valid: {} pipeline(s): {}",
                    cfg.service.pipelines.len(),
                    cfg.service
                        .pipelines
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(errs) => {
                eprintln!("{errs}");
                eprintln!("{} error(s)", errs.0.len());
                ExitCode::FAILURE
            }
        },
        "components" => {
            use weir::pipeline::registry::{Kind, FACTORIES};
            let width = FACTORIES
                .iter()
                .map(|f| f.type_name.len())
                .max()
                .unwrap_or(10);
            let order = [
                Kind::Receiver,
                Kind::Processor,
                Kind::Exporter,
                Kind::Connector,
                Kind::Extension,
            ];
            for kind in order {
                for f in FACTORIES.iter().filter(|f| f.kind() == kind) {
                    let aliases = if f.aliases.is_empty() {
                        String::new()
                    } else {
                        format!(" (also: {})", f.aliases.join(", "))
                    };
                    println!(
                        "{:<10} {:<width$} {:<42} {}{aliases}",
                        kind.as_str(),
                        f.type_name,
                        f.stability_text(),
                        f.description
                    );
                }
            }
            ExitCode::SUCCESS
        }
        _ => {
            thp_when_busy();
            ExitCode::from(weir::app::run(&configs, opts).clamp(0, 255) as u8)
        }
    }
}
