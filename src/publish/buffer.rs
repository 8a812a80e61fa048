//! The per-queue publish buffer: a lock-free queue bounded by message count
//! and bytes. A message is counted from `amqp_publish` until the broker
//! confirms it, so the bounds cover what waits and what is in flight.

use crate::error::{Error, ErrorKind, Result};
use crossbeam_queue::SegQueue;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A waiter tries again at least this often: the low-water check in
/// `release_many` reads counts that may include other producers' failed,
/// not yet undone reservations, and could skip the last wake-up.
const ROOM_RECHECK: Duration = Duration::from_millis(10);

use super::bodies::Body;
use super::message::Message;

pub struct PublishBuffer {
    queue: SegQueue<Body>,
    count: AtomicU64,
    bytes: AtomicU64,
    max_count: u64,
    max_bytes: u64,
    /// Set by the publisher just before it sleeps; a push that finds it set
    /// wakes it. Pushes while the publisher is busy touch no shared waker.
    idle: AtomicBool,
    pub(crate) wake: Notify,
    /// Producers blocked in `wait_for_room`. Releases look at this counter
    /// only, so a buffer nobody waits on never touches the lock below.
    room_waiters: AtomicUsize,
    room_lock: Mutex<()>,
    room: Condvar,
}

impl PublishBuffer {
    pub fn new(max_count: u64, max_bytes: u64) -> Self {
        PublishBuffer {
            queue: SegQueue::new(),
            count: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            max_count,
            max_bytes,
            idle: AtomicBool::new(false),
            wake: Notify::new(),
            room_waiters: AtomicUsize::new(0),
            room_lock: Mutex::new(()),
            room: Condvar::new(),
        }
    }

    /// The largest body that can ever be stored.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Copies `body` in. Nothing is stored when a bound would be exceeded.
    #[cfg(test)]
    pub fn push(&self, body: &[u8]) -> Result<()> {
        self.push_message(body, 0, 0, 0, &[])
    }

