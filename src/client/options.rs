//! Parsing of the `key=value&key=value` option strings.
//! Every rejection names the offending key, so `amqp_last_error` is useful.

use crate::error::{Error, Result};
use std::time::Duration;

mod args;
mod specs;
pub(crate) use args::check_server_named;
pub use args::{ArgValue, Arguments};
pub(crate) use specs::{CONNECTION_OPTIONS, QUEUE_OPTIONS};

/// AMQP short strings (queue, exchange, routing key) are at most 255 bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// RabbitMQ refuses bodies above 512 MiB whatever its configuration.
pub(crate) const MAX_MESSAGE_BYTES_LIMIT: u64 = 512 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub reconnect_delay: Duration,
    pub reconnect_delay_max: Duration,
    /// Consecutive failed attempts before giving up for good; 0 = never.
    pub max_reconnects: u32,
    pub max_buffered: u64,
    pub max_buffered_bytes: u64,
    pub max_message_bytes: u64,
    /// The callback threads read the consume link themselves
    /// (`consume::pool`, `wire::link_reader`).
    pub inline_delivery: bool,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            reconnect_delay: Duration::from_millis(100),
            reconnect_delay_max: Duration::from_millis(5000),
            max_reconnects: 0,
            max_buffered: 100_000,
            max_buffered_bytes: 64 * 1024 * 1024,
            max_message_bytes: 128 * 1024 * 1024,
            inline_delivery: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
    Stream,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    pub durable: bool,
    pub persistent: bool,
    /// Publish with the mandatory flag, so a message that reaches no queue
    /// (the queue was deleted by someone) comes back and the queue is
    /// declared again, instead of the broker confirming and dropping it.
    /// RabbitMQ 3.x then sends one more internal message per publish (queue
    /// to channel), which costs the broker CPU (docs/bench/HISTORY.md).
    pub mandatory: bool,
    pub exchange_type: String,
    pub queue_type: QueueType,
    pub prefetch: u16,
    pub max_buffered: u64,
    pub max_buffered_bytes: u64,
    /// What a callback's return value that is no amqp_disposition does:
    /// requeue (false) or reject (true).
    pub invalid_disposition_rejects: bool,
    /// Nacks a message survives (resent after a backoff each time).
    pub publish_retries: u16,
    /// A message not confirmed this long after its publish fails; 0 = never.
    pub publish_timeout_ms: u64,
    /// How often a passive queue.declare checks that the queue still
    /// exists while its session runs; None: never.
    pub topology_check: Option<Duration>,
    /// Only check that the queue exists (someone else declared it, with
    /// whatever arguments); declare nothing, bind nothing.
    pub passive: bool,
    /// The connection's own queue (deleted with it; others cannot use it).
    pub exclusive: bool,
    pub auto_delete: bool,
    /// Queue arguments (x-...), named options' and `arg.` ones, in order.
    pub arguments: Arguments,
    /// Consumer tags NAME-<n> instead of resilient-amqp.<queue id>.<n>.
    pub consumer_name: Option<String>,
    /// basic.consume with the exclusive flag.
    pub consumer_exclusive: bool,
    /// The window of acked message ids deliveries are checked against
    /// (duplicates acked unseen); 0 = off.
    pub dedupe: u64,
    /// Every message published without a message_id gets a unique one.
    pub auto_message_id: bool,
    /// The on-disk spool's directory ("": none), sync mode and bound (0:
    /// `max_buffered_bytes`).
    pub spool_dir: String,
    pub spool_sync: crate::spool::SyncMode,
    pub spool_max_bytes: u64,
    /// Consumer arguments (x-priority, `consumer_arg.` ones).
    pub consumer_arguments: Arguments,
}

impl QueueOptions {
    /// The broker confirms a publish only after writing it to disk: a
    /// durable queue with persistent messages, or a quorum queue.
    pub fn confirmed_after_disk_write(&self) -> bool {
        self.queue_type != QueueType::Classic || (self.durable && self.persistent)
    }

