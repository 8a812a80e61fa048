//! `Carry` with `ConfirmWindow` against a model broker: it stores what it
//! takes and acks it, nacks at random, and closes the channel on a poison
//! message (losing the confirms of what was in flight). Whatever the
//! window, the poison, the nacks: every message ends exactly once; a poison
//! message fails, a good one is confirmed unless nacked too often; resends
//! keep their order; duplicates stay within one window per incident.

use super::*;
use std::collections::{BTreeMap, HashSet};

const RETRIES: u16 = 3;

/// A small xorshift; every seed is a different run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn msg(id: u64) -> Message {
    Message::new(&id.to_be_bytes(), id, 0)
}

fn id(m: &Message) -> u64 {
    m.tag()
}

#[derive(Default)]
struct Outcome {
    confirmed: HashSet<u64>,
    failed_nacked: HashSet<u64>,
    failed_refused: HashSet<u64>,
    /// Copies the broker stored, per message.
    stored: BTreeMap<u64, u32>,
    incidents: u64,
}

impl Outcome {
    fn end(&mut self, id: u64, set: fn(&mut Outcome) -> &mut HashSet<u64>) {
        let ended = self.confirmed.contains(&id)
            || self.failed_nacked.contains(&id)
            || self.failed_refused.contains(&id);
        assert!(!ended, "message {id} ended twice");
        set(self).insert(id);
    }
}

// Long: one loop is the model broker and the publisher, step by step.
/// Runs `n` messages through a model broker; `nack_per_mille` of the
/// publishes it nacks, and it closes the channel on the `poison` ones.
fn run(seed: u64, n: u64, window: usize, poison: &HashSet<u64>, nack_per_mille: u64) -> Outcome {
    let mut rng = Rng(seed | 1);
    let mut fresh: VecDeque<Message> = (0..n).map(msg).collect();
    let mut carry = Carry::default();
    let mut out = Outcome::default();
    let mut now = Instant::now();
    let mut rounds = 0;
    while out.confirmed.len() + out.failed_nacked.len() + out.failed_refused.len() < n as usize {
        rounds += 1;
        assert!(rounds < 100_000, "no progress");
        // A channel: send, let the broker answer a random prefix, repeat.
        let mut w: ConfirmWindow<Message> = ConfirmWindow::new(window, u64::MAX);
        let mut last_sent: Option<u64> = None;
        'channel: loop {
            now += Duration::from_millis(1);
            if !carry.backing_off(now) {
                while carry.may_send(&w) {
                    let Some(mut m) = carry.next(|| fresh.pop_front()) else {
                        break;
                    };
                    m.sends += 1;
                    // Order: a resend never overtakes an older unsent message.
                    if m.sends == 1 {
                        assert!(last_sent.is_none_or(|l| l < id(&m) || m.nacks > 0));
                        last_sent = Some(id(&m));
                    }
                    w.push(m);
                }
            }
            if w.is_empty() {
                if carry.retry.is_empty() && fresh.is_empty() {
                    break 'channel;
                }
                continue;
            }
            // The broker takes the first k in flight, in order.
            let k = 1 + rng.below(w.len() as u64) as usize;
            let first_tag = w.next_tag() - w.len() as u64;
            for i in 0..k {
                let tag = first_tag + i as u64;
                let pending_id = peek_id(&w, i);
                if poison.contains(&pending_id) {
                    // The channel closes: confirms of the rest are lost,
                    // though the broker stored what came before.
                    out.incidents += 1;
                    let mut unconfirmed = Vec::new();
                    w.take_all_with(|m, acked| {
                        if acked {
                            out.end(id(&m), |o| &mut o.confirmed);
                        } else {
                            unconfirmed.push(m);
                        }
                    });
                    if let Some(culprit) = carry.channel_lost(unconfirmed, true) {
                        assert!(poison.contains(&id(&culprit)), "blamed {}", id(&culprit));
                        out.end(id(&culprit), |o| &mut o.failed_refused);
                    }
                    break 'channel;
                }
                *out.stored.entry(pending_id).or_insert(0) += 1;
                let nack = rng.below(1000) < nack_per_mille;
                if nack {
                    // A nacked message was not stored.
                    *out.stored.get_mut(&pending_id).unwrap() -= 1;
                }
                w.settle(tag, false, nack);
            }
            let (mut nacked, mut acked) = (Vec::new(), false);
            w.release_settled_with(|mut m, ack| match carry.released(&mut m, ack, RETRIES) {
                Verdict::Confirmed => {
                    acked = true;
                    out.end(id(&m), |o| &mut o.confirmed);
                }
                Verdict::Failed => out.end(id(&m), |o| &mut o.failed_nacked),
                Verdict::Resend => nacked.push(m),
            });
            carry.resend(nacked, acked, now, |step| {
                Duration::from_millis(1 << step.min(6))
            });
        }
    }
    out
}