    /// Copies `body` in, with the caller's tag, its publish time, its spool
    /// sequence number (0: none) and its metadata (`message::meta`; counted
    /// in the bytes). Nothing is stored when a bound would be exceeded.
    pub fn push_message(
        &self,
        body: &[u8],
        tag: u64,
        born_ms: u32,
        seq: u64,
        meta: &[u8],
    ) -> Result<()> {
        let len = (body.len() + meta.len()) as u64;
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.max_count {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(self.full_count());
        }
        let before = self.bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(self.full_bytes(before, len));
        }
        self.queue
            .push(Body::with_meta(tag, born_ms, seq, meta, body));
        Ok(())
    }

    /// After a push: whether the publisher was idle (the flag is taken, so
    /// one pusher alone sends now and wakes it).
    pub fn take_idle(&self) -> bool {
        self.idle.load(Ordering::SeqCst) && self.idle.swap(false, Ordering::SeqCst)
    }

    fn full_count(&self) -> Error {
        Error::new(
            ErrorKind::BufferFull,
            format!(
                "publish buffer full: {} messages (max_buffered)",
                self.max_count
            ),
        )
    }

    fn full_bytes(&self, before: u64, len: u64) -> Error {
        Error::new(
            ErrorKind::BufferFull,
            format!(
                "publish buffer full: {before} + {len} bytes exceeds max_buffered_bytes {}",
                self.max_bytes
            ),
        )
    }

    /// Whether a message of `len` bytes (body and metadata) fits now: the
    /// spool asks before writing it. Only releases can change the answer
    /// before the push when every push holds the spool's lock, as they do
    /// on a spooled queue.
    pub fn check_room(&self, len: u64) -> Result<()> {
        if self.count.load(Ordering::Acquire) >= self.max_count {
            return Err(self.full_count());
        }
        let before = self.bytes.load(Ordering::Acquire);
        if before + len > self.max_bytes {
            return Err(self.full_bytes(before, len));
        }
        Ok(())
    }

    /// A message the spool kept from an earlier run: stored whatever the
    /// bounds say (they refuse new publishes until it is confirmed).
    pub fn push_restored(&self, body: &[u8], tag: u64, seq: u64, meta: &[u8]) {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.bytes
            .fetch_add((body.len() + meta.len()) as u64, Ordering::AcqRel);
        self.queue.push(Body::with_meta(tag, 0, seq, meta, body));
    }

    pub fn pop(&self) -> Option<Message> {
        self.queue.pop().map(Message::from)
    }

    /// The publisher is about to sleep: marks it idle so the next push wakes
    /// it, unless a message slipped in (then false, and it must not sleep).
    pub fn set_idle_if_empty(&self) -> bool {
        self.idle.store(true, Ordering::SeqCst);
        if self.queue.is_empty() {
            true
        } else {
            self.idle.store(false, Ordering::SeqCst);
            false
        }
    }

    /// A confirmed message leaves memory (the publisher releases in
    /// batches with `release_many`).
    #[cfg(test)]
    pub fn release(&self, len: usize) {
        self.release_many(1, len as u64);
    }

    /// `count` confirmed messages of `bytes` in all leave memory.
    pub fn release_many(&self, count: u64, bytes: u64) {
        let count_before = self.count.fetch_sub(count, Ordering::AcqRel);
        let bytes_before = self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        // Pairs with the waiter's increment before its attempt: either that
        // attempt sees this release, or this load sees the waiter.
        fence(Ordering::SeqCst);
        if self.room_waiters.load(Ordering::Relaxed) > 0 {
            // Wake waiters once a sixteenth of a bound is free, not on every
            // confirm batch (a waiter that needs more goes back to sleep;
            // releases go on until the buffer is empty, so it is not stranded).
            let low_count = self.max_count - self.max_count / 16;
            let low_bytes = self.max_bytes - self.max_bytes / 16;
            if count_before - count <= low_count && bytes_before - bytes <= low_bytes {
                self.wake_room_waiters();
            }
        }
    }

    /// Wakes every producer in `wait_for_room` (room was made, or the queue
    /// closed: each one tries again and sees which).
    pub fn wake_room_waiters(&self) {
        let _held = crate::sync::lock(&self.room_lock);
        self.room.notify_all();
    }

    /// Calls `attempt` until it returns `Some` (stored, or failed for a
    /// reason other than a full buffer), sleeping between tries until a
    /// release makes room or `deadline` passes (`None`: no deadline).
    /// `attempt` runs under the room lock, so a release or a close between a
    /// failed attempt and the sleep still wakes it.
    pub fn wait_for_room<T>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        self.room_waiters.fetch_add(1, Ordering::SeqCst);
        let mut held = crate::sync::lock(&self.room_lock);
        let outcome = loop {
            if let Some(t) = attempt() {
                break Some(t);
            }
            let mut nap = ROOM_RECHECK;
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    break None;
                }
                nap = nap.min(d - now);
            }
            held = self
                .room
                .wait_timeout(held, nap)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        drop(held);
        self.room_waiters.fetch_sub(1, Ordering::SeqCst);
        outcome
    }

    /// Messages held (waiting + in flight).
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bounded_by_count() {
        let b = PublishBuffer::new(3, 1000);
        for _ in 0..3 {
            b.push(b"x").unwrap();
        }
        assert_eq!(b.push(b"x").unwrap_err().kind, ErrorKind::BufferFull);
        assert_eq!((b.count(), b.bytes()), (3, 3));
        let m = b.pop().unwrap();
        // Popping is not confirming: still counted until released.
        assert_eq!(b.push(b"x").unwrap_err().kind, ErrorKind::BufferFull);
        b.release(m.body.stored_len());
        b.push(b"y").unwrap();
        assert_eq!(b.count(), 3);
    }

    #[test]
    fn bounded_by_bytes_and_nothing_stored_on_failure() {
        let b = PublishBuffer::new(100, 25);
        b.push(&[0; 10]).unwrap();
        b.push(&[1; 10]).unwrap();
        let e = b.push(&[2; 10]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BufferFull);
        assert!(e.message.contains("max_buffered_bytes"));
        assert_eq!((b.count(), b.bytes()), (2, 20));
        b.push(&[3; 5]).unwrap();
        b.push(&[]).unwrap(); // exactly at the byte bound still fits
        assert_eq!(b.push(&[4]).unwrap_err().kind, ErrorKind::BufferFull);
    }

    #[test]
    fn fifo_order_and_empty_bodies() {
        let b = PublishBuffer::new(10, 10);
        b.push(b"").unwrap();
        b.push(b"ab").unwrap();
        assert_eq!(&*b.pop().unwrap().body, b"");
        assert_eq!(&*b.pop().unwrap().body, b"ab");
        assert!(b.pop().is_none());
    }

    #[test]
    fn a_waiter_stores_only_once_room_is_made() {
        let b = Arc::new(PublishBuffer::new(32, u64::MAX));
        for _ in 0..32 {
            b.push(b"m").unwrap();
        }
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || b.wait_for_room(None, || b.push(b"w").ok()))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "stored before any room was made");
        assert_eq!(b.count(), 32);
        // Two confirms leave 30 of 32, the low-water mark: a wake-up.
        b.pop().unwrap();
        b.pop().unwrap();
        b.release_many(2, 2);
        assert_eq!(waiter.join().unwrap(), Some(()));
        assert_eq!(b.count(), 31);
    }

    #[test]
    fn a_waiter_gives_up_at_its_deadline_with_nothing_stored() {
        let b = PublishBuffer::new(1, 100);
        b.push(b"m").unwrap();
        let t0 = Instant::now();
        let deadline = Some(t0 + Duration::from_millis(30));
        assert_eq!(b.wait_for_room(deadline, || b.push(b"w").ok()), None);
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert_eq!((b.count(), b.bytes()), (1, 1));
    }

    #[test]
    fn many_waiting_producers_store_everything_exactly_once() {
        // 4 producers x 2,000 messages through a buffer of 8, drained by a
        // consumer that releases one at a time: every message arrives once.
        let b = Arc::new(PublishBuffer::new(8, u64::MAX));
        let producers: Vec<_> = (0..4u8)
            .map(|p| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..2000u16 {
                        let [hi, lo] = i.to_be_bytes();
                        let msg = [p, hi, lo];
                        b.wait_for_room(None, || b.push(&msg).ok()).unwrap();
                    }
                })
            })
            .collect();
        let mut next = [0u16; 4];
        let mut got = 0;
        while got < 8000 {
            match b.pop() {
                Some(m) => {
                    let (p, i) = (
                        m.body[0] as usize,
                        u16::from_be_bytes([m.body[1], m.body[2]]),
                    );
                    assert_eq!(i, next[p], "producer {p} out of order");
                    next[p] += 1;
                    got += 1;
                    b.release(m.body.stored_len());
                }
                None => std::thread::yield_now(),
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!((b.count(), b.bytes()), (0, 0));
    }

    #[test]
    fn concurrent_pushes_never_exceed_bounds() {
        let b = Arc::new(PublishBuffer::new(1000, u64::MAX));
        let ok = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (b, ok) = (b.clone(), ok.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if b.push(b"m").is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ok.load(Ordering::Relaxed), 1000);
        assert_eq!(b.count(), 1000);
        let mut n = 0;
        while b.pop().is_some() {
            n += 1;
        }
        assert_eq!(n, 1000);
    }
}
