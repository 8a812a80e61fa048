//! Property tests (proptest): URI and option parsing, the handle registry, and the C entry
//! points that take strings, fed with arbitrary input. No broker is needed: the C API cases use
//! a connection to a dead port (127.0.0.1:1), on which `amqp_queue_open` works offline.
//!
//! What is checked:
//! - parsing never panics; every rejection is `ErrorKind::InvalidArgument` with a message;
//! - a password in a URI never shows up in an error message or in `BrokerAddress::display`,
//!   whether the URI is valid or broken anywhere else;
//! - generated valid URIs and option strings parse to exactly the values they spell;
//! - bad option values are refused and the message names the key;
//! - registry handles are nonzero, below 2^53, unique, never accepted by the other kind and stale
//!   for ever after `remove`, even after their slot is reused (model-based, against a HashMap);
//! - `amqp_connect` / `amqp_queue_open` with arbitrary bytes: only AMQP_OK or
//!   AMQP_ERR_INVALID_ARGUMENT, exactly when the parsers say so, the out-parameter untouched on
//!   error, `amqp_last_error` set on error and empty on success.
#![allow(unused_unsafe)]

mod common;

use common::{cs, last_error, DEAD_URI};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use resilient_amqp::testing::Registry;
use resilient_amqp::testing::{
    parse_addresses, parse_connection_options, parse_queue_options, parse_uri, ConnectionOptions,
    QueueType, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEARTBEAT_S, MAX_NAME_BYTES,
};
use resilient_amqp::*;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, CStr};
use std::sync::Arc;
use std::time::Duration;

const CASES: u32 = 1000;

fn config(cases: u32) -> Config {
    Config {
        cases,
        // keep failures reproducible in CI output but do not write regression files into tests/
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Percent-encodes everything but RFC 3986 unreserved characters (what a careful user does with
/// a user name or password in a URI).
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A password nobody could mistake for anything else in a URI: starts with "ZQ", then
/// printable ASCII (any of it, specials included: it is percent-encoded in the URI).
fn password() -> impl Strategy<Value = String> {
    "ZQ[ -~]{6,24}"
}

/// A password that needs no encoding at all (it appears in the URI verbatim).
fn plain_password() -> impl Strategy<Value = String> {
    "ZQ[A-Za-z0-9._~-]{6,24}"
}

fn user() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,11}",
        // specials in the user name, percent-encoded in the URI
        "[a-z][a-z0-9@:/ %#?&]{0,11}",
    ]
}

fn host() -> impl Strategy<Value = (String, String)> {
    // (as written in the URI, as the library must keep it for the connect)
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9]{0,6}){0,2}".prop_map(|h| (h.clone(), h)),
        (0u8..=255, 0u8..=255, 0u8..=255, 1u8..=254).prop_map(|(a, b, c, d)| {
            let h = format!("{a}.{b}.{c}.{d}");
            (h.clone(), h)
        }),
        prop_oneof![Just("::1"), Just("fe80::1"), Just("2001:db8::5")]
            .prop_map(|h| (format!("[{h}]"), h.to_string())),
    ]
}

fn vhost() -> impl Strategy<Value = (String, String)> {
    // (as written in the URI path, decoded vhost)
    prop_oneof![
        Just(("%2f".to_string(), "/".to_string())),
        Just(("%2F".to_string(), "/".to_string())),
        "[a-z0-9_-]{1,12}".prop_map(|v| (v.clone(), v)),
        "[a-z/ é]{1,12}".prop_map(|v| (pct(&v), v)),
    ]
}

/// The prefix of `bytes` up to the first NUL, as C sees it once a NUL is appended.
fn c_view(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|b| *b == 0) {
        Some(i) => &bytes[..i],
        None => bytes,
    }
}

fn with_nul(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.push(0);
    v
}

fn cptr(v: &Option<Vec<u8>>) -> *const c_char {
    v.as_ref()
        .map_or(std::ptr::null(), |v| v.as_ptr() as *const c_char)
}

