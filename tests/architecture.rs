//! The house rules of src/, checked on the source text (no broker needed):
//! - layers: each component uses only the ones below it
//!   (`ffi -> client -> {publish, consume} -> wire`, and the shared base
//!   modules beside them), and no module imports form a cycle;
//! - only `ffi` (the C API) and `testing` (the tests' door) are public;
//! - every C export is in `ffi/` and its body runs inside `ffi_boundary!`;
//! - no file over 500 lines of non-test code, no function over 80 lines
//!   unless a `// Long:` comment right above it says why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

/// What each component may use. Base modules sit beside every layer.
const LAYERS: &[(&str, &[&str])] = &[
    ("ffi", &["client", "error", "log", "runtime", "registry"]),
    (
        "client",
        &[
            "publish", "consume", "wire", "error", "log", "runtime", "backoff", "spool", "sync",
        ],
    ),
    (
        "publish",
        &[
            "wire",
            "error",
            "log",
            "runtime",
            "backoff",
            "os_thread",
            "notifier",
            "spool",
            "sync",
        ],
    ),
    (
        "consume",
        &[
            "wire",
            "error",
            "log",
            "runtime",
            "os_thread",
            "notifier",
            "sync",
        ],
    ),
    ("wire", &["log", "sync"]),
    ("spool", &["error", "log", "sync"]),
    ("sync", &[]),
    ("error", &[]),
    ("log", &["os_thread"]),
    ("os_thread", &[]),
    ("notifier", &[]),
    ("runtime", &["error", "log"]),
    ("backoff", &[]),
    ("registry", &[]),
];

struct SourceFile {
    /// Module path, e.g. ["client", "queue"]; the crate root is [].
    module: Vec<String>,
    path: PathBuf,
    text: String,
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<SourceFile> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rs_files(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(&src).expect("under src/");
            let mut module: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            SourceFile { module, path, text }
        })
        .collect()
}

/// The code of a file without its test module: everything before the
/// top-level `#[cfg(test)]` whose item is a `mod` (by convention the last
/// item). A `#[cfg(test)]` helper elsewhere counts as code.
fn production_code(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let test_module = (0..lines.len()).find(|&i| {
        lines[i] == "#[cfg(test)]"
            && lines[i + 1..]
                .iter()
                .find(|l| !l.starts_with("#["))
                .is_some_and(|l| l.starts_with("mod "))
    });
    lines[..test_module.unwrap_or(lines.len())].to_vec()
}

fn strip_comment(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Module paths a file refers to (`crate::a::b`, `super::x`), resolved to
/// absolute module paths as far as they go.
fn references(file: &SourceFile) -> BTreeSet<Vec<String>> {
    let mut refs = BTreeSet::new();
    let code: String = production_code(&file.text)
        .iter()
        .map(|l| strip_comment(l))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // use crate::{a::X, b};
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for part in inner.split(',') {
                let name = ident(part.trim());
                if !name.is_empty() {
                    refs.insert(vec![name]);
                }
            }
        } else {
            let first = ident(rest);
            let after = &rest[first.len()..];
            let mut path = vec![first];
            if let Some(second) = after.strip_prefix("::") {
                let second = ident(second);
                if !second.is_empty() {
                    path.push(second);
                }
            }
            refs.insert(path);
        }
    }
    // `super::x` from a file's module: the parent module's child x.
    let mut parent = file.module.clone();
    parent.pop();
    for (i, _) in code.match_indices("super::") {
        if i > 0 && code[..i].ends_with("::") {
            continue; // super::super:: is not used here
        }
        let rest = &code[i + "super::".len()..];
        let names: Vec<String> = match rest.strip_prefix('{') {
            Some(group) => group[..group.find('}').unwrap_or(group.len())]
                .split(',')
                .map(|part| ident(part.trim()))
                .collect(),
            None => vec![ident(rest)],
        };
        for name in names.into_iter().filter(|n| !n.is_empty()) {
            let mut p = parent.clone();
            p.push(name);
            refs.insert(p);
        }
    }
    refs
}

fn component(module: &[String]) -> Option<&str> {
    module.first().map(String::as_str)
}

