//! One AMQP 0-9-1 connection, on the library's runtime.
//!
//! A single task per connection drives three loops: the reader
//! (`reader.rs`) parses every frame from a large read buffer and dispatches
//! it (confirms to the channel's publisher, deliveries straight to the
//! consumer's sink, replies to the waiting call); the writer (`output.rs`)
//! sends whatever frames were appended to the shared output while it was
//! busy, in one `write`; the heartbeat loop fills idle periods. The first
//! loop to end ends the connection.

use super::channel::WireChannel;
use super::codec;
use super::handshake::Stream;
use super::lazy_read::LazyReads;
use super::link_reader::{LinkReader, ReadHost};
use super::output::write_loop;
use super::reader::read_loop;
use super::shared::{ConnShared, LateReads, CLOSE_WAIT};
use super::socket::{HostedTcp, Sink, Source};
use super::{handshake, wrong_reply, Failure, WireConfig};
use amq_protocol::protocol::{channel, connection, AMQPClass};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A live connection; clones share it.
#[derive(Clone)]
pub struct WireConnection {
    shared: Arc<ConnShared>,
}

impl WireConnection {
    /// TCP connect (and TLS), handshake (SASL), tune, open the vhost; then
    /// the connection runs on its own task. Bounded by the connect timeout.
    /// `reading` says who reads a plain TCP link; TLS is read by the
    /// runtime as bytes arrive, whatever it says.
    pub async fn connect(
        config: &WireConfig,
        reading: LinkReading<'_>,
    ) -> Result<WireConnection, Failure> {
        let timeout = config.connect_timeout;
        let opened = match tokio::time::timeout(timeout, handshake::open(config)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Failure::Link(format!(
                    "connect timed out after {timeout:?}"
                )))
            }
        };
        let (leftover, heartbeat) = (opened.leftover, opened.heartbeat);
        let (channel_max, frame_max) = (opened.channel_max, opened.frame_max);
        let shared = match (opened.stream, reading) {
            (Stream::Tcp(tcp), reading @ (LinkReading::Host(_) | LinkReading::Lazy)) => {
                let (read, write) = hosted(tcp)?;
                let shared = Arc::new(ConnShared::new(
                    Some(write.clone()),
                    channel_max,
                    frame_max,
                    config.max_body,
                ));
                let cannot =
                    |e: std::io::Error| Failure::Link(format!("cannot read the link: {e}"));
                let coalesce = matches!(reading, LinkReading::Host(_));
                let reader = LinkReader::new(shared.clone(), read, &leftover, coalesce);
                match reading {
                    LinkReading::Host(host) => {
                        host.clone().attach(reader.clone()).map_err(cannot)?
                    }
                    _ => {
                        let lazy = LazyReads::start(reader.clone()).map_err(cannot)?;
                        let lazy: Arc<dyn LateReads> = lazy;
                        let _ = shared.lazy.set(Arc::downgrade(&lazy));
                    }
                }
                let reading = Reading::<Arc<tokio::net::TcpStream>>::Hosted(reader);
                tokio::spawn(drive(shared.clone(), reading, write, heartbeat));
                shared
            }
            (Stream::Tcp(tcp), LinkReading::Runtime) => {
                let stream = Arc::new(tcp);
                let shared = Arc::new(ConnShared::new(
                    Some(stream.clone()),
                    channel_max,
                    frame_max,
                    config.max_body,
                ));
                let reading = Reading::Loop(stream.clone(), leftover);
                tokio::spawn(drive(shared.clone(), reading, stream, heartbeat));
                shared
            }
            (Stream::Tls(tls), _) => {
                // The appending threads cannot write into a TLS session:
                // the writer loop does it all.
                let shared = Arc::new(ConnShared::new(
                    None,
                    channel_max,
                    frame_max,
                    config.max_body,
                ));
                let (source, sink) = tokio::io::split(*tls);
                let reading = Reading::Loop(source, leftover);
                tokio::spawn(drive(shared.clone(), reading, sink, heartbeat));
                shared
            }
        };
        Ok(WireConnection { shared })
    }

    /// Ends the connection now (its owner found it unusable, e.g. a task of
    /// its own panicked): everything on it fails with `why`.
    pub fn abandon(&self, why: &str) {
        self.shared.die(why.to_string());
        self.shared.stop.notify_one();
    }

    /// The connection ended because the broker broke the protocol (we
    /// closed it with 501-505).
    pub fn broke_protocol(&self) -> bool {
        self.shared
            .broken
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The channel limit agreed in tune-ok: channels 1..=this can be open.
    pub fn channel_max(&self) -> u16 {
        self.shared.channel_max
    }

    pub fn is_connected(&self) -> bool {
        !self.shared.is_dead()
    }

    /// Resolves when the connection is gone, with the reason.
    pub async fn lost(&self) -> String {
        let mut rx = self.shared.dead.subscribe();
        let why = match rx.wait_for(|d| d.is_some()).await {
            Ok(d) => d.clone().unwrap_or_default(),
            Err(_) => "connection closed".into(),
        };
        why
    }

    pub async fn create_channel(&self) -> Result<WireChannel, Failure> {
        let ch = WireChannel::new(self.shared.allocate_channel()?, self.shared.clone());
        let open = AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}));
        match ch.call(open).await {
            Ok(AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) => Ok(ch),
            Ok(other) => {
                self.shared.remove_channel(ch.id());
                Err(self.shared.abort(&wrong_reply(&other)))
            }
            Err(e) => {
                self.shared.remove_channel(ch.id());
                Err(e)
            }
        }
    }

    /// connection.close, waiting briefly for close-ok; then the task ends.
    pub async fn close(&self, code: u16, text: &str) {
        let close = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: code,
            reply_text: text.into(),
            class_id: 0,
            method_id: 0,
        }));
        if (self.shared.output).append(None, |o| codec::encode_method(o, 0, close)) {
            let _ = tokio::time::timeout(CLOSE_WAIT, self.lost()).await;
        }
        self.shared.stop.notify_one();
        let _ = tokio::time::timeout(CLOSE_WAIT, self.lost()).await;
    }
}