fn check_invalid(e: &Error, input: &str) -> proptest::test_runner::TestCaseResult {
    prop_assert_eq!(e.kind, ErrorKind::InvalidArgument, "input {:?}", input);
    prop_assert!(
        !e.message.trim().is_empty(),
        "empty message for {:?}",
        input
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// URI parsing
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(CASES))]

    /// Any string at all: no panic, and a refusal is InvalidArgument with a message.
    #[test]
    fn uri_arbitrary_strings_never_panic(s in prop_oneof![
        any::<String>(),
        "[ -~]{0,60}",
        any::<String>().prop_map(|s| format!("amqp://{s}")),
        "[a-z0-9:@/%?=&.\\[\\]-]{0,40}".prop_map(|s| format!("amqp://{s}")),
    ]) {
        match parse_uri(&s) {
            Ok(a) => {
                prop_assert!(s.to_ascii_lowercase().starts_with("amqp:"), "accepted {:?}", s);
                prop_assert!(a.display.starts_with("amqp://"));
                prop_assert!(!a.uri.authority.host.is_empty());
                prop_assert!(a.uri.query.heartbeat.is_some());
            }
            Err(e) => check_invalid(&e, &s)?,
        }
    }

    /// Valid URIs round-trip to the values they spell, and the password (decoded or encoded)
    /// is not in `display`.
    #[test]
    fn uri_valid_round_trips_and_display_hides_password(
        user in user(),
        pw in password(),
        (host_in_uri, host_kept) in host(),
        port in 1u16..=65535,
        (vhost_in_uri, vhost_decoded) in vhost(),
        heartbeat in proptest::option::of(0u16..=600),
        timeout_ms in proptest::option::of(0u64..=120_000),
    ) {
        let mut query = Vec::new();
        if let Some(h) = heartbeat { query.push(format!("heartbeat={h}")); }
        if let Some(t) = timeout_ms { query.push(format!("connection_timeout={t}")); }
        let q = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
        let s = format!(
            "amqp://{}:{}@{host_in_uri}:{port}/{vhost_in_uri}{q}", pct(&user), pct(&pw)
        );
        let a = parse_uri(&s).map_err(|e| TestCaseError::fail(format!("{s}: {}", e.message)))?;
        prop_assert_eq!(&a.uri.authority.userinfo.username, &user);
        prop_assert_eq!(&a.uri.authority.userinfo.password, &pw, "password mangled: {}", s);
        prop_assert_eq!(&a.uri.authority.host, &host_kept);
        prop_assert_eq!(a.uri.authority.port, port);
        prop_assert_eq!(&a.uri.vhost, &vhost_decoded);
        prop_assert_eq!(a.uri.query.heartbeat, Some(heartbeat.unwrap_or(DEFAULT_HEARTBEAT_S)));
        let want_timeout = match timeout_ms {
            Some(t) if t > 0 => Duration::from_millis(t),
            _ => DEFAULT_CONNECT_TIMEOUT,
        };
        prop_assert_eq!(a.connect_timeout, want_timeout);
        let shown_vhost = if vhost_decoded == "/" { "%2f".to_string() } else { vhost_decoded };
        prop_assert_eq!(
            &a.display,
            &format!("amqp://{user}@{host_in_uri}:{port}/{shown_vhost}")
        );
        prop_assert!(!a.display.contains(&pw), "password in display {:?}", a.display);
        prop_assert!(!a.display.contains(&pct(&pw)), "password in display {:?}", a.display);
        prop_assert!(!a.display.contains("ZQ"), "password prefix in display {:?}", a.display);
    }

    /// URIs with a password that are broken somewhere else (scheme, host, port, query, path):
    /// whatever the outcome, neither the password nor its encoded form is ever shown.
    #[test]
    fn uri_password_never_in_errors_or_display(
        scheme in prop_oneof![
            Just("amqp"), Just("amqps"), Just("http"), Just("AMQP"), Just("amqp+tcp"),
            Just(""), Just("amqp:"),
        ],
        sep in prop_oneof![Just("://"), Just(":"), Just(":/"), Just(":///")],
        user in "[a-z]{0,8}",
        pw in prop_oneof![password(), plain_password()],
        host in prop_oneof![
            Just("127.0.0.1".to_string()), Just("".to_string()), Just("[::1".to_string()),
            Just("bad host".to_string()), Just("h%zz".to_string()), Just("[zz]".to_string()),
            "[a-z]{1,8}",
        ],
        port in prop_oneof![
            Just("".to_string()), Just(":".to_string()), Just(":5672".to_string()),
            Just(":99999".to_string()), Just(":-1".to_string()), Just(":abc".to_string()),
            (0u32..200_000).prop_map(|p| format!(":{p}")),
        ],
        path in prop_oneof![
            Just("".to_string()), Just("/".to_string()), Just("/%2f".to_string()),
            Just("/%zz".to_string()), Just("/%ff".to_string()), "/[a-z]{1,6}",
        ],
        query in prop_oneof![
            Just("".to_string()), Just("?heartbeat=5".to_string()),
            Just("?heartbeat=x".to_string()), Just("?heartbeat=70000".to_string()),
            Just("?connection_timeout=-1".to_string()), Just("?frame_max=abc".to_string()),
            Just("?auth_mechanism=nope".to_string()), Just("?channel_max=99999999".to_string()),
            "\\?[a-z_]{1,10}=[a-z0-9]{0,4}",
            Just("#frag".to_string()),
        ],
        encode in any::<bool>(),
    ) {
        let pw_in_uri = if encode { pct(&pw) } else { pw.clone() };
        let s = format!("{scheme}{sep}{user}:{pw_in_uri}@{host}{port}{path}{query}");
        let shown = match parse_uri(&s) {
            Ok(a) => a.display,
            Err(e) => { check_invalid(&e, &s)?; e.message }
        };
        prop_assert!(!shown.contains(&pw), "password shown for {:?}: {:?}", s, shown);
        prop_assert!(!shown.contains(&pw_in_uri), "password shown for {:?}: {:?}", s, shown);
        prop_assert!(!shown.contains(&pct(&pw)), "password shown for {:?}: {:?}", s, shown);
        // the distinctive prefix is enough to catch a partial leak (e.g. cut at a special char)
        prop_assert!(!shown.contains("ZQ"), "password prefix shown for {:?}: {:?}", s, shown);
        // the same as a host list (what amqp_connect parses): no password either
        let at = format!("@{host}{port}");
        let list = s.replacen(&at, &format!("{at},{host}:5673"), 1);
        let broken = s.replacen(&at, &format!("{at},,{host}:5673"), 1);
        for u in [&s, &list, &broken] {
            let shown = match parse_addresses(u) {
                Ok(all) => all.iter().map(|a| a.display.clone()).collect::<Vec<_>>().join(" "),
                Err(e) => { check_invalid(&e, u)?; e.message }
            };
            prop_assert!(!shown.contains(&pw), "password shown for {:?}: {:?}", u, shown);
            prop_assert!(!shown.contains(&pw_in_uri), "password shown for {:?}: {:?}", u, shown);
            prop_assert!(!shown.contains("ZQ"), "password prefix shown for {:?}: {:?}", u, shown);
        }
    }
}

#[test]
fn uri_fixed_cases() {
    // the contract's examples and its refusals
    let a = parse_uri("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10").unwrap();
    assert_eq!(a.display, "amqp://guest@127.0.0.1:5672/%2f");
    for (bad, needle) in [
        (
            "amqps://u:ZQsecret1@h/?cacertfile=/nonexistent/ca.pem",
            "cacertfile '/nonexistent/ca.pem'",
        ),
        ("amqp://u:ZQsecret1@h/?certfile=/c.pem", "for amqps://"),
        ("http://u:ZQsecret1@h/", "scheme 'http'"),
        (
            "amqp://u:ZQsecret1@h/?colour=1",
            "unknown query parameter 'colour'",
        ),
        ("amqp://u:ZQsecret1@h:99999/", "bad AMQP URI"),
        ("amqp://u:ZQsecret1@/", "bad AMQP URI"),
        ("amqp://u:ZQsecret1@h/?heartbeat=x", "bad AMQP URI"),
        ("amqp:", "bad AMQP URI"),
    ] {
        let e = parse_uri(bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad}");
        assert!(e.message.contains(needle), "{bad}: {}", e.message);
        assert!(!e.message.contains("ZQsecret1"), "{bad}: {}", e.message);
    }
}

// ---------------------------------------------------------------------------------------------
// Connection and queue options
// ---------------------------------------------------------------------------------------------

const HOUR_MS: u64 = 3_600_000;
const MAX_MESSAGE: u64 = 512 * 1024 * 1024;

