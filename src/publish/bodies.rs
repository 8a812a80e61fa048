//! Message bodies held by the publish buffer until the broker confirms them.
//!
//! A body is copied into a chunk of memory owned by the publishing thread
//! (a bump pointer: no lock, no malloc, no shared write), not into its own
//! allocation. A new chunk has all its pages touched at once, so the page
//! faults of fresh memory come in one burst per chunk (once per ~2,000
//! bodies of 64 B) instead of one in every ~40 publishes (they showed in a
//! cold burst's p99; docs/bench/HISTORY.md), and a chunk whose bodies are
//! all confirmed goes back to a process-wide free list and is reused (no
//! faults at all in steady state).
//!
//! A chunk counts its references in its first cache line. The writer pays
//! for every body it may ever cut from the chunk up front (`RESERVE`) and
//! hands back the unused part when it moves on, so creating a body touches
//! no shared counter; only dropping one does (on the publisher's thread).
//! Bodies larger than `MAX_POOLED_BODY`, and bodies published while the
//! thread's locals are being destroyed, get their own allocation instead.

use std::alloc::Layout;
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Bytes per chunk: 32 pages, a new one per ~2,000 bodies of 64 B.
const CHUNK_BYTES: usize = 128 << 10;
const PAGE: usize = 4096;
const CHUNK_LAYOUT: Layout = match Layout::from_size_align(CHUNK_BYTES, PAGE) {
    Ok(l) => l,
    Err(_) => panic!("chunk layout"),
};
/// The reference count's own cache line; bodies start after it.
const HEADER: usize = 64;
/// More references than bodies a chunk can hold (each is at least a byte).
const RESERVE: usize = CHUNK_BYTES;
/// Larger bodies are allocated on their own (a chunk would hold few).
pub const MAX_POOLED_BODY: usize = CHUNK_BYTES / 8;
/// Free chunks kept for reuse (8 MiB); more are freed.
const MAX_FREE_CHUNKS: usize = 64;

/// Addresses of free chunks (usize: raw pointers are not `Send`).
static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// A chunk: `CHUNK_BYTES` from the global allocator, its reference count
/// at the start. Its bytes are written only by the thread whose `CURRENT`
/// holds it, only beyond the `used` mark (no body covers those yet); a
/// body's bytes are written before the body exists, and a body reaches
/// another thread only through a synchronizing hand-off (the buffer's
/// queue), so every read of them happens after their write. It is reused
/// only after its count reached zero (release, then an acquire fence).
#[derive(Clone, Copy)]
struct Chunk(NonNull<u8>);

impl Chunk {
    fn refs(&self) -> &AtomicUsize {
        // SAFETY: the first bytes of a live chunk, page-aligned, initialised
        // in `take` before any other use.
        unsafe { &*(self.0.as_ptr() as *const AtomicUsize) }
    }

    /// A chunk with `RESERVE` references, all the writer's.
    fn take() -> Option<Chunk> {
        let reused = FREE.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let ptr = match reused.and_then(|a| NonNull::new(a as *mut u8)) {
            Some(p) => {
                #[cfg(test)]
                tests::TAKEN.with(|t| t.set((t.get().0, t.get().1 + 1)));
                p
            }
            None => {
                #[cfg(test)]
                tests::TAKEN.with(|t| t.set((t.get().0 + 1, t.get().1)));
                // SAFETY: a non-zero-sized layout.
                let p = NonNull::new(unsafe { std::alloc::alloc(CHUNK_LAYOUT) })?;
                // Fault every page in now, in one go, rather than one per
                // ~40 publishes later.
                for off in (0..CHUNK_BYTES).step_by(PAGE) {
                    // SAFETY: inside the allocation, which is ours alone.
                    unsafe { p.as_ptr().add(off).write_volatile(0) };
                }
                p
            }
        };
        // SAFETY: ours alone (fresh, or its count reached zero); aligned.
        unsafe { (ptr.as_ptr() as *mut AtomicUsize).write(AtomicUsize::new(RESERVE)) };
        Some(Chunk(ptr))
    }

