//! The option tables: every key of `amqp_connect` and `amqp_queue_open`,
//! its default, what it accepts and what it means (the README's tables are
//! rendered from these).

use super::*;
use crate::consume::MAX_DEDUPE;

/// The largest integer a named argument option takes.
const MAX_ARG_INT: u64 = i64::MAX as u64;

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
    OptionSpec {
        key: "inline_delivery",
        default: OptionDefault::Text("true"),
        doc: "true: the callback threads read the consume link (plain TCP) and run each \
              callback on the thread its bytes woke: lower latency and CPU per delivery, \
              one thread more; false: the network thread reads it and hands deliveries \
              over (docs/DESIGN.md)",
        value: Value::Bool {
            set: |o, b| o.inline_delivery = b,
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
        doc: "the queue's type, sent as x-queue-type unless classic (quorum and stream need \
              durable=true; a stream also a prefetch above 0, and its consumers start at \
              `consumer_arg.x-stream-offset`, by default `next`)",
        value: Value::Word {
            words: &["classic", "quorum", "stream"],
            set: |o, w| {
                o.queue_type = match w {
                    "quorum" => QueueType::Quorum,
                    "stream" => QueueType::Stream,
                    _ => QueueType::Classic,
                }
            },
        },
    },
    OptionSpec {
        key: "passive",
        default: OptionDefault::Text("false"),
        doc: "use a queue someone else declared, whatever its arguments: only check that it \
              exists (a missing queue is AMQP_ERR_BROKER 404 at open, retried after a \
              reconnect, and a queue deleted later fails like a refused one); declare nothing on \
              it (an exchange given is still declared, and the queue bound to it)",
        value: Value::Bool {
            set: |o, b| o.passive = b,
        },
    },
    OptionSpec {
        key: "exclusive",
        default: OptionDefault::Text("false"),
        doc: "the connection's own queue, deleted with it: declared again after a reconnect \
              (a 405 RESOURCE_LOCKED while the old one lingers is retried with backoff), and \
              its consumers run on the publish link (see Guarantees); a server-named queue \
              (name \"\") is always exclusive",
        value: Value::Bool {
            set: |o, b| o.exclusive = b,
        },
    },
    OptionSpec {
        key: "auto_delete",
        default: OptionDefault::Text("false"),
        doc: "the broker deletes the queue when its last consumer is cancelled",
        value: Value::Bool {
            set: |o, b| o.auto_delete = b,
        },
    },
    OptionSpec {
        key: "message_ttl_ms",
        default: OptionDefault::Unset,
        doc: "x-message-ttl: messages older than this are dropped (or dead-lettered)",
        value: Value::Int {
            min: 0,
            max: u32::MAX as u64,
            bytes: false,
            set: |o, n| args::set_arg(&mut o.arguments, "x-message-ttl", ArgValue::Int(n as i64)),
        },
    },
    OptionSpec {
        key: "expires_ms",
        default: OptionDefault::Unset,
        doc: "x-expires: the queue is deleted after this long unused",
        value: Value::Int {
            min: 1,
            max: u32::MAX as u64,
            bytes: false,
            set: |o, n| args::set_arg(&mut o.arguments, "x-expires", ArgValue::Int(n as i64)),
        },
    },
    OptionSpec {
        key: "max_length",
        default: OptionDefault::Unset,
        doc: "x-max-length: messages the queue holds (then `overflow`)",
        value: Value::Int {
            min: 0,
            max: MAX_ARG_INT,
            bytes: false,
            set: |o, n| args::set_arg(&mut o.arguments, "x-max-length", ArgValue::Int(n as i64)),
        },
    },
    OptionSpec {
        key: "max_length_bytes",
        default: OptionDefault::Unset,
        doc: "x-max-length-bytes: body bytes the queue holds (then `overflow`)",
        value: Value::Int {
            min: 0,
            max: MAX_ARG_INT,
            bytes: true,
            set: |o, n| {
                args::set_arg(&mut o.arguments, "x-max-length-bytes", ArgValue::Int(n as i64))
            },
        },
    },
    OptionSpec {
        key: "overflow",
        default: OptionDefault::Unset,
        doc: "x-overflow: what a full queue does (RabbitMQ's default drop-head; reject-publish \
              nacks, so messages fail after publish_retries as AMQP_REPORT_NACKED)",
        value: Value::Word {
            words: &["drop-head", "reject-publish", "reject-publish-dlx"],
            set: |o, w| args::set_arg(&mut o.arguments, "x-overflow", ArgValue::Str(w.into())),
        },
    },
    OptionSpec {
        key: "dead_letter_exchange",
        default: OptionDefault::Unset,
        doc: "x-dead-letter-exchange: where rejected, expired and dropped messages go",
        value: Value::Name {
            set: |o, w| {
                let v = ArgValue::Str(w.into());
                args::set_arg(&mut o.arguments, "x-dead-letter-exchange", v)
            },
        },
    },
    OptionSpec {
        key: "dead_letter_routing_key",
        default: OptionDefault::Unset,
        doc: "x-dead-letter-routing-key: their routing key there (default: their own)",
        value: Value::Name {
            set: |o, w| {
                let v = ArgValue::Str(w.into());
                args::set_arg(&mut o.arguments, "x-dead-letter-routing-key", v)
            },
        },
    },
    OptionSpec {
        key: "max_priority",
        default: OptionDefault::Unset,
        doc: "x-max-priority: a priority queue with priorities 0 to this",
        value: Value::Int {
            min: 1,
            max: 255,
            bytes: false,
            set: |o, n| args::set_arg(&mut o.arguments, "x-max-priority", ArgValue::Int(n as i64)),
        },
    },
    OptionSpec {
        key: "single_active_consumer",
        default: OptionDefault::Unset,
        doc: "x-single-active-consumer: one consumer at a time gets the messages, the others \
              wait as standbys",
        value: Value::Bool {
            set: |o, b| {
                args::set_arg(&mut o.arguments, "x-single-active-consumer", ArgValue::Bool(b))
            },
        },
    },
    OptionSpec {
        key: "consumer_name",
        default: OptionDefault::Unset,
        doc: "consumer tags NAME-<n> (n counts the queue's broker consumers from 0), so an \
              operator tells consumers apart in the management UI; unset: \
              resilient-amqp.<queue id>.<n>",
        value: Value::Name {
            set: |o, w| o.consumer_name = Some(w.to_string()),
        },
    },
    OptionSpec {
        key: "consumer_priority",
        default: OptionDefault::Unset,
        doc: "x-priority of the queue's consumers (the broker's default 0; a negative one: \
              `consumer_arg.x-priority=int:-1`)",
        value: Value::Int {
            min: 0,
            max: i32::MAX as u64,
            bytes: false,
            set: |o, n| {
                args::set_arg(&mut o.consumer_arguments, "x-priority", ArgValue::Int(n as i64))
            },
        },
    },
    OptionSpec {
        key: "consumer_exclusive",
        default: OptionDefault::Text("false"),
        doc: "exclusive consumers: no other consumer may use the queue (then amqp_consume's \
              repeat must be 1; another client's consumer is refused with 403)",
        value: Value::Bool {
            set: |o, b| o.consumer_exclusive = b,
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
        key: "dedupe",
        default: OptionDefault::Text("0"),
        doc: "duplicate suppression on consume: remembers the message_id of the last N \
              deliveries this queue handle acked (a callback's AMQP_ACK, amqp_settle); a delivery \
              whose message_id is among them is acked without reaching the callback or \
              amqp_poll, counted in `deduplicated`. Deliveries without a message_id always \
              reach you; ids acked by another consumer, process or before a restart are not \
              known (docs/DEDUPE.md). About 100 bytes plus the id's length per id; 0 = off",
        value: Value::Int {
            min: 0,
            max: MAX_DEDUPE,
            bytes: false,
            set: |o, n| o.dedupe = n,
        },
    },
    OptionSpec {
        key: "auto_message_id",
        default: OptionDefault::Text("false"),
        doc: "every message published on this queue handle without a message_id (amqp_publish \
              too) gets a unique one: 32 hex digits read from /dev/urandom when the queue is \
              opened, a dash and a count in hex (up to 49 bytes), unique across processes and \
              restarts; for `dedupe` on the consuming side. A plain publish then carries \
              properties (docs/DEDUPE.md: its cost)",
        value: Value::Bool {
            set: |o, b| o.auto_message_id = b,
        },
    },
    OptionSpec {
        key: "spool_dir",
        default: OptionDefault::Text(""),
        doc: "a directory (created if missing) where every message amqp_publish accepts on this \
              queue handle is written before the call returns, and forgotten once confirmed or \
              failed; a later amqp_queue_open with the same directory sends what was never \
              confirmed first, in order. One queue handle per directory (a second is refused: \
              AMQP_ERR_INVALID_ARGUMENT). Empty = no spool (docs/SPOOL.md)",
        value: Value::Name {
            set: |o, v| o.spool_dir = v.to_string(),
        },
    },
    OptionSpec {
        key: "spool_sync",
        default: OptionDefault::Text("batch"),
        doc: "when spooled messages reach the disk: always = fdatasync before amqp_publish \
              returns (survives a power cut); batch = fdatasync every 10 ms (a power cut loses \
              at most the last ~10 ms); none = the kernel's page cache only (survives the \
              process's death, not a power cut)",
        value: Value::Word {
            words: &["always", "batch", "none"],
            set: |o, w| {
                o.spool_sync = match w {
                    "always" => crate::spool::SyncMode::Always,
                    "none" => crate::spool::SyncMode::None,
                    _ => crate::spool::SyncMode::Batch,
                }
            },
        },
    },
    OptionSpec {
        key: "spool_max_bytes",
        default: OptionDefault::Text("0"),
        doc: "bound on the body and property bytes of spooled messages not yet confirmed \
              (amqp_publish returns AMQP_ERR_BUFFER_FULL beyond it); 0 = this queue's \
              max_buffered_bytes",
        value: Value::Int {
            min: 0,
            max: MAX_BUFFERED_BYTES_LIMIT,
            bytes: true,
            set: |o, n| o.spool_max_bytes = n,
        },
    },
    OptionSpec {
        key: "publish_retries",
        default: OptionDefault::Text("3"),
        doc: "times a message nacked by the broker is sent again (after a backoff from \
              reconnect_delay_ms to reconnect_delay_max_ms); one more nack fails it \
              (report AMQP_REPORT_NACKED). A quorum queue's default is 20 (about 75 s with \
              the default backoff): it nacks while electing a new leader",
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
