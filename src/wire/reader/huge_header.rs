//! Content headers over the header bound (`codec::HEADER_FRAME_MAX`):
//! skipped as they arrive, never buffered (the announced size is untrusted),
//! and their delivery read, dropped and handed on to be rejected unread.

use super::{deliver, Demux, End};
use crate::wire::assembly::{Event, Step};
use crate::wire::codec;
use crate::wire::shared::ConnShared;
use crate::wire::Violation;

/// A content header frame too large to take in, skipped as it arrives.
pub(super) struct Skip {
    pub(super) channel: u16,
    /// Bytes of the frame still to come, its end octet included.
    pub(super) left: usize,
    pub(super) total: usize,
    pub(super) body_size: u64,
    /// Bytes skipped since the skip last counted as a sign of life.
    pub(super) unproven: usize,
}

/// Skipped bytes count as a sign of life (for the heartbeat check) once
/// per this many: a header whose size was garbled swallows the frames
/// behind it, and the broker's heartbeats alone (8 bytes each) must not
/// keep such a connection for the gigabytes it announced.
pub(super) const ALIVE_EVERY: usize = 64 << 10;

/// What `skip` took of the bytes it was given.
pub(super) struct Skipped {
    pub(super) used: usize,
    pub(super) alive: bool,
}

impl Demux {
    /// Skips what `buf` holds of the content header being skipped; returns
    /// the bytes used. At its end octet the header counts as received: its
    /// delivery is read and dropped, to be rejected unread (a header the
    /// broker cannot shrink must not end the connection, or it would be
    /// redelivered into the same end forever).
    pub(super) fn skip(&mut self, conn: &ConnShared, buf: &[u8]) -> Result<Skipped, End> {
        let Some(skip) = self.skipping.as_mut() else {
            return Ok(Skipped {
                used: 0,
                alive: false,
            });
        };
        let n = skip.left.min(buf.len());
        skip.left -= n;
        skip.unproven += n;
        let alive = skip.unproven >= ALIVE_EVERY || skip.left == 0;
        if alive {
            skip.unproven = 0;
        }
        let done = Skipped { used: n, alive };
        if skip.left > 0 {
            return Ok(done);
        }
        let Some(skip) = self.skipping.take() else {
            return Ok(done);
        };
        if buf[n - 1] != codec::FRAME_END {
            return Err(Violation::frame(format!(
                "bad frame end 0x{:02x} (content header, channel {})",
                buf[n - 1],
                skip.channel
            ))
            .into());
        }
        let id = skip.channel;
        let Some(slot) = self.frame_target(conn, id)? else {
            return Ok(done);
        };
        warn!(
            "channel {id}: a content header of {} bytes, over the {} byte header bound: \
             the message is read, dropped and rejected unread",
            skip.total,
            codec::HEADER_FRAME_MAX
        );
        let step = slot.step(Event::HugeHeader {
            body_size: skip.body_size,
            header_bytes: skip.total as u64,
        })?;
        // With no body, the header completes the delivery.
        if let Step::Complete(delivery) = step {
            if deliver(conn, &slot.ch, delivery)? && !slot.delivered {
                slot.delivered = true;
                self.delivered.push(id);
            }
        }
        Ok(done)
    }
}