    /// Gives back `n` references; the last one frees the chunk.
    fn release(self, n: usize) {
        if self.refs().fetch_sub(n, Ordering::Release) == n {
            fence(Ordering::Acquire);
            self.recycle();
        }
    }

    fn recycle(self) {
        let addr = self.0.as_ptr() as usize;
        {
            let mut free = FREE.lock().unwrap_or_else(|p| p.into_inner());
            if free.len() < MAX_FREE_CHUNKS {
                free.push(addr);
                return;
            }
        }
        // SAFETY: allocated by `take` with this layout; no body refers to it.
        unsafe { std::alloc::dealloc(addr as *mut u8, CHUNK_LAYOUT) };
    }
}

/// The chunk this thread is filling: how much of it is used, and how many
/// of the writer's references it has handed to bodies.
struct Current {
    chunk: Chunk,
    used: usize,
    issued: usize,
}

impl Drop for Current {
    /// The writer moves on: it keeps no reference, the bodies keep theirs.
    fn drop(&mut self) {
        self.chunk.release(RESERVE - self.issued);
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// An immutable message body, and in front of its bytes (in the same
/// memory) the message's tag, publish time and metadata (its own routing
/// key and encoded properties, `publish::meta`): a buffered message is one
/// queue slot of 32 bytes, however much the outbox knows about it.
pub struct Body(Repr);

/// Bytes before the metadata: tag (8), publish time in ms (4), the
/// metadata's length (4) and the spool's sequence number (8; 0: not
/// spooled), little-endian. The body follows the metadata.
const PREFIX: usize = 24;

enum Repr {
    /// Holds one reference to `chunk`; `offset` is where the prefix starts,
    /// `len` the body's length after it.
    Pooled { chunk: Chunk, offset: u32, len: u32 },
    /// The prefix, the metadata, then the body.
    Owned(Box<[u8]>),
}

// SAFETY: a pooled body only reads bytes that no one writes any more, and
// gives back its reference with an atomic operation (see `Chunk`), so it may
// be dropped on any thread; an owned body is a plain Box<[u8]>.
unsafe impl Send for Body {}
// SAFETY: `&Body` only reads the body's bytes, which no one writes once the
// body exists (see `Chunk`); nothing in a Body changes through `&`.
unsafe impl Sync for Body {}

impl Body {
    /// Copies `bytes` into this thread's chunk (or its own allocation).
    #[cfg(test)]
    pub fn copy_from(bytes: &[u8]) -> Body {
        Body::with_meta(0, 0, 0, &[], bytes)
    }

    /// Copies the tag, the publish time, the spool's sequence number (0:
    /// none), `meta` (empty for a plain publish) and `bytes` into this
    /// thread's chunk (or an allocation of their own).
    pub fn with_meta(tag: u64, born_ms: u32, seq: u64, meta: &[u8], bytes: &[u8]) -> Body {
        let mut prefix = [0u8; PREFIX];
        prefix[..8].copy_from_slice(&tag.to_le_bytes());
        prefix[8..12].copy_from_slice(&born_ms.to_le_bytes());
        prefix[12..16].copy_from_slice(&(meta.len() as u32).to_le_bytes());
        prefix[16..].copy_from_slice(&seq.to_le_bytes());
        if bytes.len() + meta.len() <= MAX_POOLED_BODY {
            let pooled =
                CURRENT.try_with(|cur| pooled(&mut cur.borrow_mut(), &prefix, meta, bytes));
            if let Ok(Some(body)) = pooled {
                return body;
            }
        }
        let mut owned = Vec::with_capacity(PREFIX + meta.len() + bytes.len());
        owned.extend_from_slice(&prefix);
        owned.extend_from_slice(meta);
        owned.extend_from_slice(bytes);
        Body(Repr::Owned(owned.into_boxed_slice()))
    }

    /// The prefix and the metadata.
    #[inline]
    fn head(&self) -> &[u8] {
        let p = self.prefix();
        let meta = u32::from_le_bytes([p[12], p[13], p[14], p[15]]) as usize;
        match &self.0 {
            // SAFETY: written once, before this body existed (see `Chunk`);
            // `pooled` wrote the metadata right after the prefix.
            Repr::Pooled { chunk, offset, .. } => unsafe {
                std::slice::from_raw_parts(chunk.0.as_ptr().add(*offset as usize), PREFIX + meta)
            },
            Repr::Owned(b) => &b[..PREFIX + meta],
        }
    }

    /// The metadata given with the publish (empty for a plain one).
    #[inline]
    pub fn meta(&self) -> &[u8] {
        &self.head()[PREFIX..]
    }

    /// Bytes held for the message: the body and its metadata.
    #[inline]
    pub fn stored_len(&self) -> usize {
        self.head().len() - PREFIX + self.len()
    }

    #[inline]
    fn prefix(&self) -> &[u8] {
        match &self.0 {
            // SAFETY: written once, before this body existed (see `Chunk`).
            Repr::Pooled { chunk, offset, .. } => unsafe {
                std::slice::from_raw_parts(chunk.0.as_ptr().add(*offset as usize), PREFIX)
            },
            Repr::Owned(b) => &b[..PREFIX],
        }
    }

    /// The tag given with the publish.
    pub fn tag(&self) -> u64 {
        let p = self.prefix();
        u64::from_le_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]])
    }

    /// The spool's sequence number of the message (0: not spooled).
    pub fn seq(&self) -> u64 {
        let p = self.prefix();
        u64::from_le_bytes([p[16], p[17], p[18], p[19], p[20], p[21], p[22], p[23]])
    }

    /// The publish time (ms since the outbox's epoch; 0 when not kept).
    pub fn born_ms(&self) -> u32 {
        let p = self.prefix();
        u32::from_le_bytes([p[8], p[9], p[10], p[11]])
    }
}