/// Joins key=value pairs the way a user might: optional blanks around keys and values, empty
/// segments (`&&`, leading or trailing `&`).
fn join_opts(pairs: &[(String, String)], pad: &[bool], empties: &[bool]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if empties.get(i).copied().unwrap_or(false) {
            s.push('&');
        }
        if i > 0 {
            s.push('&');
        }
        if pad.get(i).copied().unwrap_or(false) {
            s.push_str(&format!(" {k} = {v} "));
        } else {
            s.push_str(&format!("{k}={v}"));
        }
    }
    if empties.last().copied().unwrap_or(false) {
        s.push('&');
    }
    s
}

/// A decimal number with random leading zeros.
fn num(n: u64, zeros: usize) -> String {
    format!("{}{n}", "0".repeat(zeros))
}

#[derive(Debug, Clone)]
struct ConnSpec {
    delay: Option<u64>,
    delay_max: Option<u64>,
    max_reconnects: Option<u32>,
    max_buffered: Option<u64>,
    max_buffered_bytes: Option<u64>,
    max_message_bytes: Option<u64>,
}

fn conn_spec() -> impl Strategy<Value = ConnSpec> {
    use proptest::option::of;
    (
        of(prop_oneof![Just(0), Just(HOUR_MS), 0..=HOUR_MS]),
        of(prop_oneof![Just(0), Just(HOUR_MS), 0..=HOUR_MS]),
        of(prop_oneof![Just(0), Just(u32::MAX), any::<u32>()]),
        of(prop_oneof![
            Just(1),
            Just(u32::MAX as u64),
            1..=u32::MAX as u64
        ]),
        of(prop_oneof![Just(1), Just(u64::MAX >> 1), 1..=u64::MAX >> 1]),
        of(prop_oneof![Just(0), Just(MAX_MESSAGE), 0..=MAX_MESSAGE]),
    )
        .prop_map(|(a, b, c, d, e, f)| ConnSpec {
            delay: a,
            delay_max: b,
            max_reconnects: c,
            max_buffered: d,
            max_buffered_bytes: e,
            max_message_bytes: f,
        })
}

fn conn_pairs(s: &ConnSpec, zeros: usize) -> Vec<(String, String)> {
    let mut v = Vec::new();
    let mut put = |k: &str, n: Option<u64>| {
        if let Some(n) = n {
            v.push((k.to_string(), num(n, zeros)));
        }
    };
    put("reconnect_delay_ms", s.delay);
    put("reconnect_delay_max_ms", s.delay_max);
    put("max_reconnects", s.max_reconnects.map(u64::from));
    put("max_buffered", s.max_buffered);
    put("max_buffered_bytes", s.max_buffered_bytes);
    put("max_message_bytes", s.max_message_bytes);
    v
}

/// (key, a bad value) for every numeric connection option.
fn bad_conn_value() -> impl Strategy<Value = (&'static str, String)> {
    let non_numeric = prop_oneof![
        Just("".to_string()),
        Just("-1".to_string()),
        Just("1.5".to_string()),
        Just("0x10".to_string()),
        Just("1e3".to_string()),
        Just("ten".to_string()),
        Just("18446744073709551616".to_string()),
        "[a-z]{1,6}",
        "-[0-9]{1,5}",
    ];
    prop_oneof![
        (
            Just("reconnect_delay_ms"),
            (HOUR_MS + 1..=u64::MAX).prop_map(|n| n.to_string())
        ),
        (
            Just("reconnect_delay_max_ms"),
            (HOUR_MS + 1..=u64::MAX).prop_map(|n| n.to_string())
        ),
        (
            Just("max_reconnects"),
            (u32::MAX as u64 + 1..=u64::MAX).prop_map(|n| n.to_string())
        ),
        (
            Just("max_buffered"),
            prop_oneof![
                Just("0".to_string()),
                (u32::MAX as u64 + 1..=u64::MAX).prop_map(|n| n.to_string()),
            ]
        ),
        (
            Just("max_buffered_bytes"),
            prop_oneof![
                Just("0".to_string()),
                ((u64::MAX >> 1) + 1..=u64::MAX).prop_map(|n| n.to_string()),
            ]
        ),
        (
            Just("max_message_bytes"),
            (MAX_MESSAGE + 1..=u64::MAX).prop_map(|n| n.to_string())
        ),
        (
            prop_oneof![
                Just("reconnect_delay_ms"),
                Just("reconnect_delay_max_ms"),
                Just("max_reconnects"),
                Just("max_buffered"),
                Just("max_buffered_bytes"),
                Just("max_message_bytes"),
            ],
            non_numeric
        ),
    ]
}

const CONN_KEYS: [&str; 6] = [
    "reconnect_delay_ms",
    "reconnect_delay_max_ms",
    "max_reconnects",
    "max_buffered",
    "max_buffered_bytes",
    "max_message_bytes",
];
const QUEUE_KEYS: [&str; 8] = [
    "durable",
    "persistent",
    "mandatory",
    "exchange_type",
    "queue_type",
    "prefetch",
    "max_buffered",
    "max_buffered_bytes",
];

