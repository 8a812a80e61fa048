//! Parsing of the URI and of the `key=value&key=value` option strings.
//! Every rejection names the offending key, so `amqp_last_error` is useful.

use crate::error::{Error, Result};
use crate::wire::{Credentials, WireConfig};
use amq_protocol::uri::{AMQPScheme, AMQPUri};
use std::time::Duration;

/// The heartbeat we ask for when the URI names none: a dead peer is noticed
/// within about two heartbeats.
pub const DEFAULT_HEARTBEAT_S: u16 = 10;
/// How long one connect attempt may take when the URI sets no `connection_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// AMQP short strings (queue, exchange, routing key) are at most 255 bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// RabbitMQ refuses bodies above 512 MiB whatever its configuration.
pub const MAX_MESSAGE_BYTES_LIMIT: u64 = 512 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub reconnect_delay: Duration,
    pub reconnect_delay_max: Duration,
    /// Consecutive failed attempts before giving up for good; 0 = never.
    pub max_reconnects: u32,
    pub max_buffered: u64,
    pub max_buffered_bytes: u64,
    pub max_message_bytes: u64,
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
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    pub durable: bool,
    pub persistent: bool,
    /// Publish with the mandatory flag, so a message that reaches no queue
    /// (the queue was deleted by someone) comes back and the queue is
    /// declared again, instead of the broker confirming and dropping it.
    /// RabbitMQ 3.x then sends one more internal message per publish (queue
    /// to channel): 10-15% more broker CPU per durable message with a 256
    /// window, lost in the noise with the 1024 disk window.
    pub mandatory: bool,
    pub exchange_type: String,
    pub queue_type: QueueType,
    pub prefetch: u16,
    pub max_buffered: u64,
    pub max_buffered_bytes: u64,
}

impl QueueOptions {
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

fn parse_u64(key: &str, v: &str, min: u64, max: u64) -> Result<u64> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(Error::invalid(format!(
            "option '{key}' has bad value '{v}' (expected an integer from {min} to {max})"
        ))),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::invalid(format!(
            "option '{key}' has bad value '{v}' (expected true or false)"
        ))),
    }
}

const HOUR_MS: u64 = 3_600_000;

pub fn parse_connection_options(s: Option<&str>) -> Result<ConnectionOptions> {
    let mut o = ConnectionOptions::default();
    for (k, v) in pairs(s.unwrap_or(""))? {
        match k {
            "reconnect_delay_ms" => {
                o.reconnect_delay = Duration::from_millis(parse_u64(k, v, 0, HOUR_MS)?)
            }
            "reconnect_delay_max_ms" => {
                o.reconnect_delay_max = Duration::from_millis(parse_u64(k, v, 0, HOUR_MS)?)
            }
            "max_reconnects" => o.max_reconnects = parse_u64(k, v, 0, u32::MAX as u64)? as u32,
            "max_buffered" => o.max_buffered = parse_u64(k, v, 1, u32::MAX as u64)?,
            "max_buffered_bytes" => o.max_buffered_bytes = parse_u64(k, v, 1, u64::MAX >> 1)?,
            "max_message_bytes" => {
                o.max_message_bytes = parse_u64(k, v, 0, MAX_MESSAGE_BYTES_LIMIT)?
            }
            _ => return Err(unknown(k, CONNECTION_KEYS)),
        }
    }
    if o.reconnect_delay_max < o.reconnect_delay {
        // A cap below the first delay would make the first delay meaningless.
        o.reconnect_delay_max = o.reconnect_delay;
    }
    Ok(o)
}

const CONNECTION_KEYS: &str = "reconnect_delay_ms, reconnect_delay_max_ms, max_reconnects, \
     max_buffered, max_buffered_bytes, max_message_bytes";
const QUEUE_KEYS: &str = "durable, persistent, mandatory, exchange_type, queue_type, prefetch, \
     max_buffered, max_buffered_bytes";

fn unknown(k: &str, known: &str) -> Error {
    Error::invalid(format!("unknown option '{k}' (known: {known})"))
}

pub fn parse_queue_options(s: Option<&str>, conn: &ConnectionOptions) -> Result<QueueOptions> {
    let mut o = QueueOptions::defaults_for(conn);
    for (k, v) in pairs(s.unwrap_or(""))? {
        match k {
            "durable" => o.durable = parse_bool(k, v)?,
            "persistent" => o.persistent = parse_bool(k, v)?,
            "mandatory" => o.mandatory = parse_bool(k, v)?,
            "exchange_type" => {
                o.exchange_type = match v {
                    "direct" | "fanout" | "topic" | "headers" => v.to_string(),
                    // Plugin types such as x-delayed-message or x-consistent-hash.
                    _ if v.starts_with("x-") && v.len() <= MAX_NAME_BYTES => v.to_string(),
                    _ => {
                        return Err(Error::invalid(format!(
                            "option 'exchange_type' has bad value '{v}' \
                             (expected direct, fanout, topic, headers or x-...)"
                        )))
                    }
                }
            }
            "queue_type" => {
                o.queue_type = match v {
                    "classic" => QueueType::Classic,
                    "quorum" => QueueType::Quorum,
                    _ => {
                        return Err(Error::invalid(format!(
                            "option 'queue_type' has bad value '{v}' (expected classic or quorum)"
                        )))
                    }
                }
            }
            "prefetch" => o.prefetch = parse_u64(k, v, 0, u16::MAX as u64)? as u16,
            "max_buffered" => o.max_buffered = parse_u64(k, v, 1, u32::MAX as u64)?,
            "max_buffered_bytes" => o.max_buffered_bytes = parse_u64(k, v, 1, u64::MAX >> 1)?,
            _ => return Err(unknown(k, QUEUE_KEYS)),
        }
    }
    if o.queue_type == QueueType::Quorum && !o.durable {
        return Err(Error::invalid(
            "option 'queue_type=quorum' needs durable=true (quorum queues are always durable)",
        ));
    }
    Ok(o)
}

