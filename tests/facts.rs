//! The facts of the C API that are written down in more than one place agree:
//! the generated header (the Rust definitions in src/ffi, as C sees them),
//! the names the library gives at run time, README.md and
//! docs/API-EXTENSIONS.md.
//!
//! The README's stats tables are rendered from the header's struct fields and
//! their doc comments, its option tables from src/client/options.rs;
//! `RA_BLESS=1 cargo test --test facts -- --test-threads=1` rewrites them (one
//! thread: the other tests read README.md meanwhile).

use resilient_amqp::{amqp_connection_state_str, amqp_result_str};
use std::ffi::{c_char, c_int, CStr};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{MANIFEST_DIR}/{path}"))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn header() -> String {
    read("include/resilient_amqp.h")
}

/// The body of `typedef enum NAME { ... } NAME;` or `typedef struct ...`,
/// with its comments kept.
fn typedef_body(text: &str, kind: &str, name: &str) -> String {
    let open = format!("typedef {kind} {name} {{");
    let start = text.find(&open).unwrap_or_else(|| panic!("no `{open}`")) + open.len();
    let end = text[start..]
        .find(&format!("}} {name};"))
        .unwrap_or_else(|| panic!("no end of {name}"))
        + start;
    text[start..end].to_string()
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

/// The enumerators of a C enum, with their values.
fn enum_items(text: &str, name: &str) -> Vec<(String, i64)> {
    strip_comments(&typedef_body(text, "enum", name))
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (n, v) = item
                .split_once('=')
                .unwrap_or_else(|| panic!("{name}: `{item}` has no explicit value"));
            (n.trim().to_string(), v.trim().parse().expect(item))
        })
        .collect()
}