#[derive(Debug, Clone)]
struct QueueSpec {
    durable: Option<(bool, &'static str)>,
    persistent: Option<(bool, &'static str)>,
    mandatory: Option<(bool, &'static str)>,
    exchange_type: Option<String>,
    quorum: Option<bool>,
    prefetch: Option<u16>,
    max_buffered: Option<u64>,
    max_buffered_bytes: Option<u64>,
}

fn bool_spelling() -> impl Strategy<Value = (bool, &'static str)> {
    prop_oneof![
        Just((true, "true")),
        Just((true, "1")),
        Just((true, "yes")),
        Just((true, "on")),
        Just((false, "false")),
        Just((false, "0")),
        Just((false, "no")),
        Just((false, "off")),
    ]
}

fn queue_spec() -> impl Strategy<Value = QueueSpec> {
    use proptest::option::of;
    (
        (
            of(bool_spelling()),
            of(bool_spelling()),
            of(bool_spelling()),
        ),
        of(prop_oneof![
            Just("direct".to_string()),
            Just("fanout".to_string()),
            Just("topic".to_string()),
            Just("headers".to_string()),
            "x-[a-z-]{0,30}",
            Just(format!("x-{}", "d".repeat(MAX_NAME_BYTES - 2))),
        ]),
        of(any::<bool>()),
        of(any::<u16>()),
        of(1..=u32::MAX as u64),
        of(1..=u64::MAX >> 1),
    )
        .prop_map(|((d, p, m), x, q, pf, mb, mbb)| QueueSpec {
            durable: d,
            persistent: p,
            mandatory: m,
            exchange_type: x,
            quorum: q,
            prefetch: pf,
            max_buffered: mb,
            max_buffered_bytes: mbb,
        })
}

fn queue_pairs(s: &QueueSpec, zeros: usize) -> Vec<(String, String)> {
    let mut v = Vec::new();
    if let Some((_, w)) = s.durable {
        v.push(("durable".into(), w.to_string()));
    }
    if let Some((_, w)) = s.persistent {
        v.push(("persistent".into(), w.to_string()));
    }
    if let Some((_, w)) = s.mandatory {
        v.push(("mandatory".into(), w.to_string()));
    }
    if let Some(x) = &s.exchange_type {
        v.push(("exchange_type".into(), x.clone()));
    }
    if let Some(q) = s.quorum {
        v.push((
            "queue_type".into(),
            if q { "quorum" } else { "classic" }.into(),
        ));
    }
    if let Some(p) = s.prefetch {
        v.push(("prefetch".into(), num(p as u64, zeros)));
    }
    if let Some(n) = s.max_buffered {
        v.push(("max_buffered".into(), num(n, zeros)));
    }
    if let Some(n) = s.max_buffered_bytes {
        v.push(("max_buffered_bytes".into(), num(n, zeros)));
    }
    v
}

fn bad_queue_value() -> impl Strategy<Value = (&'static str, String)> {
    prop_oneof![
        (
            prop_oneof![Just("durable"), Just("persistent"), Just("mandatory")],
            prop_oneof![
                Just("".to_string()),
                Just("TRUE".to_string()),
                Just("2".to_string()),
                Just("maybe".to_string()),
                "[a-z]{1,6}".prop_filter("not a bool spelling", |s| {
                    !matches!(s.as_str(), "true" | "false" | "yes" | "no" | "on" | "off")
                }),
            ]
        ),
        (
            Just("exchange_type"),
            prop_oneof![
                Just("".to_string()),
                Just("Direct".to_string()),
                Just("x".to_string()),
                Just(format!("x-{}", "d".repeat(MAX_NAME_BYTES - 1))),
                "[a-w][a-z]{0,8}".prop_filter("not a known type", |s| {
                    !matches!(s.as_str(), "direct" | "fanout" | "topic" | "headers")
                }),
            ]
        ),
        (
            Just("queue_type"),
            prop_oneof![
                Just("Stream".to_string()),
                Just("".to_string()),
                Just("Quorum".to_string()),
                "[a-z]{1,8}".prop_filter("not a type", |s| {
                    !matches!(s.as_str(), "classic" | "quorum" | "stream")
                }),
            ]
        ),
        (
            Just("prefetch"),
            prop_oneof![
                (65536u64..=u64::MAX).prop_map(|n| n.to_string()),
                Just("-1".to_string()),
                Just("".to_string()),
                "[a-z]{1,5}",
            ]
        ),
        (
            prop_oneof![Just("max_buffered"), Just("max_buffered_bytes")],
            prop_oneof![
                Just("0".to_string()),
                Just("-5".to_string()),
                Just("".to_string()),
                "[a-z]{1,5}"
            ]
        ),
    ]
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn connection_options_arbitrary_strings_never_panic(s in prop_oneof![
        any::<String>(),
        "[a-z_=& 0-9-]{0,60}",
        "((reconnect_delay_ms|max_buffered|max_reconnects|x)=[0-9a-z-]{0,5}&?){0,4}",
    ]) {
        if let Err(e) = parse_connection_options(Some(&s)) {
            check_invalid(&e, &s)?;
        }
    }

    #[test]
    fn queue_options_arbitrary_strings_never_panic(s in prop_oneof![
        any::<String>(),
        "[a-z_=& 0-9-]{0,60}",
        "((durable|prefetch|queue_type|exchange_type|x)=[0-9a-z-]{0,7}&?){0,4}",
    ]) {
        if let Err(e) = parse_queue_options(Some(&s), &ConnectionOptions::default()) {
            check_invalid(&e, &s)?;
        }
    }

    /// Valid connection options, in any order and spacing, parse to exactly their values;
    /// absent keys keep the defaults.
    #[test]
    fn connection_options_round_trip(
        spec in conn_spec(),
        zeros in 0usize..3,
        order in Just((0..6).collect::<Vec<usize>>()).prop_shuffle(),
        pad in vec(any::<bool>(), 6),
        empties in vec(prop::bool::weighted(0.2), 7),
    ) {
        let pairs = conn_pairs(&spec, zeros);
        let pairs: Vec<_> = order.iter().filter_map(|i| pairs.get(*i).cloned()).collect();
        let s = join_opts(&pairs, &pad, &empties);
        let o = parse_connection_options(Some(&s))
            .map_err(|e| TestCaseError::fail(format!("{s:?}: {}", e.message)))?;
        let d = ConnectionOptions::default();
        let delay = spec.delay.map_or(d.reconnect_delay, Duration::from_millis);
        let delay_max = spec.delay_max.map_or(d.reconnect_delay_max, Duration::from_millis);
        prop_assert_eq!(o.reconnect_delay, delay, "{}", s);
        // a cap below the first delay is raised to it (documented in options.rs)
        prop_assert_eq!(o.reconnect_delay_max, delay_max.max(delay), "{}", s);
        prop_assert_eq!(o.max_reconnects, spec.max_reconnects.unwrap_or(d.max_reconnects));
        prop_assert_eq!(o.max_buffered, spec.max_buffered.unwrap_or(d.max_buffered));
        prop_assert_eq!(
            o.max_buffered_bytes, spec.max_buffered_bytes.unwrap_or(d.max_buffered_bytes)
        );
        prop_assert_eq!(
            o.max_message_bytes, spec.max_message_bytes.unwrap_or(d.max_message_bytes)
        );
    }

    /// One bad value among valid options: refused, and the message names the key.
    #[test]
    fn connection_options_bad_value_names_the_key(
        spec in conn_spec(),
        (key, bad) in bad_conn_value(),
        pos in any::<prop::sample::Index>(),
    ) {
        let mut pairs: Vec<_> =
            conn_pairs(&spec, 0).into_iter().filter(|(k, _)| k != key).collect();
        pairs.insert(pos.index(pairs.len() + 1), (key.to_string(), bad.clone()));
        let s = join_opts(&pairs, &[], &[]);
        let e = parse_connection_options(Some(&s)).err()
            .ok_or_else(|| TestCaseError::fail(format!("accepted {s:?}")))?;
        check_invalid(&e, &s)?;
        prop_assert!(e.message.contains(&format!("'{key}'")), "{:?}: {}", s, e.message);
    }

    /// Unknown keys and keys given twice are refused, naming the key.
    #[test]
    fn options_unknown_and_duplicate_keys(
        unknown in "[a-z_]{1,20}",
        ckey in prop::sample::select(CONN_KEYS.to_vec()),
        qkey in prop::sample::select(QUEUE_KEYS.to_vec()),
        pad in any::<bool>(),
    ) {
        let c = ConnectionOptions::default();
        if !CONN_KEYS.contains(&unknown.as_str()) {
            let s = format!("max_buffered=5&{unknown}=1");
            let e = parse_connection_options(Some(&s)).unwrap_err();
            check_invalid(&e, &s)?;
            prop_assert!(e.message.contains(&format!("unknown option '{unknown}'")), "{}", e.message);
        }
        if !QUEUE_KEYS.contains(&unknown.as_str()) {
            let s = format!("prefetch=5&{unknown}=1");
            let e = parse_queue_options(Some(&s), &c).unwrap_err();
            check_invalid(&e, &s)?;
            prop_assert!(e.message.contains(&format!("unknown option '{unknown}'")), "{}", e.message);
        }
        // duplicates, possibly disguised by blanks
        let v = |k: &str| match k {
            "durable" | "persistent" | "mandatory" => "true",
            "exchange_type" => "direct",
            "queue_type" => "classic",
            _ => "1",
        };
        let second = if pad { format!(" {ckey} ") } else { ckey.to_string() };
        let s = format!("{ckey}=1&{second}=1");
        let e = parse_connection_options(Some(&s)).unwrap_err();
        check_invalid(&e, &s)?;
        prop_assert!(e.message.contains(ckey) && e.message.contains("twice"), "{}", e.message);
        let second = if pad { format!(" {qkey} ") } else { qkey.to_string() };
        let s = format!("{qkey}={}&{second}={}", v(qkey), v(qkey));
        let e = parse_queue_options(Some(&s), &c).unwrap_err();
        check_invalid(&e, &s)?;
        prop_assert!(e.message.contains(qkey) && e.message.contains("twice"), "{}", e.message);
    }

    /// Valid queue options parse to their values; absent buffer limits come from the
    /// connection; quorum without durability is refused.
    #[test]
    fn queue_options_round_trip(
        spec in queue_spec(),
        conn in conn_spec(),
        zeros in 0usize..3,
        order in Just((0..8).collect::<Vec<usize>>()).prop_shuffle(),
        pad in vec(any::<bool>(), 8),
        empties in vec(prop::bool::weighted(0.2), 9),
    ) {
        let c = parse_connection_options(Some(&join_opts(&conn_pairs(&conn, 0), &[], &[])))
            .unwrap();
        let pairs = queue_pairs(&spec, zeros);
        let pairs: Vec<_> = order.iter().filter_map(|i| pairs.get(*i).cloned()).collect();
        let s = join_opts(&pairs, &pad, &empties);
        let durable = spec.durable.is_none_or(|(b, _)| b);
        let quorum = spec.quorum == Some(true);
        match parse_queue_options(Some(&s), &c) {
            Err(e) => {
                check_invalid(&e, &s)?;
                prop_assert!(quorum && !durable, "refused {:?}: {}", s, e.message);
                prop_assert!(e.message.contains("quorum"), "{}", e.message);
            }
            Ok(o) => {
                prop_assert!(!quorum || durable, "accepted quorum + durable=false: {:?}", s);
                prop_assert_eq!(o.durable, durable);
                prop_assert_eq!(o.persistent, spec.persistent.is_none_or(|(b, _)| b));
                prop_assert_eq!(o.mandatory, spec.mandatory.is_none_or(|(b, _)| b));
                prop_assert_eq!(
                    &o.exchange_type, spec.exchange_type.as_deref().unwrap_or("direct")
                );
                prop_assert_eq!(
                    o.queue_type, if quorum { QueueType::Quorum } else { QueueType::Classic }
                );
                prop_assert_eq!(o.prefetch, spec.prefetch.unwrap_or(100));
                prop_assert_eq!(o.max_buffered, spec.max_buffered.unwrap_or(c.max_buffered));
                prop_assert_eq!(
                    o.max_buffered_bytes, spec.max_buffered_bytes.unwrap_or(c.max_buffered_bytes)
                );
            }
        }
    }

    #[test]
    fn queue_options_bad_value_names_the_key(
        (key, bad) in bad_queue_value(),
        prefix in prop::sample::select(vec!["", "prefetch=1&", "durable=true&", "persistent=0&"]),
    ) {
        let prefix = if prefix.starts_with(key) { "" } else { prefix };
        let s = format!("{prefix}{key}={bad}");
        let e = parse_queue_options(Some(&s), &ConnectionOptions::default()).err()
            .ok_or_else(|| TestCaseError::fail(format!("accepted {s:?}")))?;
        check_invalid(&e, &s)?;
        prop_assert!(e.message.contains(&format!("'{key}")), "{:?}: {}", s, e.message);
    }
}

// ---------------------------------------------------------------------------------------------
// Handle registry (model-based)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum RegOp {
    Insert(usize),
    /// remove the n-th handle ever issued (live or already removed)
    Remove(prop::sample::Index),
    Get(prop::sample::Index),
    /// a made-up handle, looked up and removed in both registries
    Raw(u64),
}

fn reg_op() -> impl Strategy<Value = RegOp> {
    prop_oneof![
        4 => (0usize..2).prop_map(RegOp::Insert),
        3 => any::<prop::sample::Index>().prop_map(RegOp::Remove),
        2 => any::<prop::sample::Index>().prop_map(RegOp::Get),
        1 => prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            Just(1u64 << 52),
            Just(1u64 << 53),
            0u64..64,
            (1u64 << 52)..(1u64 << 52) + 64,
            any::<u64>(),
        ].prop_map(RegOp::Raw),
    ]
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn registry_matches_a_hashmap_model(ops in vec(reg_op(), 1..200)) {
        let regs: [Registry<u64>; 2] = [Registry::new(0), Registry::new(1)];
        // (kind, handle) -> value for live handles
        let mut live: HashMap<(usize, u64), u64> = HashMap::new();
        // every handle ever issued, with its kind
        let mut issued: Vec<(usize, u64)> = Vec::new();
        let mut all: HashSet<u64> = HashSet::new();
        let mut next_value = 1000u64;
        let mut slot_reuses = 0;
        for op in &ops {
            match op {
                RegOp::Insert(k) => {
                    let v = next_value;
                    next_value += 1;
                    let h = regs[*k].insert(Arc::new(v)).expect("registry full");
                    prop_assert!(h != 0);
                    prop_assert!(h < 1u64 << 53, "handle {:#x} >= 2^53", h);
                    prop_assert!(all.insert(h), "handle {:#x} issued twice", h);
                    if issued.iter().any(|(k2, h2)| k2 == k && (h2 & 0xff_ffff) == (h & 0xff_ffff)) {
                        slot_reuses += 1;
                    }
                    prop_assert!(regs[1 - k].get(h).is_none(), "other kind accepts {:#x}", h);
                    prop_assert_eq!(regs[*k].get(h).map(|a| *a), Some(v));
                    live.insert((*k, h), v);
                    issued.push((*k, h));
                }
                RegOp::Remove(i) if !issued.is_empty() => {
                    let (k, h) = issued[i.index(issued.len())];
                    // the other kind must refuse it and must not disturb it
                    prop_assert!(regs[1 - k].remove(h).is_none());
                    let want = live.remove(&(k, h));
                    prop_assert_eq!(regs[k].remove(h).map(|a| *a), want, "remove {:#x}", h);
                    prop_assert!(regs[k].get(h).is_none(), "{:#x} alive after remove", h);
                    prop_assert!(regs[k].remove(h).is_none(), "{:#x} removed twice", h);
                }
                RegOp::Get(i) if !issued.is_empty() => {
                    let (k, h) = issued[i.index(issued.len())];
                    prop_assert_eq!(regs[k].get(h).map(|a| *a), live.get(&(k, h)).copied());
                    prop_assert!(regs[1 - k].get(h).is_none());
                }
                RegOp::Raw(x) => {
                    for (k, reg) in regs.iter().enumerate() {
                        prop_assert_eq!(
                            reg.get(*x).map(|a| *a), live.get(&(k, *x)).copied(),
                            "get({:#x}) kind {}", x, k
                        );
                        if !live.contains_key(&(k, *x)) {
                            prop_assert!(reg.remove(*x).is_none(), "remove({:#x})", x);
                        }
                    }
                }
                _ => {}
            }
        }
        // final sweep: the model and the registries agree on every handle ever issued
        for (k, h) in &issued {
            prop_assert_eq!(regs[*k].get(*h).map(|a| *a), live.get(&(*k, *h)).copied());
            prop_assert!(regs[1 - k].get(*h).is_none());
        }
        // (slot reuse is exercised here whenever a remove precedes an insert of the same kind)
        prop_assert!(slot_reuses <= issued.len());
    }
}

/// One slot reused many times: every generation is a new handle and all older ones are stale.
#[test]
fn registry_slot_reuse_keeps_old_handles_stale() {
    let r: Registry<u32> = Registry::new(0);
    let keep = r.insert(Arc::new(7)).unwrap();
    let mut old = Vec::new();
    let mut seen = HashSet::new();
    for i in 0..20_000u32 {
        let h = r.insert(Arc::new(i)).unwrap();
        assert!(h != 0 && h < 1 << 53);
        assert!(seen.insert(h), "handle {h:#x} issued twice");
        if let Some(&prev) = old.last() {
            assert_eq!(
                prev & 0xff_ffff,
                h & 0xff_ffff,
                "the freed slot should be reused"
            );
        }
        assert_eq!(*r.remove(h).unwrap(), i);
        old.push(h);
    }
    for h in &old {
        assert!(r.get(*h).is_none(), "stale handle {h:#x} accepted");
        assert!(r.remove(*h).is_none());
    }
    assert_eq!(*r.get(keep).unwrap(), 7);
}

/// Concurrent inserts, lookups and removes from 8 threads: every thread always finds its own
/// values, no handle is ever issued twice, and removed handles stay dead.
#[test]
fn registry_concurrent_use() {
    let r: Arc<Registry<(usize, u32)>> = Arc::new(Registry::new(1));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let r = r.clone();
            std::thread::spawn(move || {
                let mut issued = Vec::new();
                let mut mine: Vec<(u64, u32)> = Vec::new();
                for i in 0..5000u32 {
                    let h = r.insert(Arc::new((t, i))).unwrap();
                    assert!(h != 0 && h < 1 << 53 && h >> 52 == 1);
                    issued.push(h);
                    mine.push((h, i));
                    if i % 3 != 0 {
                        let (h, v) = mine.swap_remove((i as usize * 7) % mine.len());
                        assert_eq!(*r.get(h).unwrap(), (t, v));
                        assert_eq!(*r.remove(h).unwrap(), (t, v));
                        assert!(r.get(h).is_none());
                    }
                }
                for (h, v) in &mine {
                    assert_eq!(*r.get(*h).unwrap(), (t, *v));
                }
                (issued, mine)
            })
        })
        .collect();
    let mut all = HashSet::new();
    let mut live = HashSet::new();
    for t in threads {
        let (issued, mine) = t.join().expect("registry thread panicked");
        for h in issued {
            assert!(all.insert(h), "handle {h:#x} issued twice across threads");
        }
        live.extend(mine.into_iter().map(|(h, _)| h));
    }
    for h in &all {
        assert_eq!(r.get(*h).is_some(), live.contains(h), "handle {h:#x}");
    }
}

