//! The config loader: reads YAML files, expands `${env:VAR}` references, deep-merges several
//! files (later wins) and decodes component bodies with errors that name file, line and YAML
//! path. This is the only module that knows about `serde_yaml`.
//!
//! Line numbers come from a small indentation scanner over each file's text ([`LineIndex`]):
//! it understands block mappings and block sequences, which is how collector configs are
//! written. A path it cannot place (inside a multi-line flow collection, say) gets the line of
//! its nearest placed ancestor, so an error always points somewhere sensible.
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
pub use serde_yaml::{Mapping, Value};

/// One config document and the name errors should use for it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// One config problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: Option<String>,
    pub line: Option<usize>,
    /// The YAML path, e.g. `processors.tail_sampling.policies[2].latency.threshold_ms`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            _ => {}
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found, reported together.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn single(file: Option<&str>, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.map(str::to_owned),
            line,
            path: String::new(),
            message: message.into(),
        }])
    }
}

/// The merged, env-expanded document plus where each path came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub root: Value,
    /// YAML path -> (file name, line) of the file that set it last.
    pub locations: HashMap<String, (String, usize)>,
    /// Things worth a log line but not an error (an unset environment variable).
    pub warnings: Vec<String>,
    /// The names of the files loaded, in order (the file errors name when no line is known).
    pub files: Vec<String>,
}

impl Loaded {
    /// An error at `path`, placed at the line that set it (or its nearest placed ancestor).
    pub fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        let (file, line) = match self.locate(path) {
            Some((f, l)) => (Some(f.clone()), Some(*l)),
            None => (self.files.last().cloned(), None),
        };
        ConfigError {
            file,
            line,
            path: path.into(),
            message: message.into(),
        }
    }

    fn locate(&self, path: &str) -> Option<&(String, usize)> {
        let mut p = path;
        loop {
            if let Some(l) = self.locations.get(p) {
                return Some(l);
            }
            p = parent_path(p)?;
        }
    }

    /// Decodes `value` (found at `base_path`) into `T`; an error names the exact sub-path.
    pub fn decode<T: DeserializeOwned>(
        &self,
        base_path: &str,
        value: &Value,
    ) -> Result<T, ConfigError> {
        self.decode_all(base_path, value)
            .map_err(|mut errs| errs.swap_remove(0))
    }

    /// Decodes `value`, reporting every mistake in it rather than the first: each key the
    /// decoder refuses (unknown, or a value of the wrong kind) is reported, taken out, and the
    /// rest decoded again, until nothing more is wrong or a mistake cannot be taken out.
    pub fn decode_all<T: DeserializeOwned>(
        &self,
        base_path: &str,
        value: &Value,
    ) -> Result<T, Vec<ConfigError>> {
        let mut current = value.clone();
        let mut errors = Vec::new();
        // Each round removes one key, so this ends; the cap keeps a hostile file cheap.
        for _ in 0..64 {
            match serde_path_to_error::deserialize::<_, T>(current.clone()) {
                Ok(t) if errors.is_empty() => return Ok(t),
                Ok(_) => return Err(errors),
                Err(e) => {
                    let sub = render_serde_path(e.path());
                    let path = join_path(base_path, &sub);
                    let removable = remove_at(&mut current, e.path());
                    errors
                        .push(self.error(&path, clean_serde_message(&e.into_inner().to_string())));
                    if !removable {
                        return Err(errors);
                    }
                }
            }
        }
        Err(errors)
    }
}

/// One component's YAML body, as its factory sees it: decode it into the component's
/// settings and report every problem, each under the component's path.
pub struct Body<'a> {
    loaded: &'a Loaded,
    /// The component's YAML path (`processors.batch/2`).
    pub path: String,
    value: &'a Value,
    errors: &'a mut Vec<ConfigError>,
}