/// Checks a queue, exchange or routing key name.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long; AMQP allows at most {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

/// A parsed broker address. The password stays in `uri` and never appears in
/// `display`, which is what errors and logs use.
#[derive(Clone, Debug)]
pub struct BrokerAddress {
    pub uri: AMQPUri,
    pub display: String,
    pub connect_timeout: Duration,
}

impl BrokerAddress {
    /// What the engine needs to connect.
    pub(crate) fn wire_config(&self) -> WireConfig {
        let uri = &self.uri;
        WireConfig {
            host: uri.authority.host.clone(),
            port: uri.authority.port,
            vhost: uri.vhost.clone(),
            credentials: Credentials::from(uri.authority.userinfo.clone()),
            mechanism: uri.query.auth_mechanism.unwrap_or_default(),
            heartbeat: uri.query.heartbeat,
            frame_max: uri.query.frame_max,
            channel_max: uri.query.channel_max,
            connect_timeout: self.connect_timeout,
        }
    }
}

pub fn parse_uri(s: &str) -> Result<BrokerAddress> {
    // Never echo `s`: it may hold a password.
    let url = url::Url::parse(s).map_err(|e| Error::invalid(format!("bad AMQP URI: {e}")))?;
    match url.scheme() {
        "amqp" => {}
        "amqps" => {
            return Err(Error::invalid(
                "amqps:// needs TLS, which this build of resilient-amqp does not include",
            ))
        }
        other => {
            return Err(Error::invalid(format!(
                "bad AMQP URI: scheme '{other}' (expected amqp://)"
            )))
        }
    }
    if url.cannot_be_a_base() || url.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid("bad AMQP URI: no host"));
    }
    // An unencoded '/' in a password makes the rest of it look like a path
    // ("amqp://bob:12/ab@host/v"): refuse, or logs would show part of it.
    if url.path().contains('@') || url.query().is_some_and(|q| q.contains('@')) {
        return Err(Error::invalid(
            "bad AMQP URI: '@' after the host; percent-encode '/', '@' and ':' in the \
             user name and password",
        ));
    }
    for (k, _) in url.query_pairs() {
        if !matches!(
            k.as_ref(),
            "heartbeat" | "connection_timeout" | "frame_max" | "channel_max" | "auth_mechanism"
        ) {
            return Err(Error::invalid(format!(
                "bad AMQP URI: unknown query parameter '{k}' (known: heartbeat, \
                 connection_timeout, frame_max, channel_max, auth_mechanism)"
            )));
        }
    }
    let mut uri: AMQPUri = s.parse().map_err(|_| {
        Error::invalid("bad AMQP URI: a query parameter or percent-encoding is invalid")
    })?;
    debug_assert!(matches!(uri.scheme, AMQPScheme::AMQP));
    // amq-protocol-uri keeps only DNS names; IP literals would become "localhost".
    let host = url.host_str().unwrap_or_default();
    uri.authority.host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_S);
    }
    let connect_timeout = uri
        .query
        .connection_timeout
        .filter(|ms| *ms > 0)
        .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis);
    let vhost = if uri.vhost == "/" { "%2f" } else { &uri.vhost };
    let display = format!(
        "amqp://{}@{}:{}/{}",
        uri.authority.userinfo.username, host, uri.authority.port, vhost
    );
    Ok(BrokerAddress {
        uri,
        display,
        connect_timeout,
    })
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
        for bad in [
            "queue_type=stream",
            "exchange_type=weird",
            "prefetch=70000",
            "durable=maybe",
            "queue_type=quorum&durable=false",
            "colour=blue",
        ] {
            assert!(parse_queue_options(Some(bad), &c).is_err(), "{bad}");
        }
    }

    #[test]
    fn uri_parsing_keeps_ip_hosts_and_hides_passwords() {
        let a = parse_uri("amqp://bob:s3cret@127.0.0.1:5673/%2f").unwrap();
        assert_eq!(a.uri.authority.host, "127.0.0.1");
        assert_eq!(a.uri.authority.port, 5673);
        assert_eq!(a.uri.vhost, "/");
        assert_eq!(a.uri.query.heartbeat, Some(DEFAULT_HEARTBEAT_S));
        assert!(!a.display.contains("s3cret"), "{}", a.display);
        let a = parse_uri("amqp://u:p@[::1]:5672/v?heartbeat=4&connection_timeout=500").unwrap();
        assert_eq!(a.uri.authority.host, "::1");
        assert_eq!(a.uri.query.heartbeat, Some(4));
        assert_eq!(a.connect_timeout, Duration::from_millis(500));
        for bad in [
            "",
            "not a uri",
            "http://h/",
            "amqps://h/",
            "amqp://u:pw@h/?heartbeat=x",
            "amqp://h/?colour=1",
        ] {
            let e = parse_uri(bad).unwrap_err();
            assert!(!e.message.contains("pw"), "{}", e.message);
        }
        let e = parse_uri("amqp://u:hunter2@h:99999/").unwrap_err();
        assert!(!e.message.contains("hunter2"));
        // A password with an unencoded '/' must not turn into a logged path.
        let e = parse_uri("amqp://bob:1234/abc@host/v").unwrap_err();
        assert!(e.message.contains("percent-encode"), "{}", e.message);
        assert!(!e.message.contains("abc"), "{}", e.message);
        assert!(parse_uri("amqp://bob:1234%2Fabc@host/v").is_ok());
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name("queue name", &"q".repeat(255)).is_ok());
        assert!(check_name("queue name", &"q".repeat(256)).is_err());
    }
}
