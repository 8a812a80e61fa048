//! What the integration tests (tests/) need from inside the crate, and
//! nothing else: the C API is the library's interface.

pub use crate::client::address::{
    parse_uri, BrokerAddress, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEARTBEAT_S,
};
pub use crate::client::address_list::parse_addresses;
pub use crate::client::options::{
    parse_connection_options, parse_queue_options, ConnectionOptions, QueueOptions, QueueType,
    MAX_NAME_BYTES,
};
use crate::error::Result;
pub use crate::error::{Error, ErrorKind};
pub use crate::registry::Registry;
pub use crate::wire::probe::{parse_with_every_parser, ReaderProbe, PROBE_CONSUMER_TAG};

/// The publish window (messages sent ahead of their confirms) of a queue
/// with these settings, as the library picks it (RESILIENT_AMQP_WINDOW
/// included).
pub fn publish_window(durable: bool, persistent: bool, quorum: bool) -> u64 {
    let queue_type = if quorum {
        QueueType::Quorum
    } else {
        QueueType::Classic
    };
    let options = QueueOptions {
        durable,
        persistent,
        queue_type,
        ..QueueOptions::defaults_for(&ConnectionOptions::default())
    };
    crate::publish::window_limits(options.confirmed_after_disk_write()).0 as u64
}

/// The README's option tables as the option tables render them, by kind
/// (README.md has each between `<!-- options:KIND -->` markers).
pub fn readme_option_tables() -> [(&'static str, String); 2] {
    crate::client::options::readme_option_tables()
}

/// Tasks alive on the library's runtime (supervisors, sessions, connection
/// tasks), for leak checks; `None` when the runtime cannot start.
pub fn runtime_tasks() -> Option<usize> {
    crate::runtime::handle()
        .ok()
        .map(|h| h.metrics().num_alive_tasks())
}

/// The frame_max a fuzz input's first byte picks: even 4096, odd 131072.
pub fn fuzz_frame_max(first: u8) -> usize {
    if first & 1 == 0 {
        4096
    } else {
        131072
    }
}

/// One input of the `frames` fuzz target (fuzz/, tests/reader_fuzz.rs):
/// byte 0 picks frame_max, the rest goes through every codec parser.
/// Returns how many frames were whole.
pub fn run_frames_input(data: &[u8]) -> usize {
    match data.split_first() {
        Some((&first, rest)) => parse_with_every_parser(rest, fuzz_frame_max(first)),
        None => 0,
    }
}

/// One input of the `reader` fuzz target (fuzz/, tests/reader_fuzz.rs): a
/// [`ReaderProbe`] with channels 1..=3 is fed the bytes after the first two,
/// in chunks of 1..=64 bytes, or up to 16 KiB one time in four (sizes from a
/// xorshift32 seeded by byte 1); byte 0 picks frame_max. Feeding goes on
/// after an Err (the probe stays ended). None when the input is too short.
pub fn run_reader_input(data: &[u8]) -> Option<ReaderProbe> {
    let [first, seed, stream @ ..] = data else {
        return None;
    };
    let mut probe = ReaderProbe::new(fuzz_frame_max(*first), 3);
    let mut state = u32::from(*seed) | 0x100;
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let len = if state & 3 == 0 {
            1 + (state >> 8) as usize % 16384
        } else {
            1 + (state >> 8) as usize % 64
        };
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        let _ = probe.feed(chunk);
        rest = tail;
    }
    Some(probe)
}

/// How the engine reported a failed call, for tests (`wire::Failure`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireFailure {
    /// The broker refused on the channel (the connection stays).
    Refused { code: u16, text: String },
    /// The broker closed the connection (connection.close).
    ConnectionRefused { code: u16, text: String },
    /// The link failed.
    Link(String),
    /// The broker broke the protocol.
    Protocol(String),
}

impl From<crate::wire::Failure> for WireFailure {
    fn from(f: crate::wire::Failure) -> WireFailure {
        use crate::wire::Failure as F;
        match f {
            F::Refused { code, text } => WireFailure::Refused { code, text },
            F::ConnectionRefused { code, text } => WireFailure::ConnectionRefused { code, text },
            F::Link(t) => WireFailure::Link(t),
            F::Protocol(t) => WireFailure::Protocol(t),
        }
    }
}

/// Connects to `uri` with the engine alone (no supervisor), opens a
/// channel and declares `exchange` of type `kind`: what the declare's
/// future returned, and the channel's close reason after it.
pub fn wire_exchange_declare(
    uri: &str,
    exchange: &str,
    kind: &str,
) -> Result<(std::result::Result<(), WireFailure>, Option<WireFailure>)> {
    let config = parse_uri(uri)?.wire_config(1 << 20);
    let (exchange, kind) = (exchange.to_string(), kind.to_string());
    let run = async move {
        let conn = crate::wire::WireConnection::connect(&config, crate::wire::LinkReading::Runtime)
            .await?;
        let ch = conn.create_channel().await?;
        let declared = ch.exchange_declare(&exchange, &kind, false).await;
        let reason = ch.close_reason();
        conn.close(200, "test over").await;
        Ok::<_, crate::wire::Failure>((declared, reason))
    };
    match crate::runtime::block_on(run, std::time::Duration::from_secs(30))? {
        Ok((declared, reason)) => Ok((
            declared.map_err(WireFailure::from),
            reason.map(WireFailure::from),
        )),
        Err(f) => Err(Error::new(ErrorKind::Broker, format!("{f}"))),
    }
}

/// The channel_max a [`crate::wire::WireConnection`] to `uri` negotiates.
pub fn wire_channel_max(uri: &str) -> Result<u16> {
    let config = parse_uri(uri)?.wire_config(1 << 20);
    let run = async move {
        let conn = crate::wire::WireConnection::connect(&config, crate::wire::LinkReading::Runtime)
            .await?;
        let n = conn.channel_max();
        conn.close(200, "test over").await;
        Ok::<_, crate::wire::Failure>(n)
    };
    crate::runtime::block_on(run, std::time::Duration::from_secs(30))?
        .map_err(|f| Error::new(ErrorKind::Broker, format!("{f}")))
}
