//! The per-queue publish buffer: a lock-free queue bounded by message count
//! and bytes. A message is counted from `amqp_publish` until the broker
//! confirms it, so the bounds cover what waits and what is in flight.

use crate::error::{Error, ErrorKind, Result};
use crossbeam_queue::SegQueue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Notify;

/// One message body, owned by the buffer, then the publish window, until
/// the broker confirms it (a Box: 16 bytes less per message than an Arc).
pub type Body = Box<[u8]>;

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
        }
    }

    /// Copies `body` in. Nothing is stored when a bound would be exceeded.
    pub fn push(&self, body: &[u8]) -> Result<()> {
        let len = body.len() as u64;
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.max_count {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::new(
                ErrorKind::BufferFull,
                format!(
                    "publish buffer full: {} messages (max_buffered)",
                    self.max_count
                ),
            ));
        }
        let before = self.bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::new(
                ErrorKind::BufferFull,
                format!(
                    "publish buffer full: {before} + {len} bytes exceeds max_buffered_bytes {}",
                    self.max_bytes
                ),
            ));
        }
        self.queue.push(Box::from(body));
        if self.idle.load(Ordering::SeqCst) && self.idle.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
        Ok(())
    }

    pub fn pop(&self) -> Option<Body> {
        self.queue.pop()
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

    /// A confirmed message leaves memory.
    pub fn release(&self, len: usize) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(len as u64, Ordering::AcqRel);
    }

    /// `count` confirmed messages of `bytes` in all leave memory.
    pub fn release_many(&self, count: u64, bytes: u64) {
        self.count.fetch_sub(count, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
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
        b.release(m.len());
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
        assert_eq!(&*b.pop().unwrap(), b"");
        assert_eq!(&*b.pop().unwrap(), b"ab");
        assert!(b.pop().is_none());
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