// ---------------------------------------------------------------------------------------------
// The C API with arbitrary bytes
// ---------------------------------------------------------------------------------------------

const SENTINEL: u64 = 0xDEAD_BEEF_0BAD_F00D;

fn bytes_for_uri() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..64),
        vec(any::<u8>(), 0..40).prop_map(|b| [b"amqp://".to_vec(), b].concat()),
        // a valid dead-port URI followed by arbitrary bytes (path, query, junk)
        vec(any::<u8>(), 0..40)
            .prop_map(|b| [b"amqp://guest:guest@127.0.0.1:1/".to_vec(), b].concat()),
        "[ -~]{0,30}".prop_map(|s| format!("amqp://guest:guest@127.0.0.1:1/{s}").into_bytes()),
        Just(DEAD_URI.as_bytes().to_vec()),
    ]
}

fn bytes_for_options() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::weighted(
        0.9,
        prop_oneof![
            vec(any::<u8>(), 0..48),
            "[a-z_=&0-9]{0,40}".prop_map(String::into_bytes),
            conn_spec().prop_map(|s| join_opts(&conn_pairs(&s, 0), &[], &[]).into_bytes()),
        ],
    )
}

fn close_now(conn: u64) {
    let mut unsent = SENTINEL;
    let r = unsafe { amqp_close_graceful(conn, 0, &mut unsent) };
    assert!(
        matches!(r, amqp_result::AMQP_OK | amqp_result::AMQP_ERR_TIMEOUT),
        "close: {r:?} {}",
        last_error()
    );
    assert_eq!(
        unsafe { amqp_wait_connected(conn, 0) },
        amqp_result::AMQP_ERR_INVALID_HANDLE
    );
}

