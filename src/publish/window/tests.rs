//! The confirm window against a model: a list of (message, tag, state)
//! settled by the plain definition of basic.ack / basic.nack.

use super::*;
use proptest::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Msg {
    id: u64,
    len: u64,
}

impl ByteLen for Msg {
    fn byte_len(&self) -> u64 {
        self.len
    }
}

fn msg(id: u64, len: u64) -> Msg {
    Msg { id, len }
}

fn ids(q: &VecDeque<Msg>) -> Vec<u64> {
    q.iter().map(|m| m.id).collect()
}

fn window_ids(w: &ConfirmWindow<Msg>) -> Vec<u64> {
    w.slots.iter().map(|(m, _)| m.id).collect()
}

/// Pushes messages `ids` of 10 bytes each.
fn filled(ids: std::ops::Range<u64>) -> ConfirmWindow<Msg> {
    let mut w = ConfirmWindow::new(100, 1 << 20);
    for id in ids {
        w.push(msg(id, 10));
    }
    w
}

#[test]
fn tags_start_at_one_and_restart_after_loss() {
    let mut w = ConfirmWindow::new(10, 1000);
    assert_eq!(w.next_tag(), 1);
    assert_eq!(
        (w.push(msg(0, 1)), w.push(msg(1, 1)), w.push(msg(2, 1))),
        (1, 2, 3)
    );
    w.settle(2, true, false);
    let mut resend = VecDeque::new();
    assert_eq!(
        w.release_settled(&mut resend),
        Released { count: 2, bytes: 2 }
    );
    assert_eq!(w.push(msg(3, 1)), 4, "tags go on after a release");
    w.take_unconfirmed(&mut resend);
    assert_eq!(ids(&resend), [2, 3]);
    assert_eq!((w.len(), w.bytes(), w.next_tag()), (0, 0, 1));
    assert_eq!(w.push(msg(2, 1)), 1, "a new channel numbers from 1");
}

#[test]
fn an_ack_behind_a_pending_message_waits_for_it() {
    let mut w = filled(0..3);
    let mut resend = VecDeque::new();
    assert_eq!(w.settle(2, false, false), 0);
    assert_eq!(w.release_settled(&mut resend), Released::default());
    assert_eq!(w.len(), 3);
    w.settle(1, false, false);
    assert_eq!(
        w.release_settled(&mut resend),
        Released {
            count: 2,
            bytes: 20
        }
    );
    assert_eq!((w.len(), w.bytes(), w.next_tag()), (1, 10, 4));
    assert!(resend.is_empty());
}

#[test]
fn multiple_settles_only_what_is_still_pending() {
    let mut w = filled(0..4);
    assert_eq!(w.settle(2, false, true), 1);
    // Tag 2 stays nacked: an ack does not overturn a nack.
    assert_eq!(w.settle(3, true, false), 0);
    assert_eq!(w.settle(2, false, false), 0);
    let mut resend: VecDeque<Msg> = [msg(9, 1)].into();
    assert_eq!(
        w.release_settled(&mut resend),
        Released {
            count: 2,
            bytes: 20
        }
    );
    assert_eq!(ids(&resend), [1, 9], "nacked ones go first");
    assert_eq!(window_ids(&w), [3]);
    assert_eq!(w.next_tag(), 5);
}

#[test]
fn nacked_ones_come_out_in_send_order_ahead_of_the_resend_queue() {
    let mut w = filled(0..5);
    assert_eq!(w.settle(3, true, true), 3);
    assert_eq!(w.settle(5, false, true), 1);
    let mut resend: VecDeque<Msg> = [msg(7, 1), msg(8, 1)].into();
    assert_eq!(w.release_settled(&mut resend), Released::default());
    assert_eq!(ids(&resend), [0, 1, 2, 7, 8]);
    assert_eq!(
        (w.len(), w.bytes(), w.front_tag, w.next_tag()),
        (2, 20, 4, 6)
    );
}

#[test]
fn out_of_range_tags() {
    let mut w = filled(0..3);
    let mut resend = VecDeque::new();
    w.settle(1, false, false);
    w.release_settled(&mut resend);
    // Below the front (tag 1 is gone), tag 0, and beyond what was sent.
    assert_eq!(w.settle(1, false, true), 0);
    assert_eq!(w.settle(0, true, true), 0);
    assert_eq!(w.settle(4, false, true), 0);
    assert!(w.slots.iter().all(|(_, s)| *s == State::Pending));
    // With multiple, a tag beyond what was sent settles the whole window.
    assert_eq!(w.settle(9, true, true), 2);
    assert_eq!(w.release_settled(&mut resend), Released::default());
    assert_eq!(ids(&resend), [1, 2]);
    // Settling an empty window does nothing.
    assert_eq!(w.settle(4, true, true), 0);
}

