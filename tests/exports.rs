//! The shared library's exports are the C API, exactly: `nm -D
//! --defined-only` of the built libresilient_amqp.so equals the committed
//! list abi/exports.txt (an export added or lost by accident fails here),
//! every one of them is a function the header declares and the other way
//! round, and the SONAME is libresilient_amqp.so.MAJOR.
//!
//! After adding or removing an export on purpose:
//! `RA_BLESS=1 cargo test --release --test exports` rewrites the list.

use std::path::PathBuf;
use std::process::Command;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const LIST: &str = "abi/exports.txt";

/// The libresilient_amqp.so of this build (the test binary is in
/// target/<profile>/deps/, next to it).
fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    [
        deps.to_path_buf(),
        deps.parent().expect("profile dir").into(),
    ]
    .into_iter()
    .map(|dir| dir.join("libresilient_amqp.so"))
    .find(|so| so.is_file())
    .expect("no libresilient_amqp.so next to the test binary")
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (binutils installed?)"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn exported() -> Vec<String> {
    let so = library();
    let mut names: Vec<String> = run("nm", &["-D", "--defined-only", so.to_str().unwrap()])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn committed() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(format!("{MANIFEST_DIR}/{LIST}")).expect(LIST);
    let comments: String = text
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut names: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    names.sort();
    (comments, names)
}

#[test]
fn the_exports_are_the_committed_list() {
    let built = exported();
    let (comments, listed) = committed();
    if std::env::var("RA_BLESS").is_ok_and(|v| v == "1") {
        let text = comments + &built.join("\n") + "\n";
        std::fs::write(format!("{MANIFEST_DIR}/{LIST}"), text).expect(LIST);
        return;
    }
    let added: Vec<_> = built.iter().filter(|n| !listed.contains(n)).collect();
    let removed: Vec<_> = listed.iter().filter(|n| !built.contains(n)).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "{} differs from {LIST}: exported but not listed {added:?}, listed but not \
         exported {removed:?} (on purpose? RA_BLESS=1 cargo test --release --test exports)",
        library().display()
    );
}

/// Removes `/* ... */` comments.
fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(a) = rest.find("/*") {
        out += &rest[..a];
        let b = rest[a..].find("*/").expect("unterminated comment") + a + 2;
        rest = &rest[b..];
    }
    out + rest
}

#[test]
fn every_export_is_a_function_of_the_header_and_back() {
    let header = std::fs::read_to_string(format!("{MANIFEST_DIR}/include/resilient_amqp.h"))
        .expect("header");
    // Each statement (comments and preprocessor lines out, split at `;`,
    // from its last brace on) that is not a typedef and has a `(`: the name
    // before the `(` is a declared function.
    let code: String = strip_comments(&header)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut declared: Vec<String> = code
        .split(';')
        .map(|stmt| stmt.rsplit(['{', '}']).next().unwrap_or("").trim())
        .filter(|stmt| !stmt.starts_with("typedef"))
        .filter_map(|stmt| {
            let name = stmt[..stmt.find('(')?].trim_end();
            let name = name.rsplit([' ', '*', '\n']).next()?;
            name.starts_with("amqp_").then(|| name.to_string())
        })
        .collect();
    declared.sort();
    declared.dedup();
    assert!(!declared.is_empty(), "no declarations found in the header");
    assert_eq!(exported(), declared, "exports vs the header's declarations");
}

#[test]
fn the_soname_is_the_major_version() {
    let dynamic = run("readelf", &["-d", library().to_str().unwrap()]);
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let want = format!("Library soname: [libresilient_amqp.so.{major}]");
    assert!(
        dynamic.contains(&want),
        "no `{want}` in readelf -d:\n{dynamic}"
    );
}
