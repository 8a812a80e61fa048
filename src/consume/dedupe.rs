//! Duplicate suppression (queue option `dedupe=N`): the message ids of the
//! last N deliveries this queue handle acked. A delivery whose message_id
//! is among them is acked without reaching the application (counted in
//! `deduplicated`).
//!
//! What it can promise is bounded by what it sees: ids acked through this
//! queue handle, in this process, since it was opened, at most N of them
//! (the oldest forgotten first). Ids are remembered when the ack is
//! decided (a callback's AMQP_ACK, amqp_settle with AMQP_ACK), not when the
//! broker has it: exactly what makes a redelivery after a lost connection
//! a duplicate.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// The largest window `dedupe` takes.
pub(crate) const MAX_DEDUPE: u64 = 10_000_000;

/// At most `cap` distinct ids, the oldest evicted first: a ring of the ids
/// in the order they were first remembered and a set of the same ids (one
/// allocation per id, shared by both).
pub(crate) struct IdWindow {
    cap: usize,
    order: VecDeque<Arc<[u8]>>,
    set: HashSet<Arc<[u8]>>,
}

impl IdWindow {
    pub fn new(cap: usize) -> IdWindow {
        IdWindow {
            cap: cap.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    pub fn contains(&self, id: &[u8]) -> bool {
        self.set.contains(id)
    }

    /// Remembers `id` (an id known already keeps its place: the window is
    /// the last `cap` distinct ids first remembered).
    pub fn insert(&mut self, id: &[u8]) {
        if self.set.contains(id) {
            return;
        }
        if self.order.len() == self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        let id: Arc<[u8]> = Arc::from(id);
        self.order.push_back(id.clone());
        self.set.insert(id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

/// A queue handle's window, shared by its consumers and their tickets.
pub(crate) struct Dedupe {
    window: Mutex<IdWindow>,
}

impl Dedupe {
    /// None for `n` 0 (off).
    pub fn new(n: usize) -> Option<Arc<Dedupe>> {
        (n > 0).then(|| {
            Arc::new(Dedupe {
                window: Mutex::new(IdWindow::new(n)),
            })
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdWindow> {
        crate::sync::lock(&self.window)
    }

    pub fn seen(&self, id: &[u8]) -> bool {
        self.lock().contains(id)
    }

    pub fn remember(&self, id: &[u8]) {
        self.lock().insert(id);
    }
}

/// What a delivery's ticket remembers when it is acked.
pub(super) struct Remember {
    pub dedupe: Arc<Dedupe>,
    pub id: Box<[u8]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random operations against a model (a deque of distinct ids, the
    /// oldest dropped beyond the capacity).
    #[test]
    fn window_matches_a_model() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for cap in [1usize, 2, 3, 10, 100] {
            let mut w = IdWindow::new(cap);
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            for _ in 0..20_000 {
                let id = format!("id-{}", next() % (3 * cap as u64 + 2)).into_bytes();
                if next() % 2 == 0 {
                    if !model.contains(&id) {
                        if model.len() == cap {
                            model.pop_front();
                        }
                        model.push_back(id.clone());
                    }
                    w.insert(&id);
                } else {
                    assert_eq!(w.contains(&id), model.contains(&id), "cap {cap}");
                }
                assert_eq!(w.len(), model.len());
                assert_eq!(w.set.len(), model.len());
            }
        }
    }

    #[test]
    fn the_oldest_is_forgotten_first() {
        let mut w = IdWindow::new(3);
        for id in [b"a", b"b", b"c", b"a", b"d"] {
            w.insert(id);
        }
        assert!(!w.contains(b"a"), "a was the oldest when d came");
        assert!(w.contains(b"b") && w.contains(b"c") && w.contains(b"d"));
        assert!(Dedupe::new(0).is_none());
    }
}
