//! Opening a connection: TCP connect (and the TLS handshake for amqps), the
//! protocol header, then connection.start / start-ok (SASL), tune / tune-ok
//! and open / open-ok, before the connection's own task runs.

use super::codec;
use super::{unexpected, Failure, WireConfig};
use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// We propose this frame size; RabbitMQ's default is the same.
const CLIENT_FRAME_MAX: u32 = 131_072;
/// The channel limit we propose (never above the broker's) unless the URI's
/// `channel_max` says otherwise; RabbitMQ's default is the same.
pub(crate) const DEFAULT_CHANNEL_MAX: u16 = 2047;

/// The connected socket: plain TCP, or TLS over it.
pub(super) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection that is open, and what was agreed in tune-ok.
pub(super) struct Opened {
    pub(super) stream: Stream,
    /// Bytes read after open-ok (frames the reader must see).
    pub(super) leftover: Vec<u8>,
    pub(super) channel_max: u16,
    pub(super) frame_max: usize,
    pub(super) heartbeat: Option<Duration>,
}

fn io(e: std::io::Error) -> Failure {
    Failure::Link(super::tls::io_error(&e))
}

/// Connects (TCP, then TLS for amqps) and opens the vhost. Not bounded in
/// time: the caller is.
pub(super) async fn open(config: &WireConfig) -> Result<Opened, Failure> {
    let tcp = tcp_connect(config).await?;
    match &config.tls {
        None => amqp_open(config, tcp, Stream::Tcp).await,
        Some(tls) => {
            let peer = format!("{}:{}", config.host, config.port);
            let stream = tls.connect(tcp, &peer).await?;
            let opened = amqp_open(config, stream, |s| Stream::Tls(Box::new(s))).await;
            opened.map_err(|f| tls.explain_lost_link(f))
        }
    }
}

/// The AMQP handshake on a connected socket of either kind.
async fn amqp_open<S: AsyncRead + AsyncWrite + Unpin>(
    config: &WireConfig,
    mut stream: S,
    wrap: impl FnOnce(S) -> Stream,
) -> Result<Opened, Failure> {
    stream.write_all(codec::PROTOCOL_HEADER).await.map_err(io)?;
    let mut hs = Handshake {
        stream,
        buf: Vec::with_capacity(4096),
    };
    use connection::AMQPMethod as M;
    let start = match hs.method().await? {
        AMQPClass::Connection(M::Start(s)) => s,
        other => return Err(unexpected(&other)),
    };
    let start_ok = start_ok(config, &start)?;
    hs.send(AMQPClass::Connection(M::StartOk(start_ok))).await?;
    let tune = match hs.method().await? {
        AMQPClass::Connection(M::Tune(t)) => t,
        other => return Err(unexpected(&other)),
    };
    let tune_ok = negotiate(config, &tune);
    hs.send(AMQPClass::Connection(M::TuneOk(tune_ok.clone())))
        .await?;
    let open = connection::Open {
        virtual_host: config.vhost.as_str().into(),
    };
    hs.send(AMQPClass::Connection(M::Open(open))).await?;
    match hs.method().await? {
        AMQPClass::Connection(M::OpenOk(_)) => {}
        other => return Err(unexpected(&other)),
    }
    let heartbeat = tune_ok.heartbeat;
    Ok(Opened {
        stream: wrap(hs.stream),
        leftover: hs.buf,
        channel_max: tune_ok.channel_max,
        frame_max: tune_ok.frame_max as usize,
        heartbeat: (heartbeat > 0).then(|| Duration::from_secs(u64::from(heartbeat))),
    })
}

async fn tcp_connect(config: &WireConfig) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect((config.host.as_str(), config.port))
        .await
        .map_err(io)?;
    // With the broker down, a connect to a port in the ephemeral range can
    // be given that very port and connect to itself.
    let own = stream.local_addr().ok();
    if own.is_some() && own == stream.peer_addr().ok() {
        #[allow(deprecated)] // zero linger: leave no TIME_WAIT on the broker's port
        let _ = stream.set_linger(Some(Duration::ZERO));
        return Err(Failure::Link(
            "connection refused (the socket connected to itself)".into(),
        ));
    }
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Our SASL answer, if the broker offers our mechanism.
fn start_ok(
    config: &WireConfig,
    start: &connection::Start,
) -> Result<connection::StartOk, Failure> {
    let mechanism = config.mechanism;
    let offered = String::from_utf8_lossy(start.mechanisms.as_bytes()).to_string();
    if !offered.split(' ').any(|m| m == mechanism.name()) {
        return Err(Failure::ConnectionRefused {
            code: 403,
            text: format!(
                "the broker does not offer SASL mechanism {} (it offers: {offered})",
                mechanism.name()
            ),
        });
    }
    Ok(connection::StartOk {
        client_properties: client_properties(),
        mechanism: mechanism.name().into(),
        response: config.credentials.sasl_auth_string(mechanism),
        locale: "en_US".into(),
    })
}

