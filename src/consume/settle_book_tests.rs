//! The settle book against a model of the broker's view of one channel.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use Settle::{Ack, Reject, Release, Requeue};

fn ack(tag: u64, count: u64) -> Frame {
    Frame::Ack {
        tag,
        multiple: count > 1,
        count,
    }
}

fn rej(tag: u64, how: Settle) -> Frame {
    Frame::Reject { tag, how }
}

fn flushed(book: &mut SettleBook) -> Vec<Frame> {
    let mut out = Vec::new();
    book.flush(&mut out);
    out
}

/// A book with a large batch, so nothing is due before an explicit flush
/// unless released.
fn book() -> SettleBook {
    SettleBook::new(0)
}

#[test]
fn batch_is_half_the_prefetch_at_most_64() {
    for (prefetch, batch) in [
        (0, 64),
        (1, 1),
        (2, 1),
        (3, 1),
        (10, 5),
        (128, 64),
        (65535, 64),
    ] {
        assert_eq!(
            SettleBook::new(prefetch).batch,
            batch,
            "prefetch {prefetch}"
        );
    }
}

#[test]
fn a_contiguous_run_of_acks_is_one_multiple_ack_on_its_last() {
    let mut b = book();
    assert_eq!(b.decide(2, Ack), Due::Soon);
    assert_eq!(b.decide(1, Ack), Due::Later);
    assert_eq!(b.decide(3, Ack), Due::Later);
    assert_eq!(flushed(&mut b), [ack(3, 3)]);
    assert_eq!((b.floor(), b.held()), (3, 0));
    assert_eq!(b.decide(4, Ack), Due::Soon);
    assert_eq!(flushed(&mut b), [ack(4, 1)]);
    assert_eq!(flushed(&mut b), []);
}

#[test]
fn rejects_in_the_run_go_singly_before_its_ack() {
    let mut b = book();
    for (tag, how) in [
        (1, Ack),
        (2, Reject),
        (3, Ack),
        (4, Requeue),
        (5, Ack),
        (6, Reject),
    ] {
        b.decide(tag, how);
    }
    // The multiple ack on 5 covers 1, 3 and 5: 2 and 4 are no longer
    // unacked once their rejects are through, and 6 is above it.
    assert_eq!(
        flushed(&mut b),
        [rej(2, Reject), rej(4, Requeue), rej(6, Reject), ack(5, 3)]
    );
    assert_eq!(b.floor(), 6);
}

#[test]
fn decisions_behind_a_gap_go_singly_and_are_not_covered_again() {
    let mut b = book();
    b.decide(2, Ack);
    b.decide(3, Reject);
    b.decide(5, Ack);
    assert_eq!(flushed(&mut b), [ack(2, 1), rej(3, Reject), ack(5, 1)]);
    assert_eq!((b.floor(), b.held()), (0, 0));
    // Tag 1 closes the gap: 2 and 3 are sent already, 4 still open.
    b.decide(1, Ack);
    assert_eq!(flushed(&mut b), [ack(1, 1)]);
    assert_eq!(b.floor(), 3);
    // 4 and 6 around the sent 5: one multiple ack on 6 covers 4 and 6.
    b.decide(6, Ack);
    b.decide(4, Ack);
    assert_eq!(flushed(&mut b), [ack(6, 2)]);
    assert_eq!((b.floor(), b.held()), (6, 0));
}

#[test]
fn a_release_is_due_at_once() {
    let mut b = book();
    assert_eq!(b.decide(2, Ack), Due::Soon);
    assert_eq!(b.decide(1, Release), Due::Now);
    assert_eq!(flushed(&mut b), [rej(1, Release), ack(2, 1)]);
    assert_eq!(b.decide(3, Release), Due::Now);
    assert_eq!(flushed(&mut b), [rej(3, Release)]);
}

