//! Queue option `auto_message_id`: every message published on the queue
//! without a message_id gets one, unique across processes and restarts:
//! 16 random bytes read from /dev/urandom when the queue is opened (32 hex
//! digits), a dash, and the queue handle's count of ids in hex.

use super::message::{encode_meta, parse_meta};
use crate::wire::props;
use std::cell::RefCell;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

/// A queue handle's id source.
pub(crate) struct AutoIds {
    prefix: [u8; 33],
    next: AtomicU64,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

thread_local! {
    /// The metadata of one stamped publish (reused: no allocation per call).
    static STAMPED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl AutoIds {
    pub fn new() -> AutoIds {
        let mut seed = [0u8; 16];
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
        if read.is_err() {
            // No /dev/urandom (a chroot?): the clock, the process and an
            // address; unique enough for one machine, and logged.
            warn!("auto_message_id: /dev/urandom unreadable; ids seeded from the clock and pid");
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let mix = t ^ (u128::from(std::process::id()) << 64) ^ (&seed as *const _ as u128);
            seed = mix.to_le_bytes();
        }
        let mut prefix = [b'-'; 33];
        for (i, b) in seed.iter().enumerate() {
            prefix[2 * i] = HEX[usize::from(b >> 4)];
            prefix[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        AutoIds {
            prefix,
            next: AtomicU64::new(0),
        }
    }

    /// A fresh id: the prefix and the count in hex (at most 49 bytes).
    fn next(&self, out: &mut [u8; 49]) -> usize {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        out[..33].copy_from_slice(&self.prefix);
        let digits = (64 - (n | 1).leading_zeros()).div_ceil(4) as usize;
        for i in 0..digits {
            out[33 + i] = HEX[((n >> (4 * (digits - 1 - i))) & 15) as usize];
        }
        33 + digits
    }

    /// Calls `f` with `meta` given a fresh message_id when it has none
    /// (`persistent`: the delivery mode a plain publish of the queue has).
    pub fn stamp<R>(&self, meta: &[u8], persistent: bool, f: impl FnOnce(&[u8]) -> R) -> R {
        let (key, props) = parse_meta(meta);
        if props::message_id(props).is_some() {
            return f(meta);
        }
        let mut id = [0u8; 49];
        let len = self.next(&mut id);
        STAMPED.with(|buf| {
            let Ok(mut out) = buf.try_borrow_mut() else {
                return f(meta);
            };
            out.clear();
            encode_meta(&mut out, key);
            let mode = if persistent { 2 } else { 0 };
            if props::with_message_id(props, mode, &id[..len], &mut out) {
                f(&out)
            } else {
                f(meta)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_distinct_and_keep_what_was_set() {
        let a = AutoIds::new();
        let b = AutoIds::new();
        let mut seen = HashSet::new();
        for ids in [&a, &b] {
            for _ in 0..1000 {
                let id = ids.stamp(&[], true, |m| {
                    let (key, p) = parse_meta(m);
                    assert_eq!(key, None);
                    assert_eq!(props::decode(p).unwrap().delivery_mode, 2);
                    props::message_id(p).unwrap().to_vec()
                });
                assert!(id.len() > 33 && id.len() <= 49);
                assert!(seen.insert(id), "distinct");
            }
        }
        let mut meta = Vec::new();
        encode_meta(&mut meta, Some(b"key"));
        let mut e = props::Encoder::new(&mut meta);
        e.str(props::MESSAGE_ID, b"mine", "m").unwrap();
        e.finish();
        a.stamp(&meta, true, |m| assert_eq!(m, &meta[..], "kept"));
        let mut keyed = Vec::new();
        encode_meta(&mut keyed, Some(b"key"));
        a.stamp(&keyed, false, |m| {
            let (key, p) = parse_meta(m);
            assert_eq!(key, Some(&b"key"[..]));
            assert_eq!(props::decode(p).unwrap().flags, props::MESSAGE_ID);
        });
    }
}
