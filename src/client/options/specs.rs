//! The option tables: every key of `amqp_connect` and `amqp_queue_open`,
//! its default, what it accepts and what it means (the README's tables are
//! rendered from these).

use super::*;

/// The options of `amqp_connect`.
pub(crate) const CONNECTION_OPTIONS: &[OptionSpec<ConnectionOptions>] = &[
    OptionSpec {
        key: "reconnect_delay_ms",
        default: OptionDefault::Text("100"),
        doc: "first reconnect delay",
        value: Value::Int {
            min: 0,
            max: HOUR_MS,
            bytes: false,
            set: |o, n| o.reconnect_delay = Duration::from_millis(n),
        },
    },
    OptionSpec {
        key: "reconnect_delay_max_ms",
        default: OptionDefault::Text("5000"),
        doc: "backoff cap (exponential, with jitter in the upper half)",
        value: Value::Int {
            min: 0,
            max: HOUR_MS,
            bytes: false,
            set: |o, n| o.reconnect_delay_max = Duration::from_millis(n),
        },
    },
    OptionSpec {
        key: "max_reconnects",
        default: OptionDefault::Text("0"),
        doc: "consecutive failed attempts before giving up for good; 0 = never",
        value: Value::Int {
            min: 0,
            max: u32::MAX as u64,
            bytes: false,
            set: |o, n| o.max_reconnects = n as u32,
        },
    },
    OptionSpec {
        key: "max_buffered",
        default: OptionDefault::Text("100000"),
        doc: "messages held per queue (waiting + unconfirmed)",
        value: Value::Int {
            min: 1,
            max: MAX_BUFFERED_LIMIT,
            bytes: false,
            set: |o, n| o.max_buffered = n,
        },
    },
    OptionSpec {
        key: "max_buffered_bytes",
        default: OptionDefault::Text("67108864"),
        doc: "body bytes held per queue",
        value: Value::Int {
            min: 1,
            max: MAX_BUFFERED_BYTES_LIMIT,
            bytes: true,
            set: |o, n| o.max_buffered_bytes = n,
        },
    },
    OptionSpec {
        key: "max_message_bytes",
        default: OptionDefault::Text("134217728"),
        doc: "largest body accepted",
        value: Value::Int {
            min: 0,
            max: MAX_MESSAGE_BYTES_LIMIT,
            bytes: true,
            set: |o, n| o.max_message_bytes = n,
        },
    },
];

/// The options of `amqp_queue_open`.
pub(crate) const QUEUE_OPTIONS: &[OptionSpec<QueueOptions>] = &[
    OptionSpec {
        key: "durable",
        default: OptionDefault::Text("true"),
        doc: "durable queue (and exchange)",
        value: Value::Bool {
            set: |o, b| o.durable = b,
        },
    },
    OptionSpec {
        key: "persistent",
        default: OptionDefault::Text("true"),
        doc: "messages with delivery mode 2",
        value: Value::Bool {
            set: |o, b| o.persistent = b,
        },
    },
    OptionSpec {
        key: "mandatory",
        default: OptionDefault::Text("true"),
        doc: "publish with the mandatory flag, so a deleted queue is noticed and declared again \
              (see Guarantees); `false` saves the broker some work per message (RabbitMQ 3.x) \
              but lets it confirm and drop messages while the queue is gone",
        value: Value::Bool {
            set: |o, b| o.mandatory = b,
        },
    },
    OptionSpec {
        key: "exchange_type",
        default: OptionDefault::Text("direct"),
        doc: "the exchange's type (a plugin type such as x-delayed-message is `x-...`)",
        value: Value::Word {
            words: &["direct", "fanout", "topic", "headers", "x-..."],
            set: |o, w| o.exchange_type = w.to_string(),
        },
    },
    OptionSpec {
        key: "queue_type",
        default: OptionDefault::Text("classic"),
        doc: "the queue's type (quorum needs durable=true)",
        value: Value::Word {
            words: &["classic", "quorum"],
            set: |o, w| {
                o.queue_type = match w {
                    "quorum" => QueueType::Quorum,
                    _ => QueueType::Classic,
                }
            },
        },
    },
    OptionSpec {
        key: "prefetch",
        default: OptionDefault::Text("100"),
        doc: "unacknowledged deliveries per consumer (basic.qos)",
        value: Value::Int {
            min: 0,
            max: u16::MAX as u64,
            bytes: false,
            set: |o, n| o.prefetch = n as u16,
        },
    },
    OptionSpec {
        key: "invalid_disposition",
        default: OptionDefault::Text("requeue"),
        doc: "what a callback's return value that is no amqp_disposition does (counted in invalid_dispositions)",
        value: Value::Word {
            words: &["requeue", "reject"],
            set: |o, w| o.invalid_disposition_rejects = w == "reject",
        },
    },
    OptionSpec {
        key: "publish_retries",
        default: OptionDefault::Text("3"),
        doc: "times a message nacked by the broker is sent again (after a backoff from \
              reconnect_delay_ms to reconnect_delay_max_ms); one more nack fails it \
              (report AMQP_REPORT_NACKED)",
        value: Value::Int {
            min: 0,
            max: 1000,
            bytes: false,
            set: |o, n| o.publish_retries = n as u16,
        },
    },
    OptionSpec {
        key: "publish_timeout_ms",
        default: OptionDefault::Text("0"),
        doc: "a message not confirmed this long after amqp_publish fails (report \
              AMQP_REPORT_EXPIRED; it may still have reached the queue); 0 = no limit",
        value: Value::Int {
            min: 0,
            max: 24 * HOUR_MS,
            bytes: false,
            set: |o, n| o.publish_timeout_ms = n,
        },
    },
    OptionSpec {
        key: "topology_check_ms",
        default: OptionDefault::Text("5000"),
        doc: "how often a passive declare checks that the queue still exists while connected \
              (a deleted queue is declared again even when no publish comes back; see \
              Guarantees); 0 = never",
        value: Value::Int {
            min: 0,
            max: HOUR_MS,
            bytes: false,
            set: |o, n| o.topology_check = (n > 0).then(|| Duration::from_millis(n)),
        },
    },
    OptionSpec {
        key: "max_buffered",
        default: OptionDefault::Connection,
        doc: "this queue's bound on messages held",
        value: Value::Int {
            min: 1,
            max: MAX_BUFFERED_LIMIT,
            bytes: false,
            set: |o, n| o.max_buffered = n,
        },
    },
    OptionSpec {
        key: "max_buffered_bytes",
        default: OptionDefault::Connection,
        doc: "this queue's bound on body bytes held",
        value: Value::Int {
            min: 1,
            max: MAX_BUFFERED_BYTES_LIMIT,
            bytes: true,
            set: |o, n| o.max_buffered_bytes = n,
        },
    },
];