/// The socket taken from the runtime for a host: the reader's descriptor,
/// and the writer's, which the runtime watches for writability alone.
fn hosted(tcp: tokio::net::TcpStream) -> Result<(std::net::TcpStream, Arc<HostedTcp>), Failure> {
    let fail = |e: std::io::Error| Failure::Link(format!("cannot hand the link over: {e}"));
    let std = tcp.into_std().map_err(fail)?;
    let read = std.try_clone().map_err(fail)?;
    // SAFETY: the std stream owns its descriptor, which the AsyncFd owns
    // with it until dropped.
    let write = unsafe { AsyncFd::register_with_interest(std, Interest::WRITABLE) }
        .map_err(|e| Failure::Link(format!("cannot hand the link over: {e}")))?;
    Ok((read, Arc::new(write)))
}

/// Who reads a plain TCP link.
#[derive(Clone, Copy)]
pub(crate) enum LinkReading<'a> {
    /// The runtime, as bytes arrive.
    Runtime,
    /// The runtime, and the publishing threads, confirms late
    /// (`lazy_read`): the publish link.
    Lazy,
    /// A host's threads (`link_reader`): the consume link.
    Host(&'a Arc<dyn ReadHost>),
}

/// Who reads the link: the connection's task (`read_loop`), or a host.
enum Reading<S> {
    Loop(S, Vec<u8>),
    Hosted(Arc<LinkReader>),
}

impl<S: Source> Reading<S> {
    async fn run(self, shared: &ConnShared) -> String {
        match self {
            Reading::Loop(source, leftover) => read_loop(shared, source, leftover).await,
            Reading::Hosted(reader) => {
                // Stops the host's reading however this future ends.
                let _stop = StopOnDrop(&reader);
                reader.ended().await
            }
        }
    }
}

struct StopOnDrop<'a>(&'a LinkReader);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The connection's task: reader, writer and heartbeats until one ends.
async fn drive(
    shared: Arc<ConnShared>,
    reading: Reading<impl Source>,
    sink: impl Sink,
    heartbeat: Option<Duration>,
) {
    // However this task ends, a panic included, the connection is marked
    // dead, so the supervisor reconnects rather than waiting on a zombie.
    let _dead_on_exit = DieOnExit(shared.clone());
    let mut writer = std::pin::pin!(write_loop(&shared.output, sink));
    let mut writer_done = false;
    let why = tokio::select! {
        why = reading.run(&shared) => why,
        why = &mut writer => {
            writer_done = true;
            why
        }
        why = heartbeat_loop(&shared, heartbeat) => why,
        _ = shared.stop.notified() => "connection closed".to_string(),
    };
    // Flush what is queued (a close-ok) before the socket goes. A writer that
    // already ended (a failed write: the broker went first) must not be
    // polled again: an async fn polled after completion panics.
    shared.output.close();
    if !writer_done {
        let _ = tokio::time::timeout(Duration::from_millis(200), &mut writer).await;
    }
    // The last reference to the socket goes with the reader and writer.
    shared.output.release_stream();
    shared.die(why);
}

/// Marks the connection dead when the connection task ends without doing it
/// itself (only a bug can do that: a panic).
struct DieOnExit(Arc<ConnShared>);

impl Drop for DieOnExit {
    fn drop(&mut self) {
        if !self.0.is_dead() {
            let why = "internal error: the connection task ended unexpectedly";
            error!("{why}; reconnecting");
            self.0.output.release_stream();
            self.0.die(why.to_string());
        }
    }
}

async fn heartbeat_loop(shared: &ConnShared, heartbeat: Option<Duration>) -> String {
    let Some(h) = heartbeat else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(h / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The broker sends a heartbeat every interval/2 when idle; three ticks (1.5-2
    // intervals at the least) of silence mean the link is dead.
    let mut quiet_ticks = 0u32;
    loop {
        tick.tick().await;
        if !shared.output.take_wrote() {
            shared.output.append(None, codec::encode_heartbeat);
        }
        if shared.read_recently.swap(false, Ordering::Relaxed) {
            quiet_ticks = 0;
        } else {
            quiet_ticks += 1;
            if quiet_ticks >= 3 {
                return "missed heartbeats from the broker".into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected socket pair on loopback (the peer end is returned to
    /// keep it open).
    use tokio::net::TcpStream;

    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, peer) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (ours.unwrap(), peer.unwrap().0)
    }

    #[tokio::test]
    async fn the_connection_dies_cleanly_when_the_writer_ends_first() {
        // The writer ends before the reader (here: output closed while the
        // peer stays silent; live: a write fails as the broker goes). The
        // connection task must still end and mark the connection dead, not
        // poll the finished writer again (that panicked and left a zombie
        // connection that looked connected).
        let (ours, _peer) = socket_pair().await;
        let stream = Arc::new(ours);
        let shared = Arc::new(ConnShared::new(Some(stream.clone()), 16, 4096, 1 << 20));
        let reading = Reading::Loop(stream.clone(), Vec::new());
        let task = tokio::spawn(drive(shared.clone(), reading, stream, None));
        shared.output.close();
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        let joined = ended.expect("the connection task ends");
        assert!(joined.is_ok(), "the connection task panicked: {joined:?}");
        assert_eq!(
            shared.dead.borrow().as_deref(),
            Some("connection closed"),
            "marked dead with the writer's reason"
        );
    }
}