#[test]
fn loss_releases_acked_ones_and_returns_the_rest_in_order() {
    let mut w = filled(0..5);
    w.settle(2, false, false);
    w.settle(4, false, true);
    let mut resend: VecDeque<Msg> = [msg(9, 1)].into();
    assert_eq!(w.release_settled(&mut resend), Released::default());
    assert_eq!(
        w.take_unconfirmed(&mut resend),
        Released {
            count: 1,
            bytes: 10
        }
    );
    assert_eq!(ids(&resend), [0, 2, 3, 4, 9]);
    assert!(w.is_empty());
}

#[test]
fn room_by_count_and_by_bytes() {
    let mut w = ConfirmWindow::new(2, 100);
    w.push(msg(0, 1));
    assert!(w.has_room());
    w.push(msg(1, 1));
    assert!(!w.has_room(), "count limit");
    let mut w = ConfirmWindow::new(10, 100);
    w.push(msg(0, 99));
    assert!(w.has_room(), "below the byte limit");
    w.push(msg(1, 50));
    assert!(!w.has_room(), "one message may take it over the byte limit");
    w.settle(1, false, false);
    w.release_settled(&mut VecDeque::new());
    assert!(w.has_room());
    assert_eq!(w.bytes(), 50);
}

// ---- the model ----

/// The reference: every message in flight with its tag and state.
#[derive(Default)]
struct Model {
    slots: Vec<(Msg, u64, State)>,
    next_tag: u64,
}

impl Model {
    fn new() -> Self {
        Model {
            slots: Vec::new(),
            next_tag: 1,
        }
    }

    fn push(&mut self, m: Msg) -> u64 {
        let tag = self.next_tag;
        self.slots.push((m, tag, State::Pending));
        self.next_tag += 1;
        tag
    }

    /// basic.ack / basic.nack as the protocol defines them.
    fn settle(&mut self, tag: u64, multiple: bool, nack: bool) -> u64 {
        let mut nacked = 0;
        for (_, t, s) in &mut self.slots {
            let hit = if multiple { *t <= tag } else { *t == tag };
            if hit && *s == State::Pending {
                *s = if nack { State::Nacked } else { State::Acked };
                nacked += nack as u64;
            }
        }
        nacked
    }

    /// Settled ones off the front: the acked ids, and the nacked ones to
    /// the front of `resend`.
    fn release(&mut self, resend: &mut VecDeque<Msg>) -> Vec<u64> {
        let n = self
            .slots
            .iter()
            .position(|(_, _, s)| *s == State::Pending)
            .unwrap_or(self.slots.len());
        self.take_front(n, resend)
    }

    /// The channel is lost: everything leaves, and tags restart.
    fn take(&mut self, resend: &mut VecDeque<Msg>) -> Vec<u64> {
        self.next_tag = 1;
        self.take_front(self.slots.len(), resend)
    }

    fn take_front(&mut self, n: usize, resend: &mut VecDeque<Msg>) -> Vec<u64> {
        let mut acked = Vec::new();
        let mut back = Vec::new();
        for (m, _, s) in self.slots.drain(..n) {
            if s == State::Acked {
                acked.push(m.id);
            } else {
                back.push(m);
            }
        }
        for m in back.into_iter().rev() {
            resend.push_front(m);
        }
        acked
    }

    fn bytes(&self) -> u64 {
        self.slots.iter().map(|(m, _, _)| m.len).sum()
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Send up to this many messages while there is room (resends first).
    Fill(u8),
    /// basic.ack / basic.nack; the tag is the front's minus 2 plus this.
    Settle {
        offset: u8,
        multiple: bool,
        nack: bool,
    },
    Release,
    /// The channel is lost; the next one numbers from 1.
    Reopen,
}

fn op(nacks: bool) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..6).prop_map(Op::Fill),
        4 => (0u8..12, any::<bool>(), prop::bool::weighted(0.2)).prop_map(
            move |(offset, multiple, nack)| Op::Settle { offset, multiple, nack: nack && nacks }
        ),
        3 => Just(Op::Release),
        1 => Just(Op::Reopen),
    ]
}

/// A publisher's view: messages 0.. from the buffer, a resend queue, the
/// window, and what was confirmed.
struct Run {
    w: ConfirmWindow<Msg>,
    model: Model,
    /// The window's resend queue, and the model's.
    retry: VecDeque<Msg>,
    model_retry: VecDeque<Msg>,
    next_id: u64,
    lens: Vec<u64>,
    confirmed: Vec<u64>,
    max_count: usize,
    max_bytes: u64,
}

impl Run {
    fn new(max_count: usize, max_bytes: u64, lens: Vec<u64>) -> Self {
        Run {
            w: ConfirmWindow::new(max_count, max_bytes),
            model: Model::new(),
            retry: VecDeque::new(),
            model_retry: VecDeque::new(),
            next_id: 0,
            lens,
            confirmed: Vec::new(),
            max_count,
            max_bytes,
        }
    }

