//! Queue and consumer arguments (`x-...`): the generic `arg.NAME=TYPE:VALUE`
//! and `consumer_arg.NAME=TYPE:VALUE` options, and the checks on a queue's
//! options as a whole (stream, exclusive, passive, server-named).

use super::{QueueOptions, QueueType, MAX_NAME_BYTES};
use crate::error::{Error, Result};

/// The prefix of a generic queue argument option.
pub(crate) const QUEUE_ARG: &str = "arg.";
/// The prefix of a generic consumer argument option.
pub(crate) const CONSUMER_ARG: &str = "consumer_arg.";

/// A queue or consumer argument's value, as sent in the field table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgValue {
    /// `int:N` (a signed 64-bit integer; RabbitMQ compares integers by
    /// value whatever their width).
    Int(i64),
    /// `str:TEXT` (a long string).
    Str(String),
    /// `bool:true` / `bool:false`.
    Bool(bool),
}

/// Arguments in the order given; a name at most once.
pub type Arguments = Vec<(String, ArgValue)>;

/// The longest consumer name: its tags are `NAME-<n>`, a short string.
pub(crate) const MAX_CONSUMER_NAME_BYTES: usize = 200;

/// Stores a named option's argument (e.g. max_length as x-max-length).
pub(super) fn set_arg(args: &mut Arguments, name: &str, value: ArgValue) {
    args.push((name.to_string(), value));
}

/// Parses `key=value` when `key` is `arg.NAME` or `consumer_arg.NAME`:
/// `Ok(false)` when it is neither (a table option).
pub(super) fn parse_generic(o: &mut QueueOptions, key: &str, value: &str) -> Result<bool> {
    let (name, into) = if let Some(name) = key.strip_prefix(QUEUE_ARG) {
        (name, &mut o.arguments)
    } else if let Some(name) = key.strip_prefix(CONSUMER_ARG) {
        (name, &mut o.consumer_arguments)
    } else if key.starts_with("x-") {
        return Err(Error::invalid(format!(
            "unknown option '{key}': a queue argument is given as {QUEUE_ARG}{key}=TYPE:VALUE \
             (int:N, str:TEXT or bool:true|false), a consumer argument as \
             {CONSUMER_ARG}{key}=TYPE:VALUE"
        )));
    } else {
        return Ok(false);
    };
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "option '{key}' has no usable argument name (expected {key}NAME=TYPE:VALUE, e.g. \
             arg.x-max-length=int:1000)"
        )));
    }
    into.push((name.to_string(), parse_value(key, value)?));
    Ok(true)
}