impl<'a> Body<'a> {
    pub fn new(
        loaded: &'a Loaded,
        path: String,
        value: &'a Value,
        errors: &'a mut Vec<ConfigError>,
    ) -> Body<'a> {
        Body {
            loaded,
            path,
            value,
            errors,
        }
    }

    /// The body decoded into `T`; `type:` with nothing under it is all defaults. Every key
    /// that does not decode is reported.
    pub fn decode<T: DeserializeOwned + Default>(&mut self) -> Option<T> {
        if self.value.is_null() {
            return Some(T::default());
        }
        match self.loaded.decode_all::<T>(&self.path, self.value) {
            Ok(t) => Some(t),
            Err(e) => {
                self.errors.extend(e);
                None
            }
        }
    }

    /// Decodes, then checks with `check` (which may also normalize): its problems are
    /// (key under the component, message). `None` when anything was wrong.
    pub fn decode_checked<T: DeserializeOwned + Default>(
        &mut self,
        check: impl FnOnce(&mut T) -> Vec<(String, String)>,
    ) -> Option<T> {
        let mut t = self.decode::<T>()?;
        let problems = check(&mut t);
        self.problems(problems).then_some(t)
    }

    /// Reports problems (key under the component, message); true when there were none.
    pub fn problems(&mut self, problems: Vec<(String, String)>) -> bool {
        let ok = problems.is_empty();
        for (k, m) in problems {
            let path = if k.is_empty() {
                self.path.clone()
            } else {
                format!("{}.{k}", self.path)
            };
            self.errors.push(self.loaded.error(&path, m));
        }
        ok
    }
}

/// Removes the mapping key `path` leads to; false when the path does not end in a mapping key
/// (or leads nowhere), so nothing was removed.
fn remove_at(root: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segs: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, parents)) = segs.split_last() else {
        return false;
    };
    let mut v = root;
    for seg in parents {
        let next = match seg {
            Segment::Map { key } => v.as_mapping_mut().and_then(|m| m.get_mut(key.as_str())),
            Segment::Seq { index } => v.as_sequence_mut().and_then(|s| s.get_mut(*index)),
            _ => None,
        };
        match next {
            Some(n) => v = n,
            None => return false,
        }
    }
    v.as_mapping_mut()
        .and_then(|m| m.remove(key.as_str()))
        .is_some()
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> None.
fn parent_path(p: &str) -> Option<&str> {
    if p.is_empty() {
        return None;
    }
    let cut = p.rfind(['.', '[']).unwrap_or(0);
    Some(&p[..cut])
}

fn join_path(base: &str, sub: &str) -> String {
    match (base.is_empty(), sub.is_empty()) {
        (true, _) => sub.to_owned(),
        (_, true) => base.to_owned(),
        _ if sub.starts_with('[') => format!("{base}{sub}"),
        _ => format!("{base}.{sub}"),
    }
}

fn render_serde_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// serde_yaml's messages sometimes end in a position inside the re-serialised value, which
/// means nothing to the user (we print the real file and line instead).
fn clean_serde_message(m: &str) -> String {
    match m.find(" at line ") {
        Some(i) => m[..i].to_owned(),
        None => m.to_owned(),
    }
}

/// Loads `--config` files in order: later files win.
pub fn load_files(paths: &[PathBuf]) -> Result<Loaded, ConfigErrors> {
    let mut sources = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        match std::fs::read(p) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sources.push(SourceFile { name, text }),
                Err(_) => errors.push(ConfigErrors::single(
                    Some(&name),
                    None,
                    "the file is not valid UTF-8",
                )),
            },
            Err(e) => errors.push(ConfigErrors::single(
                Some(&name),
                None,
                format!("cannot read the config file: {e}"),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors.into_iter().flat_map(|e| e.0).collect()));
    }
    load_sources(&sources, &|k| std::env::var(k).ok())
}

/// Parses, expands and merges in-memory documents; `env` resolves environment variables.
pub fn load_sources(
    sources: &[SourceFile],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut root = Value::Null;
    let mut locations = HashMap::new();
    for src in sources {
        let mut doc: Value = match serde_yaml::from_str(&src.text) {
            Ok(v) => v,
            Err(e) => {
                let line = e.location().map(|l| l.line());
                errors.push(ConfigError {
                    file: Some(src.name.clone()),
                    line,
                    path: String::new(),
                    message: format!("invalid YAML: {}", clean_serde_message(&e.to_string())),
                });
                continue;
            }
        };
        let index = LineIndex::build(&src.text);
        let mut ex = Expander {
            env,
            errors: Vec::new(),
            warnings: &mut warnings,
        };
        ex.walk(&mut doc, "");
        for (path, msg) in ex.errors {
            errors.push(ConfigError {
                file: Some(src.name.clone()),
                line: index.locate(&path),
                path,
                message: msg,
            });
        }
        for (path, line) in index.lines {
            locations.insert(path, (src.name.clone(), line));
        }
        merge(&mut root, doc);
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Loaded {
        root,
        locations,
        warnings,
        files: sources.iter().map(|s| s.name.clone()).collect(),
    })
}

