//! The broker address: parsing of the AMQP URI, and what the engine needs
//! from it to connect. The password never reaches an error message or a log.

use crate::error::{Error, Result};
use crate::wire::{Credentials, SASLMechanism, Tls, TlsSettings, WireConfig};
use amq_protocol::uri::{AMQPScheme, AMQPUri};
use std::time::Duration;

/// The query parameters of `amqp://` URIs; `amqps://` takes the TLS ones too.
const QUERY_PARAMS: &[&str] = &[
    "heartbeat",
    "connection_timeout",
    "frame_max",
    "channel_max",
    "auth_mechanism",
];
const TLS_QUERY_PARAMS: &[&str] = &[
    "cacertfile",
    "certfile",
    "keyfile",
    "tls_insecure_skip_verify",
];

/// The heartbeat we ask for when the URI names none: a dead peer is noticed
/// within about two heartbeats.
pub const DEFAULT_HEARTBEAT_S: u16 = 10;
/// How long one connect attempt may take when the URI sets no `connection_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed broker address. The password stays in `uri` and never appears in
/// `display`, which is what errors and logs use.
#[derive(Clone, Debug)]
pub struct BrokerAddress {
    pub uri: AMQPUri,
    pub display: String,
    pub connect_timeout: Duration,
    /// TLS (amqps://), its files read and ready.
    pub(crate) tls: Option<Tls>,
}

impl BrokerAddress {
    /// What the engine needs to connect.
    /// `max_body`: the receive limit (the connection's max_message_bytes).
    pub(crate) fn wire_config(&self, max_body: u64) -> WireConfig {
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
            max_body,
            tls: self.tls.clone(),
        }
    }
}

pub fn parse_uri(s: &str) -> Result<BrokerAddress> {
    // Never echo `s`: it may hold a password.
    let url = url::Url::parse(s).map_err(|e| Error::invalid(format!("bad AMQP URI: {e}")))?;
    let tls = match url.scheme() {
        "amqp" => false,
        "amqps" => true,
        other => {
            return Err(Error::invalid(format!(
                "bad AMQP URI: scheme '{other}' (expected amqp:// or amqps://)"
            )))
        }
    };
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
    let tls_settings = query_params(&url, tls)?;
    let mut uri: AMQPUri = s.parse().map_err(|_| {
        Error::invalid("bad AMQP URI: a query parameter or percent-encoding is invalid")
    })?;
    debug_assert_eq!(matches!(uri.scheme, AMQPScheme::AMQPS), tls);
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
        "{}://{}@{}:{}/{}",
        url.scheme(),
        uri.authority.userinfo.username,
        host,
        uri.authority.port,
        vhost
    );
    let tls = match tls_settings {
        Some(settings) => {
            check_external(&uri, &settings)?;
            Some(Tls::new(&uri.authority.host, &settings).map_err(Error::invalid)?)
        }
        None if uri.query.auth_mechanism == Some(SASLMechanism::External) => {
            return Err(Error::invalid(
                "bad AMQP URI: auth_mechanism=external needs amqps:// with certfile= and \
                 keyfile= (the broker takes the user from the client certificate)",
            ))
        }
        None => None,
    };
    Ok(BrokerAddress {
        uri,
        display,
        connect_timeout,
        tls,
    })
}

/// Checks the query's keys; for amqps, the TLS settings (None for amqp://).
fn query_params(url: &url::Url, tls: bool) -> Result<Option<TlsSettings>> {
    let mut settings = TlsSettings::default();
    for (k, v) in url.query_pairs() {
        let k = k.as_ref();
        if QUERY_PARAMS.contains(&k) {
            continue;
        }
        if !TLS_QUERY_PARAMS.contains(&k) {
            let known = QUERY_PARAMS.iter().chain(TLS_QUERY_PARAMS).copied();
            return Err(Error::invalid(format!(
                "bad AMQP URI: unknown query parameter '{k}' (known: {})",
                known.collect::<Vec<_>>().join(", ")
            )));
        }
        if !tls {
            return Err(Error::invalid(format!(
                "bad AMQP URI: '{k}' is a TLS setting, for amqps:// URIs"
            )));
        }
        let v = v.into_owned();
        match k {
            "cacertfile" => settings.cacertfile = Some(v),
            "certfile" => settings.certfile = Some(v),
            "keyfile" => settings.keyfile = Some(v),
            _ => {
                settings.insecure_skip_verify = match v.as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" => false,
                    _ => {
                        return Err(Error::invalid(format!(
                            "bad AMQP URI: tls_insecure_skip_verify has bad value '{v}' \
                             (expected true or false)"
                        )))
                    }
                }
            }
        }
    }
    Ok(tls.then_some(settings))
}

/// EXTERNAL logs in with the client certificate: there must be one.
fn check_external(uri: &AMQPUri, settings: &TlsSettings) -> Result<()> {
    if uri.query.auth_mechanism == Some(SASLMechanism::External) && settings.certfile.is_none() {
        return Err(Error::invalid(
            "bad AMQP URI: auth_mechanism=external needs a client certificate (certfile= and \
             keyfile=)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "amqp://h/?cacertfile=/ca.pem",
            "amqps://h/?cacertfile=/nonexistent/ca.pem",
            "amqps://h/?auth_mechanism=external",
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
}