    /// Queue defaults; the buffer limits come from the connection.
    pub fn defaults_for(conn: &ConnectionOptions) -> Self {
        QueueOptions {
            durable: true,
            persistent: true,
            mandatory: true,
            exchange_type: "direct".into(),
            queue_type: QueueType::Classic,
            prefetch: 100,
            max_buffered: conn.max_buffered,
            max_buffered_bytes: conn.max_buffered_bytes,
            invalid_disposition_rejects: false,
            publish_retries: 3,
            publish_timeout_ms: 0,
            topology_check: Some(Duration::from_millis(DEFAULT_TOPOLOGY_CHECK_MS)),
            passive: false,
            exclusive: false,
            auto_delete: false,
            arguments: Vec::new(),
            consumer_name: None,
            consumer_exclusive: false,
            dedupe: 0,
            auto_message_id: false,
            spool_dir: String::new(),
            spool_sync: crate::spool::SyncMode::Batch,
            spool_max_bytes: 0,
            consumer_arguments: Vec::new(),
        }
    }
}

/// Splits `a=1&b=2` into pairs. `None` and "" mean no options. A key given
/// twice is an error rather than a silent override.
fn pairs(s: &str) -> Result<Vec<(&str, &str)>> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for part in s.split('&') {
        if part.is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(Error::invalid(format!(
                "option '{part}' has no value (expected key=value)"
            )));
        };
        let k = k.trim();
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(Error::invalid(format!("option '{k}' is given twice")));
        }
        out.push((k, v.trim()));
    }
    Ok(out)
}

const HOUR_MS: u64 = 3_600_000;
const DEFAULT_TOPOLOGY_CHECK_MS: u64 = 5000;
/// The largest `max_buffered` / `max_buffered_bytes`, for the connection's
/// bound and a queue's own alike.
const MAX_BUFFERED_LIMIT: u64 = u32::MAX as u64;
const MAX_BUFFERED_BYTES_LIMIT: u64 = u64::MAX >> 1;
const MIB: u64 = 1 << 20;

/// One option key: the single place its name, default, accepted values and
/// documentation live. The parser walks these tables, its error messages
/// quote them, and the README's option tables are rendered from them
/// (tests/facts.rs and the unit tests below fail when README.md or the
/// header's summaries differ).
pub(crate) struct OptionSpec<T: 'static> {
    pub key: &'static str,
    pub default: OptionDefault,
    pub doc: &'static str,
    pub value: Value<T>,
}

/// An option's default, as documented.
#[derive(Clone, Copy)]
pub(crate) enum OptionDefault {
    /// Text the parser accepts, giving the value the defaults have.
    Text(&'static str),
    /// The connection option of the same key (queue buffer bounds).
    Connection,
    /// Nothing is sent unless the option is given (queue arguments).
    Unset,
}

/// What an option accepts, and how it is stored.
pub(crate) enum Value<T: 'static> {
    /// An integer from `min` to `max`; `bytes` shows whole MiB as such.
    Int {
        min: u64,
        max: u64,
        bytes: bool,
        set: fn(&mut T, u64),
    },
    /// true/1/yes/on or false/0/no/off.
    Bool { set: fn(&mut T, bool) },
    /// One of `words`; a word ending in "..." accepts any name with that
    /// prefix (up to `MAX_NAME_BYTES`).
    Word {
        words: &'static [&'static str],
        set: fn(&mut T, &str),
    },
    /// Any name up to `MAX_NAME_BYTES`, "" included, without control
    /// characters.
    Name { set: fn(&mut T, &str) },
}

impl<T> OptionSpec<T> {
    /// Parses `v` and stores it in `o`; the error names the key and what
    /// it accepts.
    fn apply(&self, o: &mut T, v: &str) -> Result<()> {
        let key = self.key;
        match &self.value {
            Value::Int { min, max, set, .. } => match v.parse::<u64>() {
                Ok(n) if (*min..=*max).contains(&n) => set(o, n),
                _ => return Err(bad_value(key, v, &self.accepted())),
            },
            Value::Bool { set } => match v {
                "true" | "1" | "yes" | "on" => set(o, true),
                "false" | "0" | "no" | "off" => set(o, false),
                _ => return Err(bad_value(key, v, &self.accepted())),
            },
            Value::Word { words, set } => {
                let fits = |w: &&str| match w.strip_suffix("...") {
                    Some(prefix) => {
                        v.starts_with(prefix)
                            && v.len() <= MAX_NAME_BYTES
                            && !v.chars().any(char::is_control)
                    }
                    None => *w == v,
                };
                if !words.iter().any(fits) {
                    return Err(bad_value(key, v, &self.accepted()));
                }
                set(o, v)
            }
            Value::Name { set } => {
                if v.len() > MAX_NAME_BYTES || v.chars().any(char::is_control) {
                    return Err(bad_value(key, v, &self.accepted()));
                }
                set(o, v)
            }
        }
        Ok(())
    }