/// Deep merge as the Collector does: mappings merge key by key, anything else is replaced.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        // A later file that names a key with nothing under it (`batch:`) doesn't erase the
        // earlier file's settings for it.
        (Value::Mapping(_), Value::Null) => {}
        (slot, v) => *slot = v,
    }
}

fn key_string(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        _ => "?".into(),
    }
}

struct Expander<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<(String, String)>,
    warnings: &'a mut Vec<String>,
}

impl Expander<'_> {
    fn walk(&mut self, v: &mut Value, path: &str) {
        match v {
            Value::String(s) if s.contains('$') => {
                let whole_ref = is_single_reference(s);
                match expand(s, self.env) {
                    Ok((out, unset)) => {
                        for var in unset {
                            self.warnings.push(format!(
                                "{path}: environment variable {var:?} is not set; using an empty value"
                            ));
                        }
                        // `port: ${env:PORT}` takes the type the value spells (4317 is a
                        // number), as the Collector does; text around a reference keeps it a
                        // string.
                        *v = if whole_ref {
                            match serde_yaml::from_str::<Value>(&out) {
                                Ok(parsed @ (Value::Number(_) | Value::Bool(_))) => parsed,
                                _ => Value::String(out),
                            }
                        } else {
                            Value::String(out)
                        };
                    }
                    Err(msg) => self.errors.push((path.to_owned(), msg)),
                }
            }
            Value::Mapping(m) => {
                for (k, child) in m.iter_mut() {
                    let p = join_path(path, &key_string(k));
                    self.walk(child, &p);
                }
            }
            Value::Sequence(seq) => {
                for (i, child) in seq.iter_mut().enumerate() {
                    self.walk(child, &format!("{path}[{i}]"));
                }
            }
            Value::Tagged(t) => self.walk(&mut t.value, path),
            _ => {}
        }
    }
}

fn is_single_reference(s: &str) -> bool {
    s.starts_with("${") && s.ends_with('}') && s[2..].find('}') == Some(s.len() - 3)
}

/// Expands `${env:VAR}`, `${VAR}`, `${env:VAR:-default}` and `$$` (a literal `$`).
/// Returns the text and the names of variables that were unset (expanded to empty).
pub fn expand(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), String> {
    let mut out = String::with_capacity(s.len());
    let mut unset = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix('{') else {
            // A lone `$` (or `$VAR`, which the Collector no longer expands) stays as written.
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_and_rest.find('}') else {
            return Err(format!("unterminated reference in {s:?}: missing '}}'"));
        };
        let body = &body_and_rest[..end];
        rest = &body_and_rest[end + 1..];
        let (scheme, spec) = match body.split_once(':') {
            Some((scheme, spec)) if !scheme.contains('-') => (Some(scheme), spec),
            _ => (None, body),
        };
        match scheme {
            None | Some("env") => {}
            Some(other) => {
                return Err(format!(
                    "unsupported reference scheme {other:?} in \"${{{body}}}\"; weir supports ${{env:VAR}} and ${{env:VAR:-default}}"
                ))
            }
        }
        let (name, default) = match spec.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (spec, None),
        };
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!(
                "invalid environment variable name {name:?} in \"${{{body}}}\"; names are letters, digits and '_', not starting with a digit"
            ));
        }
        match env(name) {
            Some(v) if !(v.is_empty() && default.is_some()) => out.push_str(&v),
            _ => match default {
                Some(d) => out.push_str(d),
                None => unset.push(name.to_owned()),
            },
        }
    }
    out.push_str(rest);
    Ok((out, unset))
}

/// YAML path -> line, for block-style YAML.
#[derive(Debug, Default)]
pub struct LineIndex {
    pub lines: HashMap<String, usize>,
}

struct Frame {
    indent: usize,
    path: String,
    is_item: bool,
    next_index: usize,
}