fn pooled(
    cur: &mut Option<Current>,
    prefix: &[u8; PREFIX],
    meta: &[u8],
    bytes: &[u8],
) -> Option<Body> {
    let len = bytes.len();
    let head = PREFIX + meta.len();
    if cur
        .as_ref()
        .is_none_or(|c| c.used + head + len > CHUNK_BYTES)
    {
        // Dropping the old `Current` hands back its unused references.
        *cur = None;
        *cur = Some(Current {
            chunk: Chunk::take()?,
            used: HEADER,
            issued: 0,
        });
    }
    let c = cur.as_mut()?;
    // SAFETY: `used + head + len <= CHUNK_BYTES`, and these bytes belong
    // to no body yet (see `Chunk`); `prefix`, `meta` and `bytes` cannot
    // overlap a region we own.
    unsafe {
        let at = c.chunk.0.as_ptr().add(c.used);
        std::ptr::copy_nonoverlapping(prefix.as_ptr(), at, PREFIX);
        if !meta.is_empty() {
            std::ptr::copy_nonoverlapping(meta.as_ptr(), at.add(PREFIX), meta.len());
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), at.add(head), len);
    }
    let body = Body(Repr::Pooled {
        chunk: c.chunk,
        offset: c.used as u32,
        len: len as u32,
    });
    c.used += head + len;
    c.issued += 1;
    Some(body)
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Repr::Pooled { chunk, .. } = self.0 {
            chunk.release(1);
        }
    }
}

impl std::ops::Deref for Body {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.0 {
            // SAFETY: written once, before this body existed (see `Chunk`);
            // the body ends the bytes `pooled` wrote, `len` long.
            Repr::Pooled { chunk, offset, len } => unsafe {
                let p = chunk.0.as_ptr().add(*offset as usize);
                let meta = u32::from_le_bytes(*(p.add(12) as *const [u8; 4])) as usize;
                std::slice::from_raw_parts(p.add(PREFIX + meta), *len as usize)
            },
            Repr::Owned(b) => {
                let meta = u32::from_le_bytes([b[12], b[13], b[14], b[15]]) as usize;
                &b[PREFIX + meta..]
            }
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Chunks this thread allocated fresh, and took from the free list.
        pub static TAKEN: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    }