    fn fill(&mut self, n: u8) {
        for _ in 0..n {
            let model_room =
                self.model.slots.len() < self.max_count && self.model.bytes() < self.max_bytes;
            assert_eq!(self.w.has_room(), model_room);
            if !model_room {
                break;
            }
            let m = match self.retry.pop_front() {
                Some(m) => {
                    assert_eq!(self.model_retry.pop_front(), Some(m));
                    m
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    msg(id, self.len_of(id))
                }
            };
            assert_eq!(self.w.push(m), self.model.push(m), "tag of {m:?}");
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Fill(n) => self.fill(n),
            Op::Settle {
                offset,
                multiple,
                nack,
            } => {
                let tag = self.w.front_tag.saturating_sub(2) + offset as u64;
                let got = self.w.settle(tag, multiple, nack);
                assert_eq!(
                    got,
                    self.model.settle(tag, multiple, nack),
                    "{op:?} tag {tag}"
                );
            }
            Op::Release => {
                let r = self.w.release_settled(&mut self.retry);
                let acked = self.model.release(&mut self.model_retry);
                self.note_confirmed(r, acked);
            }
            Op::Reopen => {
                let r = self.w.take_unconfirmed(&mut self.retry);
                let acked = self.model.take(&mut self.model_retry);
                self.note_confirmed(r, acked);
            }
        }
    }

    fn note_confirmed(&mut self, r: Released, acked: Vec<u64>) {
        let bytes = acked.iter().map(|&id| self.len_of(id)).sum();
        assert_eq!(
            r,
            Released {
                count: acked.len() as u64,
                bytes
            }
        );
        self.confirmed.extend(acked);
    }

    fn len_of(&self, id: u64) -> u64 {
        self.lens[id as usize % self.lens.len()]
    }

    fn check(&self) {
        // Same messages, tags and states as the model, same resend queue.
        let model: Vec<(Msg, State)> = self.model.slots.iter().map(|(m, _, s)| (*m, *s)).collect();
        let real: Vec<(Msg, State)> = self.w.slots.iter().copied().collect();
        assert_eq!(real, model);
        if let Some((_, tag, _)) = self.model.slots.first() {
            assert_eq!(self.w.front_tag, *tag);
        }
        assert_eq!(self.w.next_tag(), self.model.next_tag);
        assert_eq!(self.retry, self.model_retry);
        // Byte and count totals, and the limits.
        assert_eq!(self.w.bytes(), self.model.bytes());
        assert_eq!(self.w.len(), self.model.slots.len());
        // A hole: the front pending behind something settled.
        let model_hole = matches!(self.model.slots.first(), Some((_, _, State::Pending)))
            && self
                .model
                .slots
                .iter()
                .any(|(_, _, s)| *s != State::Pending);
        assert_eq!(self.w.has_hole(), model_hole);
        assert!(self.w.len() <= self.max_count);
        let largest = self.lens.iter().copied().max().unwrap_or(0);
        assert!(self.w.bytes() < self.max_bytes + largest);
        // Nothing lost or duplicated: every message sent is in exactly one
        // of window, resend queue, confirmed.
        let mut all: Vec<u64> = window_ids(&self.w);
        all.extend(ids(&self.retry));
        all.extend(&self.confirmed);
        all.sort_unstable();
        assert_eq!(all, (0..self.next_id).collect::<Vec<_>>());
    }

    /// Acks everything, across as many fills as it takes.
    fn finish(&mut self) {
        self.apply(&Op::Reopen);
        while !self.retry.is_empty() {
            self.fill(u8::MAX);
            let last = self.w.next_tag() - 1;
            assert_eq!(self.w.settle(last, true, false), 0);
            self.model.settle(last, true, false);
            self.apply(&Op::Release);
            self.check();
        }
        assert!(self.w.is_empty());
        let mut confirmed = self.confirmed.clone();
        confirmed.sort_unstable();
        assert_eq!(confirmed, (0..self.next_id).collect::<Vec<_>>());
    }
}

fn limits() -> impl Strategy<Value = (usize, u64, Vec<u64>)> {
    (1usize..8, 1u64..60, prop::collection::vec(0u64..20, 1..4))
}

proptest! {
    // Failures are printed with their minimal case; no regression files in src/.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The window matches the model step by step, and every message ends
    /// up confirmed exactly once.
    #[test]
    fn matches_the_model(
        (max_count, max_bytes, lens) in limits(),
        ops in prop::collection::vec(op(true), 0..80),
    ) {
        let mut run = Run::new(max_count, max_bytes, lens);
        for op in &ops {
            run.apply(op);
            run.check();
        }
        run.finish();
    }

    /// Without nacks, what is outstanding (window, then resend queue) is
    /// always in publish order, across any number of reopens.
    #[test]
    fn without_nacks_order_is_publish_order(
        (max_count, max_bytes, lens) in limits(),
        ops in prop::collection::vec(op(false), 0..80),
    ) {
        let mut run = Run::new(max_count, max_bytes, lens);
        for op in &ops {
            run.apply(op);
            run.check();
            let mut outstanding = window_ids(&run.w);
            outstanding.extend(ids(&run.retry));
            prop_assert!(outstanding.windows(2).all(|p| p[0] < p[1]), "{outstanding:?}");
        }
        run.finish();
    }
}