/// amqp_connect with arbitrary bytes as URI and options: OK exactly when the parsers accept
/// them, otherwise INVALID_ARGUMENT with a message and the out-parameter untouched.
#[test]
fn c_connect_arbitrary_bytes() {
    let mut runner = TestRunner::new(config(CASES));
    let outcomes = std::cell::RefCell::new([0usize; 2]);
    runner
        .run(&(bytes_for_uri(), bytes_for_options()), |(uri, opts)| {
            let u = with_nul(&uri);
            let o = opts.as_deref().map(with_nul);
            let mut out = SENTINEL;
            let r = unsafe { amqp_connect(u.as_ptr() as *const c_char, cptr(&o), &mut out) };
            let err = last_error();
            // the oracle: the pure-Rust parsers on what C sees (up to the first NUL)
            let uri_ok = std::str::from_utf8(c_view(&uri))
                .ok()
                .is_some_and(|s| parse_addresses(s).is_ok());
            let opts_ok = match &opts {
                None => true,
                Some(b) => std::str::from_utf8(c_view(b))
                    .ok()
                    .is_some_and(|s| parse_connection_options(Some(s)).is_ok()),
            };
            if r == amqp_result::AMQP_OK {
                outcomes.borrow_mut()[0] += 1;
                prop_assert!(uri_ok && opts_ok, "accepted {:?} / {:?}", u, o);
                prop_assert!(out != SENTINEL && out != 0 && out < 1 << 53);
                prop_assert_eq!(err, "");
                close_now(out);
            } else {
                outcomes.borrow_mut()[1] += 1;
                prop_assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT, "{}", err);
                prop_assert!(
                    !(uri_ok && opts_ok),
                    "refused valid {:?} / {:?}: {}",
                    u,
                    o,
                    err
                );
                prop_assert_eq!(out, SENTINEL, "out-parameter written on error");
                prop_assert!(!err.is_empty(), "no amqp_last_error for {:?}", u);
            }
            Ok(())
        })
        .unwrap();
    let outcomes = outcomes.into_inner();
    println!(
        "amqp_connect with arbitrary bytes: {} accepted, {} refused",
        outcomes[0], outcomes[1]
    );
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

