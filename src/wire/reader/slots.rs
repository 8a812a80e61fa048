//! Which channel slot a frame goes to, and the checks on its channel id.

use super::{ChannelReader, Demux, End};
use crate::wire::assembly::Assembly;
use crate::wire::shared::ConnShared;
use crate::wire::Violation;

impl Demux {
    /// The open channel a frame for `id` goes to; `None` for a late frame
    /// of a channel we closed (dropped). A channel beyond channel_max or
    /// never opened cannot be meant: the frame was garbled or forged (a
    /// lost confirm would stall its publisher, a reply there would leave its
    /// call waiting).
    pub(super) fn frame_target(
        &mut self,
        conn: &ConnShared,
        id: u16,
    ) -> Result<Option<&mut ChannelReader>, End> {
        if id > conn.channel_max {
            return Err(Violation::frame(format!(
                "a frame for channel {id}, beyond channel_max {}",
                conn.channel_max
            ))
            .into());
        }
        if !self.has_slot(conn, id) {
            if conn.never_opened(id) {
                return Err(Violation::channel_error(format!(
                    "a frame for channel {id}, which was never opened"
                ))
                .into());
            }
            return Ok(None);
        }
        Ok(self
            .channels
            .get_mut(usize::from(id))
            .and_then(Option::as_mut))
    }

    /// Makes sure the open channel `id` has its slot; false when no such
    /// channel is open. Slots exist up to the highest open channel id only:
    /// a frame for a channel never opened allocates nothing.
    pub(super) fn has_slot(&mut self, conn: &ConnShared, id: u16) -> bool {
        let at = usize::from(id);
        let fresh = match self.channels.get(at) {
            Some(Some(s)) if !s.ch.is_closed() => None,
            // An id is reused only after its channel closed: a new channel,
            // a new assembly.
            _ => Some(conn.channel(id)),
        };
        if let Some(ch) = fresh {
            let Some(ch) = ch else {
                return false;
            };
            if self.channels.len() <= at {
                self.channels.resize_with(at + 1, || None);
            }
            self.channels[at] = Some(ChannelReader {
                ch,
                assembly: Assembly::Idle,
                last_delivery_tag: 0,
                delivered: false,
            });
        }
        true
    }
}
