//! The read buffer: many frames read at once, handled in place; what the
//! async loop (`read_loop`) and a host thread's turns (`link_reader`) share.

use super::super::codec;
use super::super::shared::ConnShared;
use super::{Demux, End, OUTPUT_BACKLOG, READ_BUFFER, YIELD_AFTER_BYTES};
use std::sync::atomic::Ordering;

/// The read buffer and the demux: what the async loop (`read_loop`) and a
/// host thread's reads (`link_reader`) share. Bytes are read into
/// `space()`, counted with `filled`, and handled with `handle`.
pub(in crate::wire) struct ReadBuf {
    buf: Vec<u8>,
    base: usize,
    start: usize,
    end: usize,
    demux: Demux,
    /// Bytes read since the last output backlog check.
    unchecked: usize,
}

impl ReadBuf {
    pub(in crate::wire) fn new(conn: &ConnShared, leftover: &[u8]) -> ReadBuf {
        let base = READ_BUFFER.max(conn.frame_max + codec::FRAME_OVERHEAD);
        let mut buf = vec![0u8; base.max(leftover.len())];
        buf[..leftover.len()].copy_from_slice(leftover);
        ReadBuf {
            buf,
            base,
            start: 0,
            end: leftover.len(),
            demux: Demux::default(),
            unchecked: 0,
        }
    }

    /// Where the next read goes (never empty after `handle`).
    pub(in crate::wire) fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    pub(in crate::wire) fn filled(&mut self, n: usize) {
        self.end += n;
        self.unchecked += n;
    }

    /// Handles the whole frames read so far. Err ends the connection (why).
    pub(in crate::wire) fn handle(&mut self, conn: &ConnShared) -> Result<(), String> {
        match self.demux.feed(conn, &self.buf[self.start..self.end]) {
            Ok(fed) => {
                if fed.alive {
                    // Whole frames, not bytes, tell that the broker lives: a
                    // frame whose size was garbled would otherwise swallow
                    // the heartbeats behind it and never end.
                    conn.read_recently.store(true, Ordering::Relaxed);
                }
                self.start += fed.used;
                if self.start + fed.need > self.buf.len() {
                    (self.start, self.end) =
                        make_room(&mut self.buf, self.start..self.end, fed.need);
                }
            }
            Err(End::Closed(why)) => return Err(why),
            Err(End::Broken(v)) => return Err(conn.broke_protocol(&v)),
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            if self.buf.len() > self.base {
                // Grown for a large content header: give it back.
                self.buf.truncate(self.base);
                self.buf.shrink_to_fit();
            }
        }
        if self.unchecked >= YIELD_AFTER_BYTES {
            self.unchecked = 0;
            // What the reader makes us send (acks, rejects, close-oks) must
            // not pile up without end from a broker that sends but does
            // not read.
            if conn.output.backlog() as u64 > conn.max_body.saturating_add(OUTPUT_BACKLOG) {
                return Err("the broker does not read what we send (output backlog)".into());
            }
        }
        Ok(())
    }
}

/// Moves the incomplete frame in `pending` to the front of `buf`, growing
/// the buffer when the frame needs more than it holds (a content header may
/// exceed frame_max, up to `codec::HEADER_FRAME_MAX`; `need` is never more).
/// Returns the frame's new start and end.
fn make_room(buf: &mut Vec<u8>, pending: std::ops::Range<usize>, need: usize) -> (usize, usize) {
    let len = pending.len();
    buf.copy_within(pending, 0);
    if need > buf.len() {
        buf.resize(need, 0);
    }
    (0, len)
}