    /// What the option accepts, as error messages and the README say it.
    pub(crate) fn accepted(&self) -> String {
        match &self.value {
            Value::Int { min, max, .. } => format!("an integer from {min} to {max}"),
            Value::Bool { .. } => "true or false".to_string(),
            Value::Word { words, .. } => match words.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            },
            Value::Name { .. } => format!("a name (up to {MAX_NAME_BYTES} bytes)"),
        }
    }

    /// The default as the documentation shows it: whole MiB for byte
    /// counts, "the connection's" for inherited bounds.
    pub(crate) fn shown_default(&self) -> String {
        match (self.default, &self.value) {
            (OptionDefault::Connection, _) => "the connection's".to_string(),
            (OptionDefault::Unset, _) => "not sent".to_string(),
            (OptionDefault::Text(t), Value::Int { bytes: true, .. }) => match t.parse::<u64>() {
                Ok(n) if n >= MIB && n % MIB == 0 => format!("{} MiB", n / MIB),
                _ => t.to_string(),
            },
            (OptionDefault::Text(t), _) => t.to_string(),
        }
    }
}

/// The README's option tables, by kind (`<!-- options:KIND -->`; checked
/// against README.md by tests/facts.rs).
pub(crate) fn readme_option_tables() -> [(&'static str, String); 2] {
    [
        ("connection", markdown_table(CONNECTION_OPTIONS)),
        ("queue", markdown_table(QUEUE_OPTIONS)),
    ]
}

fn markdown_table<T>(table: &[OptionSpec<T>]) -> String {
    let mut out = String::from("| key | default | accepted | meaning |\n|---|---|---|---|\n");
    for spec in table {
        out += &format!(
            "| `{}` | {} | {} | {} |\n",
            spec.key,
            spec.shown_default(),
            spec.accepted(),
            spec.doc
        );
    }
    out
}

fn bad_value(key: &str, v: &str, accepted: &str) -> Error {
    Error::invalid(format!(
        "option '{key}' has bad value '{v}' (expected {accepted})"
    ))
}

/// Applies `key=value&...` to `o` through `table`.
fn parse_with<T>(
    o: &mut T,
    s: Option<&str>,
    table: &[OptionSpec<T>],
    generic: fn(&mut T, &str, &str) -> Result<bool>,
) -> Result<()> {
    for (k, v) in pairs(s.unwrap_or(""))? {
        if generic(o, k, v)? {
            continue;
        }
        let Some(spec) = table.iter().find(|spec| spec.key == k) else {
            let known: Vec<&str> = table.iter().map(|spec| spec.key).collect();
            return Err(Error::invalid(format!(
                "unknown option '{k}' (known: {})",
                known.join(", ")
            )));
        };
        spec.apply(o, v)?;
    }
    Ok(())
}

pub fn parse_connection_options(s: Option<&str>) -> Result<ConnectionOptions> {
    let mut o = ConnectionOptions::default();
    parse_with(&mut o, s, CONNECTION_OPTIONS, |_, _, _| Ok(false))?;
    if o.reconnect_delay_max < o.reconnect_delay {
        // A cap below the first delay would make the first delay meaningless.
        o.reconnect_delay_max = o.reconnect_delay;
    }
    Ok(o)
}

pub fn parse_queue_options(s: Option<&str>, conn: &ConnectionOptions) -> Result<QueueOptions> {
    let mut o = QueueOptions::defaults_for(conn);
    parse_with(&mut o, s, QUEUE_OPTIONS, args::parse_generic)?;
    args::check(&o)?;
    let retries_given = pairs(s.unwrap_or(""))?
        .iter()
        .any(|(k, _)| *k == "publish_retries");
    if o.queue_type == QueueType::Quorum && !retries_given {
        o.publish_retries = QUORUM_PUBLISH_RETRIES;
    }
    Ok(o)
}

/// A quorum queue nacks publishes while its members elect a new leader
/// (seconds, when the leader's node dies or is cut off: docs/cluster.md), so
/// it gets enough retries by default to outlast one: about 75 s with the
/// default backoff (reconnect_delay_ms 100 .. reconnect_delay_max_ms 5000).
pub const QUORUM_PUBLISH_RETRIES: u16 = 20;

/// Checks a queue, exchange or routing key name: at most 255 bytes, and no
/// control characters (RabbitMQ accepts "orders\r\n", but no tool, policy
/// pattern or other client names it back, so such a queue never works).
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long; AMQP allows at most {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(Error::invalid(format!(
            "{what} contains a control character (U+{:04X} at byte {at}); names must be \
             printable",
            u32::from(c)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_defaults_match_the_contract() {
        let o = parse_connection_options(None).unwrap();
        assert_eq!(o.reconnect_delay, Duration::from_millis(100));
        assert_eq!(o.reconnect_delay_max, Duration::from_millis(5000));
        assert_eq!(o.max_reconnects, 0);
        assert_eq!(o.max_buffered, 100_000);
        assert_eq!(o.max_buffered_bytes, 64 << 20);
        assert_eq!(o.max_message_bytes, 128 << 20);
        assert_eq!(parse_connection_options(Some("")).unwrap(), o);
    }

    #[test]
    fn a_quorum_queue_retries_nacks_longer_unless_told() {
        let conn = parse_connection_options(None).unwrap();
        let q = |s: &str| parse_queue_options(Some(s), &conn).unwrap().publish_retries;
        assert_eq!(q(""), 3);
        assert_eq!(q("queue_type=classic"), 3);
        assert_eq!(q("queue_type=quorum"), QUORUM_PUBLISH_RETRIES);
        assert_eq!(q("queue_type=quorum&publish_retries=3"), 3);
        assert_eq!(q("publish_retries=0&queue_type=quorum"), 0);
    }

    #[test]
    fn connection_options_parse() {
        let o = parse_connection_options(Some(
            "reconnect_delay_ms=5&reconnect_delay_max_ms=50&max_reconnects=3&max_buffered=7\
             &max_buffered_bytes=99&max_message_bytes=10",
        ))
        .unwrap();
        assert_eq!(o.reconnect_delay, Duration::from_millis(5));
        assert_eq!(o.reconnect_delay_max, Duration::from_millis(50));
        assert_eq!(o.max_reconnects, 3);
        assert_eq!(o.max_buffered, 7);
        assert_eq!(o.max_buffered_bytes, 99);
        assert_eq!(o.max_message_bytes, 10);
    }

    #[test]
    fn bad_connection_options_name_the_key() {
        for (s, needle) in [
            ("nope=1", "unknown option 'nope'"),
            ("max_buffered=0", "'max_buffered'"),
            ("max_buffered=-1", "'max_buffered'"),
            ("max_buffered=abc", "'max_buffered'"),
            ("max_reconnects", "has no value"),
            ("max_reconnects=1&max_reconnects=2", "twice"),
            ("max_message_bytes=999999999999", "'max_message_bytes'"),
        ] {
            let e = parse_connection_options(Some(s)).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidArgument, "{s}");
            assert!(e.message.contains(needle), "{s}: {}", e.message);
        }
    }

    #[test]
    fn queue_options_parse_and_inherit_limits() {
        let c = parse_connection_options(Some("max_buffered=5")).unwrap();
        let q = parse_queue_options(None, &c).unwrap();
        assert!(q.durable && q.persistent);
        assert_eq!(q.prefetch, 100);
        assert_eq!(q.max_buffered, 5);
        assert_eq!(q.exchange_type, "direct");
        let q = parse_queue_options(
            Some("durable=false&persistent=0&exchange_type=topic&prefetch=7&max_buffered=9"),
            &c,
        )
        .unwrap();
        assert!(!q.durable && !q.persistent);
        assert_eq!((q.prefetch, q.max_buffered), (7, 9));
        assert_eq!(q.exchange_type, "topic");
        assert!(parse_queue_options(Some("queue_type=quorum"), &c).is_ok());
        assert!(parse_queue_options(Some("queue_type=stream"), &c).is_ok());
        for bad in [
            "queue_type=lake",
            "exchange_type=weird",
            "prefetch=70000",
            "durable=maybe",
            "queue_type=quorum&durable=false",
            "colour=blue",
        ] {
            assert!(parse_queue_options(Some(bad), &c).is_err(), "{bad}");
        }
    }

    /// Each key's default text, parsed, gives the value the defaults have.
    #[test]
    fn table_defaults_are_the_real_defaults() {
        let defaults = ConnectionOptions::default();
        for spec in CONNECTION_OPTIONS {
            let OptionDefault::Text(text) = spec.default else {
                panic!("{}: a connection option needs a literal default", spec.key);
            };
            let parsed = parse_connection_options(Some(&format!("{}={text}", spec.key)));
            assert_eq!(parsed.as_ref(), Ok(&defaults), "{}", spec.key);
        }
        // A connection whose bounds differ from the defaults, so an
        // inherited default is told apart from a literal one.
        let conn = parse_connection_options(Some("max_buffered=7&max_buffered_bytes=9")).unwrap();
        let defaults = QueueOptions::defaults_for(&conn);
        for spec in QUEUE_OPTIONS {
            let text = match spec.default {
                OptionDefault::Text(text) => text.to_string(),
                OptionDefault::Connection => {
                    let c = CONNECTION_OPTIONS.iter().find(|c| c.key == spec.key);
                    assert!(c.is_some(), "{}: no connection option to inherit", spec.key);
                    match spec.key {
                        "max_buffered" => conn.max_buffered.to_string(),
                        "max_buffered_bytes" => conn.max_buffered_bytes.to_string(),
                        other => panic!("{other}: how does it inherit?"),
                    }
                }
                OptionDefault::Unset => continue,
            };
            let parsed = parse_queue_options(Some(&format!("{}={text}", spec.key)), &conn);
            assert_eq!(parsed.as_ref(), Ok(&defaults), "{}", spec.key);
        }
    }

    #[test]
    fn keys_are_unique_and_every_key_is_known_to_the_parser() {
        fn check<T>(table: &[OptionSpec<T>], parse: impl Fn(&str) -> Result<T>) {
            for (i, spec) in table.iter().enumerate() {
                assert!(
                    !table[..i].iter().any(|s| s.key == spec.key),
                    "{} twice",
                    spec.key
                );
                let e = parse(&format!("{}=\u{1}", spec.key)).err().expect(spec.key);
                assert_eq!(
                    e.message,
                    format!(
                        "option '{}' has bad value '\u{1}' (expected {})",
                        spec.key,
                        spec.accepted()
                    )
                );
            }
            let e = parse("nope=1").err().unwrap();
            let keys: Vec<_> = table.iter().map(|s| s.key).collect();
            assert_eq!(
                e.message,
                format!("unknown option 'nope' (known: {})", keys.join(", "))
            );
        }
        check(CONNECTION_OPTIONS, |s| parse_connection_options(Some(s)));
        let conn = ConnectionOptions::default();
        check(QUEUE_OPTIONS, |s| parse_queue_options(Some(s), &conn));
    }

    /// The header's doc comment of `function`, as one line of text.
    fn header_doc(function: &str) -> String {
        let header = include_str!("../../include/resilient_amqp.h");
        let at = header
            .find(&format!(" {function}("))
            .unwrap_or_else(|| panic!("{function} not in the header"));
        let start = header[..at].rfind("/*").unwrap();
        let end = header[start..].find("*/").unwrap() + start;
        header[start + 2..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn header_summaries_name_every_key_and_its_default() {
        fn check<T>(function: &str, table: &[OptionSpec<T>]) {
            let doc = header_doc(function);
            for spec in table {
                let wanted = format!("{} ({}", spec.key, spec.shown_default());
                assert!(
                    doc.contains(&wanted),
                    "{function}'s doc lacks '{wanted}': {doc}"
                );
            }
        }
        check("amqp_connect", CONNECTION_OPTIONS);
        check("amqp_queue_open", QUEUE_OPTIONS);
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name("queue name", &"q".repeat(255)).is_ok());
        assert!(check_name("queue name", &"q".repeat(256)).is_err());
    }
}