/// `int:N`, `str:TEXT` or `bool:true|false`.
fn parse_value(key: &str, v: &str) -> Result<ArgValue> {
    let bad = || {
        Error::invalid(format!(
            "option '{key}' has bad value '{v}' (expected int:N, str:TEXT or bool:true|false)"
        ))
    };
    let (kind, text) = v.split_once(':').ok_or_else(bad)?;
    match kind {
        "int" => text.parse::<i64>().map(ArgValue::Int).map_err(|_| bad()),
        "str" if text.len() <= u16::MAX as usize && !text.chars().any(char::is_control) => {
            Ok(ArgValue::Str(text.to_string()))
        }
        "bool" => match text {
            "true" => Ok(ArgValue::Bool(true)),
            "false" => Ok(ArgValue::Bool(false)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// The checks on the options as a whole, after every key was parsed.
pub(super) fn check(o: &QueueOptions) -> Result<()> {
    for (what, args) in [("queue", &o.arguments), ("consumer", &o.consumer_arguments)] {
        for (i, (name, _)) in args.iter().enumerate() {
            if args[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::invalid(format!(
                    "{what} argument '{name}' is given twice (by a named option and \
                     {}{name}?)",
                    if what == "queue" {
                        QUEUE_ARG
                    } else {
                        CONSUMER_ARG
                    }
                )));
            }
        }
    }
    if o.queue_type != QueueType::Classic && o.arguments.iter().any(|(n, _)| n == "x-queue-type") {
        return Err(Error::invalid(
            "queue argument 'x-queue-type' is given twice (queue_type and arg.x-queue-type)",
        ));
    }
    let needs_durable = match o.queue_type {
        QueueType::Classic => None,
        QueueType::Quorum => Some("quorum"),
        QueueType::Stream => Some("stream"),
    };
    if let Some(kind) = needs_durable {
        if !o.durable {
            return Err(Error::invalid(format!(
                "option 'queue_type={kind}' needs durable=true ({kind} queues are always durable)"
            )));
        }
        if o.exclusive || o.auto_delete {
            return Err(Error::invalid(format!(
                "option 'queue_type={kind}' cannot be exclusive or auto_delete"
            )));
        }
    }
    if o.queue_type == QueueType::Stream && o.prefetch == 0 {
        return Err(Error::invalid(
            "option 'queue_type=stream' needs a prefetch above 0 (RabbitMQ refuses consumers \
             of a stream without one)",
        ));
    }
    if o.passive && (!o.arguments.is_empty() || o.queue_type != QueueType::Classic) {
        return Err(Error::invalid(
            "option 'passive=true' declares nothing, so queue arguments and queue_type would \
             be ignored: leave them out",
        ));
    }
    if o.passive && (o.exclusive || o.auto_delete) {
        return Err(Error::invalid(
            "option 'passive=true' declares nothing: exclusive and auto_delete would be ignored",
        ));
    }
    if let Some(name) = &o.consumer_name {
        if name.is_empty() || name.len() > MAX_CONSUMER_NAME_BYTES {
            return Err(Error::invalid(format!(
                "option 'consumer_name' must be 1 to {MAX_CONSUMER_NAME_BYTES} bytes long \
                 (its consumer tags are NAME-<n>)"
            )));
        }
    }
    Ok(())
}

/// The checks of a server-named queue (name ""): always exclusive (it is
/// the connection's; a reconnect gets a new one) and reached through an
/// exchange's binding (its name changes, the routing key does not).
pub(crate) fn check_server_named(o: &mut QueueOptions, exchange: &str) -> Result<()> {
    if exchange.is_empty() {
        return Err(Error::invalid(
            "queue name is empty (server-named) but exchange is too: a server-named queue \
             gets a new name after every reconnect, so it is published to through an \
             exchange and its binding",
        ));
    }
    if o.passive {
        return Err(Error::invalid(
            "queue name is empty (server-named): passive=true needs a queue's name",
        ));
    }
    if o.queue_type != QueueType::Classic {
        return Err(Error::invalid(
            "queue name is empty (server-named): such a queue is exclusive, so classic",
        ));
    }
    o.exclusive = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{parse_connection_options, parse_queue_options};
    use super::*;

    fn parse(s: &str) -> Result<QueueOptions> {
        parse_queue_options(Some(s), &parse_connection_options(None).unwrap())
    }

    #[test]
    fn generic_arguments_parse_with_their_types() {
        let o = parse(
            "arg.x-max-length=int:5&arg.x-foo=str:a=b:c&arg.x-bar=bool:true\
             &consumer_arg.x-stream-offset=str:first&arg.x-neg=int:-7",
        )
        .unwrap();
        assert_eq!(
            o.arguments,
            vec![
                ("x-max-length".into(), ArgValue::Int(5)),
                ("x-foo".into(), ArgValue::Str("a=b:c".into())),
                ("x-bar".into(), ArgValue::Bool(true)),
                ("x-neg".into(), ArgValue::Int(-7)),
            ]
        );
        assert_eq!(
            o.consumer_arguments,
            vec![("x-stream-offset".into(), ArgValue::Str("first".into()))]
        );
    }

    #[test]
    fn named_arguments_become_x_arguments() {
        let o = parse(
            "message_ttl_ms=1000&expires_ms=60000&max_length=10&max_length_bytes=1024\
             &overflow=reject-publish&dead_letter_exchange=dlx&dead_letter_routing_key=dead\
             &max_priority=9&single_active_consumer=true",
        )
        .unwrap();
        let names: Vec<&str> = o.arguments.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-message-ttl",
                "x-expires",
                "x-max-length",
                "x-max-length-bytes",
                "x-overflow",
                "x-dead-letter-exchange",
                "x-dead-letter-routing-key",
                "x-max-priority",
                "x-single-active-consumer"
            ]
        );
        let o = parse("consumer_priority=5&consumer_name=billing&consumer_exclusive=1").unwrap();
        assert_eq!(
            o.consumer_arguments,
            vec![("x-priority".into(), ArgValue::Int(5))]
        );
        assert_eq!(o.consumer_name.as_deref(), Some("billing"));
        assert!(o.consumer_exclusive);
    }

    #[test]
    fn bad_arguments_name_the_key() {
        for (s, needle) in [
            ("arg.x-a=5", "option 'arg.x-a' has bad value '5'"),
            ("arg.x-a=int:five", "option 'arg.x-a'"),
            ("arg.x-a=float:1.5", "option 'arg.x-a'"),
            ("arg.x-a=bool:yes", "option 'arg.x-a'"),
            ("arg.=int:1", "option 'arg.'"),
            ("consumer_arg.x-p=1", "option 'consumer_arg.x-p'"),
            (
                "max_length=5&arg.x-max-length=int:5",
                "'x-max-length' is given twice",
            ),
            (
                "queue_type=quorum&arg.x-queue-type=str:quorum",
                "given twice",
            ),
            ("queue_type=stream&durable=false", "needs durable=true"),
            ("queue_type=stream&prefetch=0", "prefetch above 0"),
            ("queue_type=quorum&exclusive=true", "cannot be exclusive"),
            ("passive=true&max_length=5", "'passive=true'"),
            ("passive=true&exclusive=true", "'passive=true'"),
            ("overflow=drop-tail", "option 'overflow'"),
            ("max_priority=256", "option 'max_priority'"),
            ("consumer_name=", "option 'consumer_name'"),
            ("x-max-length=5", "arg.x-max-length=TYPE:VALUE"),
        ] {
            let e = parse(s).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidArgument, "{s}");
            assert!(e.message.contains(needle), "{s}: {}", e.message);
        }
    }

    #[test]
    fn a_server_named_queue_is_exclusive_and_needs_an_exchange() {
        let mut o = parse("durable=false").unwrap();
        assert!(check_server_named(&mut o, "").is_err());
        check_server_named(&mut o, "ex").unwrap();
        assert!(o.exclusive);
        let mut o = parse("passive=true").unwrap();
        assert!(check_server_named(&mut o, "ex").is_err());
    }
}