fn bytes_for_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..32),
        1 => vec(any::<u8>(), 250..262),
        4 => "[a-z.-]{0,20}".prop_map(String::into_bytes),
        1 => (250usize..262).prop_map(|n| "n".repeat(n).into_bytes()),
        1 => (0usize..4).prop_map(|n| {
            // multi-byte UTF-8 across the 255-byte limit
            let mut s = "q".repeat(252 + n);
            s.push('é');
            s.into_bytes()
        }),
    ]
}

fn bytes_for_queue_options() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::weighted(
        0.8,
        prop_oneof![
            1 => vec(any::<u8>(), 0..40),
            1 => "[a-z_=&0-9]{0,30}".prop_map(String::into_bytes),
            3 => queue_spec().prop_map(|s| join_opts(&queue_pairs(&s, 0), &[], &[]).into_bytes()),
        ],
    )
}

/// A name amqp_queue_open takes: UTF-8, at most 255 bytes, no control characters.
fn name_ok(b: &[u8], allow_empty: bool) -> bool {
    match std::str::from_utf8(c_view(b)) {
        Ok(s) => {
            (allow_empty || !s.is_empty())
                && s.len() <= MAX_NAME_BYTES
                && !s.chars().any(char::is_control)
        }
        Err(_) => false,
    }
}