/// Our limits where we set them (never above the broker's), else the
/// broker's (0: unlimited, then our default).
fn negotiate(config: &WireConfig, tune: &connection::Tune) -> connection::TuneOk {
    let pick = |ours: Option<u32>, theirs: u32, default: u32| match (ours, theirs) {
        (Some(o), 0) if o > 0 => o,
        (Some(o), t) if o > 0 => o.min(t),
        (_, 0) => default,
        (_, t) => t,
    };
    let channel_max = pick(
        Some(u32::from(config.proposed_channel_max())),
        u32::from(tune.channel_max),
        u32::from(DEFAULT_CHANNEL_MAX),
    ) as u16;
    let frame_max = pick(
        config.frame_max.or(Some(CLIENT_FRAME_MAX)),
        tune.frame_max,
        CLIENT_FRAME_MAX,
    )
    .max(4096);
    connection::TuneOk {
        channel_max,
        frame_max,
        heartbeat: config.heartbeat.unwrap_or(tune.heartbeat),
    }
}

fn client_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut t = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    t.insert("product".into(), s("resilient-amqp"));
    t.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    t.insert("platform".into(), s("Rust"));
    t.insert("connection_name".into(), s("resilient-amqp"));
    t.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    t
}

/// Method frames in and out on channel 0, before the connection's task runs.
struct Handshake<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Handshake<S> {
    async fn method(&mut self) -> Result<AMQPClass, Failure> {
        loop {
            match codec::parse_frame(&self.buf, CLIENT_FRAME_MAX as usize) {
                Ok((f, n)) => {
                    let parsed = (f.kind == codec::FRAME_METHOD && f.channel == 0)
                        .then(|| codec::parse_method(f.payload));
                    self.buf.drain(..n);
                    match parsed {
                        Some(Ok(m)) => return Ok(m),
                        Some(Err(v)) => {
                            return Err(Failure::Protocol(format!(
                                "protocol error by the broker during the handshake: {v}"
                            )))
                        }
                        None => continue, // heartbeat
                    }
                }
                Err(codec::ParseError::Incomplete(_)) => {}
                Err(codec::ParseError::HugeHeader { total, .. }) => {
                    return Err(Failure::Protocol(format!(
                        "protocol error by the broker during the handshake: a content header \
                         of {total} bytes"
                    )))
                }
                Err(codec::ParseError::Invalid(e)) => {
                    // A broker speaking another protocol version answers
                    // with its own header.
                    return Err(Failure::Link(format!("not an AMQP 0-9-1 broker: {e}")));
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) => {
                    return Err(Failure::Link(
                        "the broker closed the connection during the handshake".into(),
                    ))
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(io(e)),
            }
        }
    }

    async fn send(&mut self, m: AMQPClass) -> Result<(), Failure> {
        let mut out = Vec::new();
        codec::encode_method(&mut out, 0, m);
        self.stream.write_all(&out).await.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(channel_max: Option<u16>) -> WireConfig {
        WireConfig {
            host: "h".into(),
            port: 1,
            vhost: "/".into(),
            credentials: crate::wire::Credentials::default(),
            mechanism: Default::default(),
            heartbeat: None,
            frame_max: None,
            channel_max,
            connect_timeout: Duration::from_secs(1),
            max_body: 1,
            tls: None,
        }
    }

    fn agreed(ours: Option<u16>, theirs: u16) -> u16 {
        let tune = connection::Tune {
            channel_max: theirs,
            frame_max: 131_072,
            heartbeat: 10,
        };
        negotiate(&config(ours), &tune).channel_max
    }

    #[test]
    fn channel_max_is_the_smaller_of_the_broker_and_2047_or_the_uri() {
        assert_eq!(agreed(None, 2047), 2047);
        assert_eq!(agreed(None, 65535), 2047);
        assert_eq!(agreed(None, 0), 2047);
        assert_eq!(agreed(None, 100), 100);
        assert_eq!(agreed(Some(20), 2047), 20);
        assert_eq!(agreed(Some(4000), 65535), 4000);
        assert_eq!(agreed(Some(4000), 2047), 2047);
        assert_eq!(agreed(Some(0), 65535), 2047);
        assert_eq!(config(Some(20)).proposed_channel_max(), 20);
        assert_eq!(config(None).proposed_channel_max(), 2047);
        assert_eq!(config(Some(0)).proposed_channel_max(), 2047);
    }
}