    fn pattern(seed: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7)) as u8)
            .collect()
    }

    #[test]
    fn bodies_keep_their_bytes_across_chunk_boundaries() {
        // Sizes that leave odd remainders, so bodies land at every offset
        // and some do not fit what is left of a chunk.
        let sizes = [1usize, 63, 64, 65, 1000, 4096, MAX_POOLED_BODY, 7];
        let mut kept = Vec::new();
        for i in 0..5000u64 {
            let len = sizes[i as usize % sizes.len()];
            let want = pattern(i, len);
            kept.push((Body::copy_from(&want), want));
        }
        for (b, want) in &kept {
            assert_eq!(&b[..], &want[..]);
        }
    }

    #[test]
    fn large_and_empty_bodies() {
        let big = pattern(9, MAX_POOLED_BODY + 1);
        let b = Body::copy_from(&big);
        assert!(matches!(b.0, Repr::Owned(_)));
        assert_eq!(&b[..], &big[..]);
        let e = Body::copy_from(&[]);
        assert!(e.is_empty());
        let small = Body::copy_from(b"abc");
        assert!(matches!(small.0, Repr::Pooled { .. }));
    }

    #[test]
    fn the_tag_and_publish_time_travel_with_the_body() {
        for len in [0usize, 1, 64, MAX_POOLED_BODY, MAX_POOLED_BODY + 1] {
            let bytes = pattern(len as u64, len);
            let b = Body::with_meta(u64::MAX - len as u64, 0xdead_beef, 9, &[], &bytes);
            assert_eq!((b.tag(), b.born_ms()), (u64::MAX - len as u64, 0xdead_beef));
            assert_eq!(b.seq(), 9);
            assert_eq!(&b[..], &bytes[..]);
            assert!(b.meta().is_empty());
            let meta = pattern(7, len % 300 + 1);
            let m = Body::with_meta(len as u64, 5, 0, &meta, &bytes);
            assert_eq!((m.tag(), m.born_ms()), (len as u64, 5));
            assert_eq!((&m[..], m.meta()), (&bytes[..], &meta[..]));
            assert_eq!(m.stored_len(), len + meta.len());
        }
        assert_eq!(std::mem::size_of::<Body>(), 24);
    }

    #[test]
    fn bodies_read_on_other_threads_and_chunks_are_reused() {
        // 8 producers hand 20,000 bodies each (~20 MB in all) to a reader
        // that checks and drops them; a bounded channel keeps few alive, so
        // chunks must be reused rather than allocated anew.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Body, u64, usize)>(256);
        let producers: Vec<_> = (0..8u64)
            .map(|p| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let seed = p << 32 | i;
                        let len = 1 + (seed % 200) as usize;
                        tx.send((Body::copy_from(&pattern(seed, len)), seed, len))
                            .unwrap();
                    }
                    TAKEN.with(|t| t.get())
                })
            })
            .collect();
        drop(tx);
        let mut n = 0;
        for (b, seed, len) in rx {
            assert_eq!(&b[..], &pattern(seed, len)[..], "body {seed:#x}");
            n += 1;
        }
        let (mut fresh, mut reused) = (0, 0);
        for p in producers {
            let (f, r) = p.join().unwrap();
            fresh += f;
            reused += r;
        }
        assert_eq!(n, 160_000);
        // ~16 MB of bodies went through ~125 chunks of 128 KiB; few bodies
        // are alive at a time, so most chunks are reused ones (other tests
        // share the free list, hence the margin).
        assert!(
            fresh + reused >= 120 && reused > fresh,
            "{fresh} chunks allocated, {reused} reused"
        );
    }
}