/// amqp_queue_open on a dead-port connection with arbitrary bytes as queue, exchange, routing
/// key and options: OK exactly when they are valid, otherwise INVALID_ARGUMENT with a message and
/// the out-parameter untouched; accepted queue handles work and die with the connection.
#[test]
fn c_queue_open_arbitrary_bytes() {
    let mut conn = SENTINEL;
    let u = cs(DEAD_URI);
    assert_eq!(
        unsafe { amqp_connect(u.as_ptr(), std::ptr::null(), &mut conn) },
        amqp_result::AMQP_OK
    );
    let handles = std::cell::RefCell::new(Vec::new());
    let refused = std::cell::Cell::new(0usize);
    let mut runner = TestRunner::new(config(CASES));
    let strategy = (
        bytes_for_name(),
        proptest::option::weighted(0.7, bytes_for_name()),
        proptest::option::weighted(0.7, bytes_for_name()),
        bytes_for_queue_options(),
    );
    runner
        .run(&strategy, |(queue, exchange, rk, opts)| {
            let q = Some(with_nul(&queue));
            let e = exchange.as_deref().map(with_nul);
            let k = rk.as_deref().map(with_nul);
            let o = opts.as_deref().map(with_nul);
            let mut out = SENTINEL;
            let r =
                unsafe { amqp_queue_open(conn, cptr(&q), cptr(&e), cptr(&k), cptr(&o), &mut out) };
            let err = last_error();
            let opts_ok = match &opts {
                None => true,
                Some(b) => std::str::from_utf8(c_view(b)).ok().is_some_and(|s| {
                    parse_queue_options(Some(s), &ConnectionOptions::default()).is_ok()
                }),
            };
            // An empty queue name asks the broker for one (a server-named
            // queue), which needs an exchange to publish through.
            let named_by_broker = c_view(&queue).is_empty()
                && exchange.as_deref().is_some_and(|b| !c_view(b).is_empty());
            // A server-named queue also refuses options it cannot have (it
            // is exclusive: classic, not durable...): either answer is fine
            // for it when options are given, as long as a refusal says why.
            let server_named_with_options =
                named_by_broker && opts.as_deref().is_some_and(|b| !c_view(b).is_empty());
            let valid = (name_ok(&queue, false) || (named_by_broker && name_ok(&queue, true)))
                && exchange.as_deref().is_none_or(|b| name_ok(b, true))
                && rk.as_deref().is_none_or(|b| name_ok(b, true))
                && opts_ok;
            if r == amqp_result::AMQP_OK {
                prop_assert!(valid, "accepted {:?} {:?} {:?} {:?}", q, e, k, o);
                prop_assert!(out != SENTINEL && out != 0 && out < 1 << 53);
                prop_assert!(
                    !handles.borrow().contains(&out),
                    "queue handle {} issued twice",
                    out
                );
                prop_assert_eq!(err, "");
                // a queue handle is not a connection handle
                prop_assert_eq!(
                    unsafe { amqp_wait_connected(out, 0) },
                    amqp_result::AMQP_ERR_INVALID_HANDLE
                );
                let mut st = amqp_queue_stats {
                    size: std::mem::size_of::<amqp_queue_stats>(),
                    ..Default::default()
                };
                prop_assert_eq!(
                    unsafe { amqp_queue_get_stats(out, &mut st) },
                    amqp_result::AMQP_OK
                );
                handles.borrow_mut().push(out);
            } else {
                refused.set(refused.get() + 1);
                prop_assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT, "{}", err);
                prop_assert!(
                    !valid || server_named_with_options,
                    "refused valid {:?} {:?} {:?} {:?}: {}",
                    q,
                    e,
                    k,
                    o,
                    err
                );
                prop_assert_eq!(out, SENTINEL, "out-parameter written on error");
                prop_assert!(!err.is_empty());
            }
            Ok(())
        })
        .unwrap();
    let handles = handles.into_inner();
    let refused = refused.get();
    println!(
        "amqp_queue_open with arbitrary bytes: {} accepted, {refused} refused",
        handles.len()
    );
    assert!(!handles.is_empty() && refused > 0);
    let mut stats: amqp_connection_stats = unsafe { std::mem::zeroed() };
    stats.size = std::mem::size_of::<amqp_connection_stats>();
    assert_eq!(
        unsafe { amqp_connection_get_stats(conn, &mut stats) },
        amqp_result::AMQP_OK
    );
    assert_eq!(stats.queues, handles.len() as u64);
    close_now(conn);
    for h in handles {
        let mut st = amqp_queue_stats {
            size: std::mem::size_of::<amqp_queue_stats>(),
            ..Default::default()
        };
        assert_eq!(
            unsafe { amqp_queue_get_stats(h, &mut st) },
            amqp_result::AMQP_ERR_INVALID_HANDLE,
            "queue handle {h} alive after its connection closed"
        );
    }
}

/// Arbitrary handles (u64) to every handle-taking function: only INVALID_HANDLE, never a crash,
/// and the out-parameter untouched.
#[test]
fn c_arbitrary_handles() {
    let mut runner = TestRunner::new(config(CASES));
    runner
        .run(&any::<u64>(), |h| {
            let mut out = SENTINEL;
            let q = cs("q");
            let r = unsafe {
                amqp_queue_open(
                    h,
                    q.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    std::ptr::null(),
                    &mut out,
                )
            };
            prop_assert_eq!(r, amqp_result::AMQP_ERR_INVALID_HANDLE);
            prop_assert_eq!(out, SENTINEL);
            prop_assert_eq!(
                unsafe { amqp_wait_connected(h, 0) },
                amqp_result::AMQP_ERR_INVALID_HANDLE
            );
            prop_assert_eq!(
                unsafe { amqp_publish(h, b"x".as_ptr() as *const _, 1) },
                amqp_result::AMQP_ERR_INVALID_HANDLE
            );
            prop_assert_eq!(amqp_consume_stop(h), amqp_result::AMQP_ERR_INVALID_HANDLE);
            prop_assert_eq!(amqp_consume_start(h), amqp_result::AMQP_ERR_INVALID_HANDLE);
            let mut unsent = SENTINEL;
            prop_assert_eq!(
                unsafe { amqp_close_graceful(h, 0, &mut unsent) },
                amqp_result::AMQP_ERR_INVALID_HANDLE
            );
            prop_assert_eq!(unsent, SENTINEL);
            prop_assert!(last_error().contains(&h.to_string()));
            Ok(())
        })
        .unwrap();
}

/// amqp_last_error behaves like snprintf for every capacity.
#[test]
fn c_last_error_is_snprintf_like() {
    let mut runner = TestRunner::new(config(256));
    runner
        .run(&(0usize..200, "[a-z]{1,80}"), |(cap, key)| {
            let o = cs(&format!("{key}=1"));
            let u = cs(DEAD_URI);
            let mut out = SENTINEL;
            let r = unsafe { amqp_connect(u.as_ptr(), o.as_ptr(), &mut out) };
            if CONN_KEYS.contains(&key.as_str()) {
                prop_assert_eq!(r, amqp_result::AMQP_OK);
                close_now(out);
                return Ok(());
            }
            prop_assert_eq!(r, amqp_result::AMQP_ERR_INVALID_ARGUMENT);
            let full = last_error();
            let n = unsafe { amqp_last_error(std::ptr::null_mut(), 0) };
            prop_assert_eq!(n, full.len());
            let mut buf = vec![0x55u8; cap + 8];
            let n = unsafe { amqp_last_error(buf.as_mut_ptr() as *mut c_char, cap) };
            prop_assert_eq!(n, full.len());
            if cap > 0 {
                let s = unsafe { CStr::from_ptr(buf.as_ptr() as *const c_char) };
                let want = &full.as_bytes()[..full.len().min(cap - 1)];
                prop_assert_eq!(s.to_bytes(), want);
            }
            // nothing written past cap
            prop_assert!(
                buf[cap..].iter().all(|b| *b == 0x55),
                "wrote past cap {}",
                cap
            );
            Ok(())
        })
        .unwrap();
}
