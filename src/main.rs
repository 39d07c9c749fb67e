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

/// mimalloc's `arena_eager_commit` (option 4 of mimalloc.h): off, so its 1 GiB arena is
/// committed as it is used rather than up front in huge pages: idle RSS 15.5 → ~10 MiB.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Sets the allocator's options before the first allocation (the Rust runtime allocates
/// before `main`): run from the ELF constructors.
extern "C" fn allocator_options() {
    // SAFETY: sets a process-wide allocator option; takes no pointers.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static ALLOCATOR_OPTIONS: extern "C" fn() = allocator_options;

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
            use weir::config::model::{Kind, COMPONENTS};
            let width = COMPONENTS
                .iter()
                .map(|c| c.type_name.len())
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
                for c in COMPONENTS.iter().filter(|c| c.kind == kind) {
                    let signals: Vec<&str> = c.signals.iter().map(|s| s.as_str()).collect();
                    let aliases = if c.aliases.is_empty() {
                        String::new()
                    } else {
                        format!(" (also: {})", c.aliases.join(", "))
                    };
                    println!(
                        "{:<10} {:<width$} {:<20} {}{aliases}",
                        c.kind.as_str(),
                        c.type_name,
                        signals.join(","),
                        c.description
                    );
                }
            }
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(weir::app::run(&configs, opts).clamp(0, 255) as u8),
    }
}