#[test]
fn a_full_batch_is_due() {
    let mut b = SettleBook::new(8); // batch 4
    assert_eq!(b.decide(1, Ack), Due::Soon);
    assert_eq!(b.decide(3, Ack), Due::Later);
    assert_eq!(b.decide(4, Reject), Due::Later);
    assert_eq!(b.decide(6, Ack), Due::Now);
    assert_eq!(
        flushed(&mut b),
        [ack(1, 1), ack(3, 1), rej(4, Reject), ack(6, 1)]
    );
    // Sent-ahead decisions do not count towards the next batch.
    assert_eq!(b.decide(2, Ack), Due::Soon);
    assert_eq!(b.decide(5, Ack), Due::Later);
    assert_eq!(flushed(&mut b), [ack(5, 2)]);
}

#[test]
fn duplicates_and_settled_tags_are_ignored() {
    let mut b = book();
    assert_eq!(b.decide(0, Ack), Due::Later);
    b.decide(1, Reject);
    assert_eq!(b.decide(1, Ack), Due::Later);
    assert_eq!(b.decide(3, Ack), Due::Later);
    assert_eq!(b.decide(3, Release), Due::Later);
    assert_eq!(b.held(), 2);
    assert_eq!(flushed(&mut b), [rej(1, Reject), ack(3, 1)]);
    // At or below the floor, or sent ahead.
    assert_eq!(b.decide(1, Release), Due::Later);
    assert_eq!(b.decide(3, Release), Due::Later);
    assert_eq!(b.held(), 0);
    assert_eq!(flushed(&mut b), []);
}

/// The broker's view of the channel: tags 1..=n delivered, and which are
/// still unacked; plus each delivery's decision, to check the frames against.
struct Model {
    unacked: BTreeSet<u64>,
    decided: BTreeMap<u64, Settle>,
}