/// The fields of a C struct: name and doc comment (one line).
fn struct_fields(text: &str, name: &str) -> Vec<(String, String)> {
    let body = typedef_body(text, "struct", name);
    let mut fields = Vec::new();
    let mut rest = body.as_str();
    let mut doc = String::new();
    loop {
        let rest_trimmed = rest.trim_start();
        if rest_trimmed.is_empty() {
            break;
        }
        if let Some(after) = rest_trimmed.strip_prefix("/*") {
            let end = after.find("*/").expect("unterminated comment");
            doc = after[..end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            rest = &after[end + 2..];
            continue;
        }
        let end = rest_trimmed.find(';').expect("field without ;");
        let decl = &rest_trimmed[..end];
        let field = decl.split_whitespace().last().expect(decl);
        let field = field.trim_start_matches('*');
        fields.push((field.to_string(), std::mem::take(&mut doc)));
        rest = &rest_trimmed[end + 1..];
    }
    fields
}

fn name_of(f: extern "C" fn(c_int) -> *const c_char, value: i64) -> String {
    let p = f(value as c_int);
    assert!(!p.is_null());
    // SAFETY: both name functions return static NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string()
}

/// Every enumerator in the header is named by the library's name function,
/// the values run 0..n, and the next value is unknown to it.
fn check_names(
    enum_name: &str,
    f: extern "C" fn(c_int) -> *const c_char,
    unknown: &str,
) -> Vec<(String, i64)> {
    let items = enum_items(&header(), enum_name);
    assert!(!items.is_empty(), "{enum_name}: no enumerators found");
    for (i, (name, value)) in items.iter().enumerate() {
        assert_eq!(
            *value, i as i64,
            "{enum_name}: {name} is not the {i}th value"
        );
        assert_eq!(&name_of(f, *value), name, "{enum_name} value {value}");
    }
    assert_eq!(name_of(f, items.len() as i64), unknown);
    assert_eq!(name_of(f, -1), unknown);
    items
}

#[test]
fn result_codes_in_the_header_are_the_names_amqp_result_str_gives() {
    check_names("amqp_result", amqp_result_str, "AMQP_ERR_UNKNOWN");
}

#[test]
fn connection_states_in_the_header_are_the_names_amqp_connection_state_str_gives() {
    check_names(
        "amqp_connection_state",
        amqp_connection_state_str,
        "AMQP_STATE_UNKNOWN",
    );
}

#[test]
fn the_readme_lists_every_result_code_in_order() {
    let readme = read("README.md");
    let start = readme
        .find("Result codes:")
        .expect("README: no 'Result codes:' paragraph");
    let end = readme[start..].find("\n\n").unwrap() + start;
    let listed: Vec<&str> = readme[start..end]
        .split('`')
        .filter(|w| w.starts_with("AMQP_") && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    let header: Vec<String> = enum_items(&header(), "amqp_result")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(listed, header, "README.md's 'Result codes:' paragraph");
}

#[test]
fn api_extensions_doc_has_the_headers_states_and_stats() {
    let doc = read("docs/API-EXTENSIONS.md");
    let h = header();
    assert_eq!(
        enum_items(&doc, "amqp_connection_state"),
        enum_items(&h, "amqp_connection_state"),
        "docs/API-EXTENSIONS.md amqp_connection_state"
    );
    for s in ["amqp_connection_stats", "amqp_queue_stats", "amqp_delivery"] {
        let names = |text: &str| -> Vec<String> {
            struct_fields(text, s).into_iter().map(|(n, _)| n).collect()
        };
        assert_eq!(names(&doc), names(&h), "docs/API-EXTENSIONS.md {s}");
    }
}

/// The README's table for a stats struct: each field and its header doc.
fn stats_table(struct_name: &str) -> String {
    let mut out = String::from("| field | meaning |\n|---|---|\n");
    for (field, doc) in struct_fields(&header(), struct_name) {
        assert!(!doc.is_empty(), "{struct_name}.{field} has no doc comment");
        out += &format!("| `{field}` | {doc} |\n");
    }
    out
}

/// README.md between `<!-- TAG -->` and `<!-- /TAG -->` is `rendered`
/// (generated from `source`); with RA_BLESS set, it is rewritten instead.
fn readme_section_is(tag: &str, rendered: &str, source: &str) {
    let path = format!("{MANIFEST_DIR}/README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let open = format!("<!-- {tag} -->\n");
    let close = format!("<!-- /{tag} -->");
    let a = readme
        .find(&open)
        .unwrap_or_else(|| panic!("README: no {open}"))
        + open.len();
    let b = readme[a..]
        .find(&close)
        .unwrap_or_else(|| panic!("README: no {close}"))
        + a;
    if std::env::var_os("RA_BLESS").is_some() {
        let blessed = format!("{}{rendered}{}", &readme[..a], &readme[b..]);
        std::fs::write(&path, blessed).unwrap();
        return;
    }
    assert_eq!(
        &readme[a..b],
        rendered,
        "README.md's {tag} differs from {source}; put this between its markers:\n{rendered}"
    );
}

#[test]
fn readme_stats_tables_are_the_headers_structs() {
    for (kind, struct_name) in [
        ("connection", "amqp_connection_stats"),
        ("queue", "amqp_queue_stats"),
    ] {
        let source = format!("{struct_name} in the header");
        readme_section_is(&format!("stats:{kind}"), &stats_table(struct_name), &source);
    }
}

#[test]
fn readme_option_tables_are_the_option_tables() {
    for (kind, rendered) in resilient_amqp::testing::readme_option_tables() {
        let source = "the option tables in src/client/options.rs";
        readme_section_is(&format!("options:{kind}"), &rendered, source);
    }
}

/// The struct layouts the tests above read are the ones Rust has: a
/// `size_t size` first (contract v2), then every counter a u64, in
/// declaration order (cbindgen keeps the order).
#[test]
fn the_rust_stats_structs_are_the_headers() {
    use resilient_amqp::{amqp_connection_stats, amqp_queue_stats};
    let queue = struct_fields(&header(), "amqp_queue_stats");
    assert_eq!(std::mem::size_of::<amqp_queue_stats>(), 8 * queue.len());
    assert_eq!(queue[0].0, "size");
    let conn = struct_fields(&header(), "amqp_connection_stats");
    // `state` is a C enum (an int, padded to 8 before the u64 counters).
    assert_eq!(std::mem::size_of::<amqp_connection_stats>(), 8 * conn.len());
    assert_eq!((conn[0].0.as_str(), conn[1].0.as_str()), ("size", "state"));
}

/// The header's AMQP_ABI_VERSION macro (written in cbindgen.toml) is the
/// library's, and amqp_abi_version() returns it.
#[test]
fn the_abi_version_is_declared_once() {
    let h = header();
    let line = h
        .lines()
        .find(|l| l.starts_with("#define AMQP_ABI_VERSION "))
        .expect("the header defines AMQP_ABI_VERSION");
    let value: u32 = line["#define AMQP_ABI_VERSION ".len()..]
        .trim()
        .parse()
        .unwrap();
    assert_eq!(value, resilient_amqp::AMQP_ABI_VERSION);
    assert_eq!(resilient_amqp::amqp_abi_version(), value);
}

/// The version is written once, in Cargo.toml: the header's AMQP_LIBRARY_VERSION_*
/// macros (written by build.rs) and amqp_library_version() are the same.
#[test]
fn the_version_is_cargo_tomls() {
    let manifest = read("Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("Cargo.toml: no `version = \"...\"` line");
    let h = header();
    let define = |name: &str| -> String {
        let prefix = format!("#define {name} ");
        h.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("the header does not define {name}"))
            .trim()
            .to_string()
    };
    assert_eq!(
        define("AMQP_LIBRARY_VERSION_STRING"),
        format!("\"{version}\"")
    );
    let parts: Vec<&str> = version.split('.').collect();
    assert_eq!(parts.len(), 3, "Cargo.toml's version is MAJOR.MINOR.PATCH");
    assert_eq!(define("AMQP_LIBRARY_VERSION_MAJOR"), parts[0]);
    assert_eq!(define("AMQP_LIBRARY_VERSION_MINOR"), parts[1]);
    assert_eq!(define("AMQP_LIBRARY_VERSION_PATCH"), parts[2]);
    // SAFETY: amqp_library_version returns a static NUL-terminated string.
    let loaded = unsafe { CStr::from_ptr(resilient_amqp::amqp_library_version()) };
    assert_eq!(loaded.to_str().unwrap(), version);
}