/// The id of the `i`th message in flight.
fn peek_id(w: &ConfirmWindow<Message>, i: usize) -> u64 {
    w.peek(i).map(id).expect("in flight")
}

#[test]
fn every_message_ends_once_and_only_poison_is_refused() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed * 7919);
        let n = 1 + rng.below(120);
        let window = 1 + rng.below(20) as usize;
        let poison: HashSet<u64> = (0..n).filter(|_| rng.below(20) == 0).collect();
        let nacks = [0, 0, 50, 300][rng.below(4) as usize];
        let out = run(seed, n, window, &poison, nacks);
        assert_eq!(out.failed_refused, poison, "seed {seed}: refused");
        for i in 0..n {
            let stored = out.stored.get(&i).copied().unwrap_or(0);
            if out.confirmed.contains(&i) {
                assert!(stored >= 1, "seed {seed}: {i} confirmed, not stored");
            }
            if poison.contains(&i) {
                assert_eq!(stored, 0, "seed {seed}: poison {i} stored");
            }
        }
        if nacks == 0 {
            assert!(out.failed_nacked.is_empty(), "seed {seed}");
            let good = n as usize - poison.len();
            assert_eq!(out.confirmed.len(), good, "seed {seed}");
        }
        let dups: u32 = out.stored.values().map(|&c| c.saturating_sub(1)).sum();
        assert!(
            u64::from(dups) <= window as u64 * out.incidents,
            "seed {seed}: {dups} duplicates, window {window} x {} incidents",
            out.incidents
        );
    }
}

#[test]
fn nacks_back_off_longer_in_a_row_and_an_ack_ends_the_streak() {
    let mut c = Carry::default();
    let t0 = Instant::now();
    let step = |s: u32| Duration::from_millis(100 << s);
    assert_eq!(
        c.resend(vec![msg(1)], false, t0, step),
        Some(Duration::from_millis(100))
    );
    assert!(c.backing_off(t0 + Duration::from_millis(99)));
    assert!(!c.backing_off(t0 + Duration::from_millis(100)));
    assert_eq!(
        c.resend(vec![msg(2)], false, t0, step),
        Some(Duration::from_millis(200))
    );
    // Resends go first, in send order: 2 was nacked after 1 was queued.
    assert_eq!(c.retry.iter().map(id).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(c.resend(Vec::new(), true, t0, step), None);
    assert_eq!(c.nack_streak, 0);
    assert_eq!(
        c.resend(vec![msg(3)], false, t0, step),
        Some(Duration::from_millis(100))
    );
}

#[test]
fn a_message_fails_after_publish_retries_nacks() {
    let mut c = Carry::default();
    let mut m = msg(1);
    for _ in 0..RETRIES {
        assert_eq!(c.released(&mut m, false, RETRIES), Verdict::Resend);
    }
    assert_eq!(c.released(&mut m, false, RETRIES), Verdict::Failed);
    assert_eq!(c.released(&mut msg(2), true, RETRIES), Verdict::Confirmed);
}
