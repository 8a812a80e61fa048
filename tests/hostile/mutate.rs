//! Random mutation of the conversation: after the handshake (connection.open-ok), at random
//! frames, the proxy flips a bit, sets a byte, truncates the frame or inserts bytes, with a
//! seeded PRNG (the seed is printed; `RA_HOSTILE_SEED` replays one). One mutation is one
//! iteration; `RA_HOSTILE_ITERATIONS` of them (default 150) over as many connections as they
//! take, then the proxy is transparent and the library must recover.
//!
//! Message bodies (the payload of body frames) are never mutated, only their frame header and
//! end byte: a changed body byte is undetectable on plain TCP and would only make the count
//! below meaningless. Everything else is fair game, the delivery tags and acks included. So:
//! - the publishing queue: every message the REAL broker confirmed must be in it (a mutated ack
//!   inside the window is indistinguishable from a real one, so messages the library saw
//!   "confirmed" by a mutated ack are reported, not asserted);
//! - the consuming queue, seeded by the independent reader: the library's callback requeues
//!   everything, and a requeue (basic.reject) of a wrong tag cannot remove a message, so every
//!   seeded message must still be there at the end.

use super::frames::{self, Frame};
use super::proxy::{Act, Cx, Factory, Tamper};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn iterations() -> u64 {
    std::env::var("RA_HOSTILE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

pub fn seed() -> u64 {
    std::env::var("RA_HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

struct Mutator {
    rng: Rng,
    open: bool,
    countdown: u64,
    done: Arc<AtomicU64>,
    limit: u64,
    conn: u64,
    frames: u64,
    /// the last mutation left a well-formed confirm of another tag
    forged_confirm: bool,
}

/// The note of a mutation that left a well-formed confirm of another tag.
pub const FORGED_CONFIRM: &str = "[a confirm of another tag] ";

impl Mutator {
    /// The frame mutated, and what was done, in words.
    fn mutate(&mut self, f: &Frame) -> (Vec<u8>, String) {
        let mut raw = f.encode();
        // offsets that may change: all but a body frame's payload
        let pick = |rng: &mut Rng, len: usize| -> usize {
            if f.typ == frames::BODY {
                let i = rng.below(8) as usize;
                if i == 7 {
                    len - 1
                } else {
                    i
                }
            } else {
                rng.below(len as u64) as usize
            }
        };
        let len = raw.len();
        // a confirm changed inside its arguments stays a well-formed confirm of another tag: the
        // library cannot tell it from a real one, and may then wait for a confirm that the
        // broker already sent (a stall that is not the library's fault)
        let confirm = f.is(frames::BASIC_ACK) || f.is(frames::BASIC_NACK);
        let in_args = |i: usize| confirm && (11..len - 1).contains(&i);
        let what = match self.rng.below(4) {
            0 => {
                let i = pick(&mut self.rng, raw.len());
                let bit = self.rng.below(8);
                raw[i] ^= 1 << bit;
                self.forged_confirm = in_args(i);
                format!("flipped bit {bit} of byte {i}")
            }
            1 => {
                let i = pick(&mut self.rng, raw.len());
                let old = raw[i];
                raw[i] = self.rng.next() as u8;
                self.forged_confirm = in_args(i);
                format!("set byte {i} from {old:#04x} to {:#04x}", raw[i])
            }
            2 => {
                self.forged_confirm = false;
                let at = pick(&mut self.rng, raw.len());
                raw.truncate(at);
                format!("truncated to {at} bytes")
            }
            _ => {
                self.forged_confirm = false;
                let at = pick(&mut self.rng, raw.len());
                let n = 1 + self.rng.below(8) as usize;
                let junk: Vec<u8> = (0..n).map(|_| self.rng.next() as u8).collect();
                raw.splice(at..at, junk);
                format!("inserted {n} random bytes at {at}")
            }
        };
        let m = f
            .method_id()
            .map_or(String::new(), |m| format!(" method {m:?}"));
        let desc = format!(
            "{}connection {} frame #{} (type {} channel {}{m}, {} bytes): {what}",
            if self.forged_confirm {
                FORGED_CONFIRM
            } else {
                ""
            },
            self.conn,
            self.frames,
            f.typ,
            f.channel,
            f.payload.len() + 8
        );
        (raw, desc)
    }
}

impl Tamper for Mutator {
    fn frame(&mut self, f: &Frame, cx: &Cx) -> Act {
        self.frames += 1;
        if !self.open {
            self.open = f.is(frames::CONNECTION_OPEN_OK);
            return Act::Forward;
        }
        if self.done.load(Ordering::SeqCst) >= self.limit {
            return Act::Forward;
        }
        if self.countdown > 0 {
            self.countdown -= 1;
            return Act::Forward;
        }
        self.countdown = self.rng.below(40);
        self.done.fetch_add(1, Ordering::SeqCst);
        cx.acted();
        let (raw, desc) = self.mutate(f);
        *cx.stats.note.lock().unwrap() = desc;
        Act::Replace(raw)
    }
}

/// Mutates every connection (each with its own PRNG, seeded from `seed` and the connection's
/// number) until `limit` mutations were made in all; `done` counts them.
pub fn mutator(seed: u64, limit: u64, done: Arc<AtomicU64>) -> Factory {
    Box::new(move |n| {
        if done.load(Ordering::SeqCst) >= limit {
            return None;
        }
        let mut rng = Rng::new(seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
        let countdown = rng.below(40);
        Some(Box::new(Mutator {
            rng,
            open: false,
            countdown,
            done: done.clone(),
            limit,
            conn: n,
            frames: 0,
            forged_confirm: false,
        }))
    })
}