#[test]
fn layers_point_one_way() {
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut bad = Vec::new();
    for f in sources() {
        let Some(from) = component(&f.module) else {
            continue; // lib.rs declares the modules
        };
        if from == "testing" {
            continue; // the tests' door may look anywhere
        }
        let Some(ok) = allowed.get(from) else {
            bad.push(format!(
                "{}: component '{from}' is not in LAYERS",
                f.path.display()
            ));
            continue;
        };
        for r in references(&f) {
            let to = r[0].as_str();
            if to == from || !allowed.contains_key(to) && to != "testing" && to != "ffi" {
                continue; // within the component, or not a module (a macro, a type)
            }
            if !ok.contains(&to) {
                bad.push(format!(
                    "{}: {from} uses {}",
                    f.path.display(),
                    r.join("::")
                ));
            }
        }
    }
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

#[test]
fn no_module_imports_form_a_cycle() {
    let files = sources();
    let known: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    // Each reference is attributed to the longest known module it names.
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in &files {
        let from = f.module.clone();
        for r in references(f) {
            let mut target = r.clone();
            while !target.is_empty() && !known.contains(&target) {
                target.pop();
            }
            // A child using its parent's items is how Rust modules work
            // (the parent declares it); only sibling and cross edges count.
            if target.is_empty() || target == from || from.starts_with(&target) {
                continue;
            }
            edges.entry(from.clone()).or_default().insert(target);
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n) {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(n, &edges, &mut state, &mut stack) {
                let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
                panic!("import cycle: {}", names.join(" -> "));
            }
        }
    }
}

#[test]
fn only_the_c_api_and_the_tests_door_are_public() {
    for f in sources() {
        for line in production_code(&f.text) {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix("pub mod ") {
                let name = rest.trim_end_matches(';');
                assert!(
                    f.module.is_empty() && matches!(name, "ffi" | "testing"),
                    "{}: `pub mod {name}` (use pub(crate) or a private module)",
                    f.path.display()
                );
            }
        }
    }
}

#[test]
fn files_and_functions_stay_small() {
    let mut bad = Vec::new();
    for f in sources() {
        let code = production_code(&f.text);
        if code.len() > MAX_FILE_LINES {
            bad.push(format!(
                "{}: {} lines of non-test code (max {MAX_FILE_LINES})",
                f.path.display(),
                code.len()
            ));
        }
        for (name, start, len) in functions(&code) {
            let above = code[start.saturating_sub(4)..start].join("\n");
            if len > MAX_FN_LINES && !above.contains("// Long:") {
                bad.push(format!(
                    "{}:{}: fn {name} is {len} lines (max {MAX_FN_LINES}; or say why in a `// Long:` comment above it)",
                    f.path.display(),
                    start + 1
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// (name, first line index, length in lines) of every fn with a body.
fn functions(code: &[&str]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for (i, line) in code.iter().enumerate() {
        let t = strip_comment(line).trim_start();
        let Some(at) = t.find("fn ") else { continue };
        let before = &t[..at];
        let is_decl = before.split_whitespace().all(|w| {
            matches!(w, "pub" | "async" | "unsafe" | "const" | "extern" | "\"C\"")
                || w.starts_with("pub(")
        });
        if !is_decl {
            continue;
        }
        let name: String = t[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // Find the body's braces from here on; a `;` first means no body.
        let mut depth = 0i32;
        let mut opened = false;
        let mut end = None;
        'lines: for (j, l) in code.iter().enumerate().skip(i) {
            for c in strip_comment(l).chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => {
                        depth -= 1;
                        if opened && depth == 0 {
                            end = Some(j);
                            break 'lines;
                        }
                    }
                    ';' if !opened && depth == 0 => break 'lines,
                    _ => {}
                }
            }
        }
        if let Some(end) = end {
            out.push((name, i, end - i + 1));
        }
    }
    out
}

#[test]
fn every_c_export_runs_inside_the_boundary() {
    let mut exports = 0;
    let mut bad = Vec::new();
    for f in sources() {
        let code = production_code(&f.text);
        for (i, line) in code.iter().enumerate() {
            if line.trim() != "#[no_mangle]" {
                continue;
            }
            exports += 1;
            if f.module.first().map(String::as_str) != Some("ffi") {
                bad.push(format!(
                    "{}:{}: an export outside ffi/",
                    f.path.display(),
                    i + 1
                ));
                continue;
            }
            // The body's first statement, after the signature's `{`.
            let body_start = code[i..].iter().position(|l| l.trim_end().ends_with('{'));
            let first = body_start.and_then(|at| {
                code[i + at + 1..]
                    .iter()
                    .map(|l| l.trim())
                    .find(|l| !l.is_empty() && !l.starts_with("//"))
            });
            if !first.is_some_and(|l| l.starts_with("ffi_boundary!(")) {
                bad.push(format!(
                    "{}:{}: export does not start with ffi_boundary!",
                    f.path.display(),
                    i + 1
                ));
            }
        }
    }
    assert!(
        exports >= 15,
        "only {exports} exports found: the check is broken"
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