impl Model {
    /// Applies one frame as RabbitMQ would, or says why it would close the
    /// channel or mis-settle a delivery.
    fn apply(&mut self, frame: Frame) -> Result<(), String> {
        let (tag, covered, how) = match frame {
            Frame::Ack {
                tag,
                multiple,
                count,
            } => {
                let covered: Vec<u64> = if multiple {
                    self.unacked.range(..=tag).copied().collect()
                } else {
                    vec![tag]
                };
                if multiple != (covered.len() > 1) || count != covered.len() as u64 {
                    return Err(format!("{frame:?} covers {covered:?}"));
                }
                (tag, covered, Ack)
            }
            Frame::Reject { tag, how } => (tag, vec![tag], how),
        };
        if !self.unacked.contains(&tag) {
            return Err(format!("{frame:?}: unknown delivery tag {tag}"));
        }
        for t in covered {
            let decided = self.decided.get(&t);
            if decided != Some(&how) {
                return Err(format!("{frame:?} settles {t}, decided {decided:?}"));
            }
            self.unacked.remove(&t);
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// The next delivery of the order is decided.
    Next,
    /// Any delivery is decided: often a duplicate.
    Any(u64, Settle),
    /// The flusher's delay ran out (or consume_stop).
    Flush,
}

/// Drives a book as the settler does (flushing when told `Due::Now`),
/// checking every frame against the model and the book's promises.
struct Run {
    book: SettleBook,
    model: Model,
    /// The flusher was woken since the last flush.
    timer: bool,
}

impl Run {
    fn new(n: u64, prefetch: u16) -> Run {
        Run {
            book: SettleBook::new(prefetch),
            model: Model {
                unacked: (1..=n).collect(),
                decided: BTreeMap::new(),
            },
            timer: false,
        }
    }

    fn decide(&mut self, tag: u64, how: Settle) -> Result<(), TestCaseError> {
        let fresh = !self.model.decided.contains_key(&tag);
        let held = self.book.held();
        let due = self.book.decide(tag, how);
        if !fresh {
            prop_assert_eq!(due, Due::Later, "duplicate decision on {}", tag);
            prop_assert_eq!(self.book.held(), held);
            return Ok(());
        }
        self.model.decided.insert(tag, how);
        prop_assert_eq!(self.book.held(), held + 1);
        if how == Release {
            prop_assert_eq!(due, Due::Now, "a release is sent at once");
        }
        match due {
            Due::Now => self.flush()?,
            Due::Soon => {
                prop_assert_eq!(held, 0);
                self.timer = true;
            }
            Due::Later => prop_assert!(self.timer, "held {} with no flush due", tag),
        }
        prop_assert!(self.book.held() < self.book.batch);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TestCaseError> {
        let held = self.book.held();
        // Decided and unsent, in the model: all acks, with no undecided
        // delivery among or below them, coalesce into one frame.
        let unsent: Vec<(u64, Settle)> = (self.model.unacked.iter())
            .map_while(|t| self.model.decided.get(t).map(|how| (*t, *how)))
            .collect();
        let one_run = unsent.len() == held && unsent.iter().all(|(_, how)| *how == Ack);
        let mut frames = Vec::new();
        self.book.flush(&mut frames);
        self.timer = false;
        prop_assert!(frames.len() <= held, "{:?} for {} decisions", frames, held);
        let multiples = frames
            .iter()
            .filter(|f| matches!(f, Frame::Ack { multiple: true, .. }))
            .count();
        prop_assert!(multiples <= 1, "{:?}", frames);
        if held > 0 && one_run {
            prop_assert_eq!(frames.len(), 1, "{:?} for acks {:?}", frames, unsent);
        }
        for f in frames {
            self.model.apply(f).map_err(TestCaseError::fail)?;
        }
        prop_assert_eq!(self.book.held(), 0);
        // Everything decided is settled, exactly once (a second settle of a
        // tag fails in `apply`); nothing undecided is.
        for (tag, how) in &self.model.decided {
            prop_assert!(
                !self.model.unacked.contains(tag),
                "{} {:?} unsent",
                tag,
                how
            );
        }
        for tag in &self.model.unacked {
            prop_assert!(!self.model.decided.contains_key(tag));
        }
        Ok(())
    }
}

fn how(release: bool) -> BoxedStrategy<Settle> {
    if release {
        prop_oneof![8 => Just(Ack), 1 => Just(Reject), 1 => Just(Requeue), 1 => Just(Release)]
            .boxed()
    } else {
        prop_oneof![8 => Just(Ack), 1 => Just(Reject), 1 => Just(Requeue)].boxed()
    }
}

/// Deliveries 1..=n, the order their callbacks end in with their decisions,
/// and the steps interleaving them with duplicates and flushes.
fn scenario(release: bool) -> impl Strategy<Value = (u16, Vec<(u64, Settle)>, Vec<Step>)> {
    (1u64..100).prop_flat_map(move |n| {
        let prefetch = prop_oneof![Just(0u16), 1u16..40, 40u16..300];
        let order = Just((1..=n).collect::<Vec<u64>>()).prop_shuffle();
        let hows = prop::collection::vec(how(release), n as usize);
        let step = prop_oneof![
            12 => Just(Step::Next),
            2 => (1..=n, how(release)).prop_map(|(t, h)| Step::Any(t, h)),
            3 => Just(Step::Flush),
        ];
        let steps = prop::collection::vec(step, 0..(3 * n as usize));
        (prefetch, order, hows, steps)
            .prop_map(|(p, order, hows, steps)| (p, order.into_iter().zip(hows).collect(), steps))
    })
}

fn check(prefetch: u16, order: Vec<(u64, Settle)>, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let n = order.len() as u64;
    let mut run = Run::new(n, prefetch);
    let mut next = order.iter();
    for step in steps {
        match step {
            Step::Next => {
                if let Some(&(tag, how)) = next.next() {
                    run.decide(tag, how)?;
                }
            }
            Step::Any(tag, how) => run.decide(tag, how)?,
            Step::Flush => run.flush()?,
        }
    }
    // The rest of the callbacks end; the last flush leaves nothing behind.
    for &(tag, how) in next {
        run.decide(tag, how)?;
    }
    run.flush()?;
    prop_assert!(run.model.unacked.is_empty(), "{:?}", run.model.unacked);
    prop_assert_eq!(run.book.floor(), n);
    prop_assert!(run.book.slots.is_empty());
    Ok(())
}

proptest! {
    // No regression files: failures print their minimal input.
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_frame_is_accepted_and_settles_as_decided((prefetch, order, steps) in scenario(true)) {
        check(prefetch, order, steps)?;
    }

    /// Without releases (which flush at once), long runs and full batches.
    #[test]
    fn without_releases((prefetch, order, steps) in scenario(false)) {
        check(prefetch, order, steps)?;
    }
}