impl LineIndex {
    pub fn build(text: &str) -> LineIndex {
        let mut lines = HashMap::new();
        let mut stack: Vec<Frame> = vec![Frame {
            indent: 0,
            path: String::new(),
            is_item: false,
            next_index: 0,
        }];
        let mut block_scalar_indent: Option<usize> = None;
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let indent = raw.len() - raw.trim_start_matches(' ').len();
            let content = strip_comment(raw[indent..].trim_end());
            if let Some(bi) = block_scalar_indent {
                if content.is_empty() || indent > bi {
                    continue;
                }
                block_scalar_indent = None;
            }
            if content.is_empty() || content == "---" || content == "..." {
                continue;
            }
            let mut col = indent;
            let mut rest = content;
            let mut first = true;
            // Dashes: `- `, possibly nested (`- - x`), possibly followed by `key: value`.
            while rest == "-" || rest.starts_with("- ") {
                pop_for_dash(&mut stack, col, first);
                first = false;
                let Some(parent) = stack.last_mut() else {
                    break;
                };
                let idx = parent.next_index;
                parent.next_index += 1;
                let path = format!("{}[{idx}]", parent.path);
                lines.entry(path.clone()).or_insert(line_no);
                stack.push(Frame {
                    indent: col,
                    path,
                    is_item: true,
                    next_index: 0,
                });
                let after = &rest[1..];
                let trimmed = after.trim_start_matches(' ');
                col += 1 + (after.len() - trimmed.len());
                rest = trimmed;
            }
            if rest.is_empty() {
                continue;
            }
            let Some((key, value)) = split_key(rest) else {
                continue;
            };
            while stack.len() > 1 && stack.last().is_some_and(|f| f.indent >= col) {
                stack.pop();
            }
            let Some(parent) = stack.last() else { continue };
            let path = join_path(&parent.path, &key);
            lines.insert(path.clone(), line_no);
            let v = value.trim();
            if v.starts_with('|') || v.starts_with('>') {
                block_scalar_indent = Some(col);
            }
            stack.push(Frame {
                indent: col,
                path,
                is_item: false,
                next_index: 0,
            });
        }
        LineIndex { lines }
    }

    fn locate(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            p = parent_path(p)?;
        }
    }
}

/// Before a `- ` at column `col`: close deeper frames and earlier items of the same list;
/// a key at the same column stays (the compact `key:\n- item` form).
fn pop_for_dash(stack: &mut Vec<Frame>, col: usize, first_on_line: bool) {
    if !first_on_line {
        return;
    }
    while stack.len() > 1 {
        let Some(top) = stack.last() else { break };
        if top.indent > col || (top.indent == col && top.is_item) {
            stack.pop();
        } else {
            break;
        }
    }
}

/// Drops a trailing ` # comment` that is outside quotes.
fn strip_comment(s: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_space => return s[..i].trim_end(),
            None => {}
        }
        prev_space = c == ' ' || c == '\t';
    }
    s
}

