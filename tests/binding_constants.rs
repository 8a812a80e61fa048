//! The bindings that cannot include the C header (Python's ctypes, Ruby's ffi, Node's koffi)
//! copy its constants by hand. This test reads `include/resilient_amqp.h` and each binding's
//! copies and fails on a value that differs, an error code a binding lacks (a new code would
//! reach its users as a bare number), or a status list out of the header's order. (Go and C++
//! compile against the header itself.)

use std::collections::BTreeMap;
use std::path::Path;

fn read(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn number(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches([';', ',']).replace('_', "");
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Every `AMQP_NAME = value` enum entry and `#define AMQP_NAME value` of the header.
fn header_constants() -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for line in read("include/resilient_amqp.h").lines() {
        let t = line.trim();
        let (name, value) = if let Some(rest) = t.strip_prefix("#define ") {
            let mut it = rest.split_whitespace();
            (it.next().unwrap_or(""), it.next().unwrap_or(""))
        } else if let Some((n, v)) = t.split_once(" = ") {
            (n.trim(), v)
        } else {
            continue;
        };
        if name.starts_with("AMQP_") {
            if let Some(v) = number(value) {
                out.insert(name.to_string(), v);
            }
        }
    }
    out
}

/// The header's names with `prefix`, in the order of their values.
fn enum_names(header: &BTreeMap<String, i64>, prefix: &str) -> Vec<String> {
    let mut v: Vec<(i64, String)> = header
        .iter()
        .filter_map(|(n, &x)| n.strip_prefix(prefix).map(|s| (x, s.to_lowercase())))
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// `NAME = number` lines (`const NAME = number;` in JavaScript) of a binding's source.
fn binding_constants(src: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for line in src.lines() {
        let t = line.trim();
        let t = t.strip_prefix("const ").unwrap_or(t);
        let Some((name, value)) = t.split_once(" = ") else {
            continue;
        };
        let name = name.trim();
        let is_const = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if let (true, Some(v)) = (is_const, number(value)) {
            out.push((name.to_string(), v));
        }
    }
    out
}

/// The words of the list assigned to `name` (`NAME = [..]` or Ruby's `NAME = %i[..]`).
fn word_list(src: &str, name: &str) -> Option<Vec<String>> {
    let start = src.find(&format!("{name} = "))?;
    let rest = &src[start..];
    let open = rest.find('[')?;
    let close = rest[open..].find(']')? + open;
    Some(
        rest[open + 1..close]
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(|w| w.trim_matches(|c| c == '\'' || c == '"'))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// Checks `file`'s constants against the header: each name that is a header name after
/// `AMQP_` (and the file's own prefixes dropped) must have the header's value. Returns the
/// header names it checked.
fn check_file(header: &BTreeMap<String, i64>, file: &str, drop_prefixes: &[&str]) -> Vec<String> {
    let src = read(file);
    let mut checked = Vec::new();
    let mut wrong = Vec::new();
    for (name, value) in binding_constants(&src) {
        let bare = drop_prefixes
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .unwrap_or(&name);
        let full = format!("AMQP_{bare}");
        let Some(&expected) = header.get(&full) else {
            continue;
        };
        if value != expected {
            wrong.push(format!(
                "{name} = {value}, the header's {full} = {expected}"
            ));
        }
        checked.push(full);
    }
    assert!(wrong.is_empty(), "{file}: {wrong:#?}");
    checked
}

/// The header's error codes that `checked` (a binding's constants) lacks.
fn lacking_error_codes(header: &BTreeMap<String, i64>, checked: &[String]) -> Vec<String> {
    header
        .keys()
        .filter(|n| n.starts_with("AMQP_ERR_") && !checked.contains(n))
        .cloned()
        .collect()
}

#[test]
fn python_constants_match_the_header() {
    let header = header_constants();
    let checked = check_file(&header, "bindings/python/resilient_amqp/_ffi.py", &[]);
    let missing = lacking_error_codes(&header, &checked);
    assert!(missing.is_empty(), "error codes Python lacks: {missing:?}");
    for p in ["AMQP_ACK", "AMQP_DEFER", "AMQP_PROP_APP_ID"] {
        assert!(checked.iter().any(|c| c == p), "Python has no {p}");
    }
}

#[test]
fn ruby_constants_and_lists_match_the_header() {
    let header = header_constants();
    let file = "bindings/ruby/lib/resilient_amqp/native.rb";
    let checked = check_file(&header, file, &[]);
    let missing = lacking_error_codes(&header, &checked);
    assert!(missing.is_empty(), "error codes Ruby lacks: {missing:?}");
    assert!(checked.iter().any(|c| c == "AMQP_VALUE_DECIMAL"));
    let src = read(file);
    let status = word_list(&src, "REPORT_STATUS").expect("REPORT_STATUS");
    let status: Vec<String> = status
        .iter()
        .map(|w| w.trim_start_matches("%i").to_string())
        .collect();
    assert_eq!(status, enum_names(&header, "AMQP_REPORT_"), "{file}");
    // PROP = { content_type: 0x8000, ... }
    let mut props = 0;
    for (key, value) in src
        .split([',', '{', '\n'])
        .filter_map(|p| p.trim().split_once(": "))
    {
        let full = format!("AMQP_PROP_{}", key.trim().to_uppercase());
        if let (Some(&expected), Some(v)) = (header.get(&full), number(value)) {
            assert_eq!(v, expected, "{file}: {key}");
            props += 1;
        }
    }
    assert_eq!(
        props,
        enum_names(&header, "AMQP_PROP_").len(),
        "every property bit"
    );
}

#[test]
fn node_constants_and_lists_match_the_header() {
    let header = header_constants();
    let file = "bindings/node/index.js";
    let checked = check_file(&header, file, &["D_"]);
    for p in ["AMQP_OK", "AMQP_ERR_CLOSED", "AMQP_ACK", "AMQP_REQUEUE"] {
        assert!(
            checked.iter().any(|c| c == p),
            "Node has no {p}: {checked:?}"
        );
    }
    let src = read(file);
    assert_eq!(
        word_list(&src, "REPORT_STATUS").expect("REPORT_STATUS"),
        enum_names(&header, "AMQP_REPORT_")
    );
    assert_eq!(
        word_list(&src, "STATE_NAMES").expect("STATE_NAMES"),
        enum_names(&header, "AMQP_STATE_")
    );
}

/// The `uint64_t` fields of the header's `typedef struct NAME { ... } NAME;`, in order.
fn struct_counters(name: &str) -> Vec<String> {
    let h = read("include/resilient_amqp.h");
    let start = h
        .find(&format!("typedef struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} in the header"));
    let end = start + h[start..].find(&format!("}} {name};")).expect("its end");
    h[start..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("uint64_t "))
        .map(|f| f.trim_end_matches(';').to_string())
        .collect()
}

/// The words of the string (or Ruby %i list) that follows `marker` up to `end`.
fn words_after(src: &str, marker: &str, end: &str) -> Vec<String> {
    let start = src.find(marker).unwrap_or_else(|| panic!("{marker}")) + marker.len();
    let stop = start + src[start..].find(end).expect("the list's end");
    src[start..stop]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty() && !["split"].contains(w))
        .map(str::to_string)
        .collect()
}

/// The bindings' `amqp_queue_stats` layouts list the header's counters, all, in order (a
/// missing one at the end only hides a counter; one out of order reads the wrong value).
#[test]
fn stats_layouts_match_the_header() {
    let queue = struct_counters("amqp_queue_stats");
    assert!(queue.len() >= 25 && queue[0] == "buffered", "{queue:?}");
    let py = read("bindings/python/resilient_amqp/_ffi.py");
    assert_eq!(
        words_after(&py, "_QUEUE_STAT_NAMES = (", ").split()"),
        queue,
        "Python"
    );
    let rb = read("bindings/ruby/lib/resilient_amqp/native.rb");
    assert_eq!(
        words_after(&rb, "QUEUE_STATS_FIELDS = %i[", "]"),
        queue,
        "Ruby"
    );
    let js = read("bindings/node/lib/native.js");
    assert_eq!(
        words_after(&js, "const QUEUE_STATS = (", ").split"),
        queue,
        "Node"
    );
    let conn = struct_counters("amqp_connection_stats");
    assert_eq!(
        words_after(&py, "(n, U64) for n in (", ").split()"),
        conn,
        "Python's connection stats"
    );
}
