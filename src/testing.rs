//! What the integration tests (tests/) need from inside the crate, and
//! nothing else: the C API is the library's interface.

pub use crate::client::address::{
    parse_uri, BrokerAddress, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEARTBEAT_S,
};
pub use crate::client::options::{
    parse_connection_options, parse_queue_options, ConnectionOptions, QueueOptions, QueueType,
    MAX_NAME_BYTES,
};
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