/// `key: value` / `key:` / `"quoted key": value` -> (key, value). Anything else -> None.
fn split_key(s: &str) -> Option<(String, &str)> {
    if let Some(q) = s.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = s[1..].find(q)? + 1;
        let key = s[1..end].to_owned();
        let after = s[end + 1..].trim_start();
        let value = after.strip_prefix(':')?;
        return Some((key, value));
    }
    if s.starts_with(['{', '[', '?', '&', '*', '!', '|', '>']) {
        return None;
    }
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t') {
            return Some((s[..i].trim_end().to_owned(), &s[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str, text: &str) -> SourceFile {
        SourceFile {
            name: name.into(),
            text: text.into(),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn line_index_places_block_yaml() {
        let text = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317 # comment
processors:
  tail_sampling:
    policies:
      - name: a
        type: latency
        latency: {threshold_ms: 5}
      -   name: b
          type: status_code
    list:
    - x
    - y
    script: |
      not: a key
      - nor an item
    after: 1
";
        let idx = LineIndex::build(text);
        assert_eq!(idx.lines["receivers.otlp.protocols.grpc.endpoint"], 5);
        assert_eq!(idx.lines["processors.tail_sampling.policies[0]"], 9);
        assert_eq!(idx.lines["processors.tail_sampling.policies[0].type"], 10);
        assert_eq!(idx.lines["processors.tail_sampling.policies[1].name"], 12);
        assert_eq!(idx.lines["processors.tail_sampling.policies[1].type"], 13);
        assert_eq!(idx.lines["processors.tail_sampling.list[1]"], 16);
        assert_eq!(idx.lines["processors.tail_sampling.after"], 20);
        assert!(!idx
            .lines
            .contains_key("processors.tail_sampling.script.not"));
        // Inside a flow mapping: the nearest placed ancestor.
        assert_eq!(
            idx.locate("processors.tail_sampling.policies[0].latency.threshold_ms"),
            Some(11)
        );
    }

    #[test]
    fn env_expansion_forms() {
        let env = |k: &str| match k {
            "PORT" => Some("4317".to_owned()),
            "EMPTY" => Some(String::new()),
            "HOST" => Some("h".to_owned()),
            _ => None,
        };
        assert_eq!(expand("${env:HOST}:${PORT}", &env).unwrap().0, "h:4317");
        assert_eq!(expand("${env:NOPE:-dflt}", &env).unwrap().0, "dflt");
        assert_eq!(expand("${env:EMPTY:-dflt}", &env).unwrap().0, "dflt");
        assert_eq!(expand("a$$b", &env).unwrap().0, "a$b");
        assert_eq!(expand("$HOST", &env).unwrap().0, "$HOST");
        let (out, unset) = expand("x${env:NOPE}y", &env).unwrap();
        assert_eq!((out.as_str(), unset), ("xy", vec!["NOPE".to_owned()]));
        assert_eq!(
            expand("${file:/etc/passwd}", &env).unwrap_err(),
            "unsupported reference scheme \"file\" in \"${file:/etc/passwd}\"; weir supports ${env:VAR} and ${env:VAR:-default}"
        );
        assert!(expand("${env:BAD NAME}", &env).is_err());
        assert!(expand("${env:OPEN", &env).is_err());
    }

    #[test]
    fn whole_reference_takes_the_values_type() {
        let env = |k: &str| (k == "PORT").then(|| "4317".to_owned());
        let l = load_sources(
            &[src("a.yaml", "p: ${env:PORT}\nq: \"x${env:PORT}\"\n")],
            &env,
        )
        .unwrap();
        assert_eq!(l.root["p"], Value::Number(4317.into()));
        assert_eq!(l.root["q"], Value::String("x4317".into()));
    }

    #[test]
    fn files_deep_merge_later_wins_and_errors_point_at_the_later_file() {
        let a = src("a.yaml", "x:\n  y: 1\n  z: [1, 2]\n  w: keep\n");
        let b = src("b.yaml", "x:\n  y: 2\n  z: [3]\n");
        let l = load_sources(&[a, b], &no_env).unwrap();
        assert_eq!(l.root["x"]["y"], Value::Number(2.into()));
        assert_eq!(
            l.root["x"]["z"],
            serde_yaml::from_str::<Value>("[3]").unwrap()
        );
        assert_eq!(l.root["x"]["w"], Value::String("keep".into()));
        assert_eq!(l.error("x.y", "bad").to_string(), "b.yaml:2: x.y: bad");
        assert_eq!(l.error("x.w", "bad").to_string(), "a.yaml:4: x.w: bad");
    }

    #[test]
    fn duplicate_keys_and_bad_yaml_are_rejected_with_a_line() {
        let e = load_sources(&[src("d.yaml", "a: 1\nb: 2\na: 3\n")], &no_env).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(e.0[0].message.contains("duplicate entry"), "{}", e.0[0]);
        assert_eq!(e.0[0].file.as_deref(), Some("d.yaml"));
        assert!(e.0[0].line.is_some());
        let e = load_sources(&[src("b.yaml", "a:\n  - x\n b: [\n")], &no_env).unwrap_err();
        assert!(e.to_string().starts_with("b.yaml:"), "{e}");
    }

    #[test]
    fn decode_errors_name_the_sub_path_and_line() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            n: u32,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            items: Vec<Inner>,
        }
        let l = load_sources(
            &[src(
                "c.yaml",
                "comp:\n  items:\n    - n: 1\n    - n: lots\n",
            )],
            &no_env,
        )
        .unwrap();
        let e = l.decode::<Outer>("comp", &l.root["comp"]).unwrap_err();
        assert_eq!(e.path, "comp.items[1].n");
        assert_eq!(e.line, Some(4));
        assert!(
            e.message.starts_with("invalid type: string \"lots\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn unreadable_file_is_a_clear_error() {
        let e = load_files(&[PathBuf::from("/nonexistent/weir.yaml")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/weir.yaml: cannot read the config file:"),
            "{e}"
        );
    }
}
