//! The on-disk spool of a queue (option `spool_dir`): every message
//! `amqp_publish` accepts is appended to a checksummed log before the call
//! returns, and forgotten once it ended (confirmed, or failed with a
//! report). A process that opens the same directory gets the messages that
//! never ended back, in publish order, and sends them first.
//!
//! On disk: a directory with a lock file (`LOCK`, `flock`ed by the one
//! process that uses it), a `QUEUE` file naming the queue it belongs to,
//! and segment files `<first seq, 16 hex digits>.seg` of records
//! (`record`): message records and forget records. A segment is deleted
//! once it and every older one hold no message that has not ended (forget
//! records only ever name older messages, so deleting from the front
//! cannot bring a forgotten message back). A process always starts a new
//! segment: a torn tail stays the tail of its own segment.
//!
//! What survives what (`SyncMode`): a record is written (`write(2)`, in the
//! kernel's page cache) before `append` returns, so a process crash or
//! SIGKILL loses nothing; a power cut loses what was not `fdatasync`ed:
//! nothing with `Always`, the last `BATCH_INTERVAL` with `Batch`, anything
//! not yet written back by the kernel with `None`. Forget records are never
//! synced on their own: a lost one sends its message again (a duplicate).

mod record;
#[cfg(test)]
mod tests;

pub(crate) use record::Record;

use crate::error::{Error, ErrorKind, Result};
use crate::sync::lock;
use record::{Entry, Tail};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often `Batch` syncs what was written.
pub(crate) const BATCH_INTERVAL: Duration = Duration::from_millis(10);
/// A new segment is started once the current one is this large.
pub(crate) const SEGMENT_BYTES: u64 = 16 << 20;

/// When written records reach the disk itself (not only the page cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// `fdatasync` before `append` returns (concurrent appends share one).
    Always,
    /// `fdatasync` by a background thread every `BATCH_INTERVAL`.
    Batch,
    /// Never: the kernel writes back when it likes.
    None,
}

#[derive(Clone, Debug)]
pub(crate) struct SpoolConfig {
    pub dir: PathBuf,
    pub sync: SyncMode,
    /// Bound on the bytes (metadata + body) of messages not ended.
    pub max_bytes: u64,
    pub segment_bytes: u64,
    /// The queue it belongs to: another queue's spool is refused.
    pub queue: String,
}

/// Counters (all monotonic but `live_*`).
#[derive(Default, Debug)]
pub(crate) struct SpoolStats {
    pub appended: AtomicU64,
    pub forgotten: AtomicU64,
    /// Messages handed back at open.
    pub restored: AtomicU64,
    /// Damaged or torn tails found at open, and their bytes (dropped).
    pub bad_tails: AtomicU64,
    pub dropped_bytes: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub syncs: AtomicU64,
    /// Gauges: messages not ended, and their bytes.
    pub live: AtomicU64,
    pub live_bytes: AtomicU64,
}

struct Segment {
    first: u64,
    path: PathBuf,
    /// Messages in it that have not ended.
    live: u64,
}

struct Inner {
    next_seq: u64,
    file: Arc<File>,
    /// Bytes in the current segment.
    size: u64,
    /// Bytes written since open, all segments (sync positions).
    written: u64,
    /// A write failed: the current segment may end in a torn record.
    broken: bool,
    segments: Vec<Segment>,
    live_bytes: u64,
    scratch: Vec<u8>,
    /// `close` ran: nothing is written any more (another process may own
    /// the directory now).
    closed: bool,
}

pub(crate) struct Spool {
    cfg: SpoolConfig,
    inner: Mutex<Inner>,
    /// `written` up to which data is on disk.
    synced: AtomicU64,
    /// Held by the one thread syncing (taken before `inner`).
    syncing: Mutex<()>,
    pub stats: SpoolStats,
    /// The directory's lock, held until `close` (or the drop).
    lock_file: Mutex<Option<File>>,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("spool: {what} {}: {e}", path.display()))
}

impl Spool {
    /// Opens (creates) the spool in `cfg.dir`: takes its lock, reads every
    /// segment and returns the messages that never ended, oldest first.
    /// Damaged tails are dropped, logged and counted. With `Batch` a thread
    /// syncs every `BATCH_INTERVAL` while the returned `Arc` lives.
    pub fn open(cfg: SpoolConfig) -> Result<(Arc<Spool>, Vec<Record>)> {
        let dir = &cfg.dir;
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        let lock_file = take_lock(dir)?;
        check_queue(dir, &cfg.queue)?;
        let stats = SpoolStats::default();
        let (segments, live, max_seq) = load(dir, &stats)?;
        let live_bytes: u64 = live
            .values()
            .map(|(r, _)| (r.meta.len() + r.body.len()) as u64)
            .sum();
        let next_seq = max_seq + 1;
        let mut segments = segments;
        let file = start_segment(dir, &mut segments, next_seq, cfg.sync)?;
        let records: Vec<Record> = live.into_values().map(|(r, _)| r).collect();
        stats
            .restored
            .store(records.len() as u64, Ordering::Relaxed);
        stats.live.store(records.len() as u64, Ordering::Relaxed);
        stats.live_bytes.store(live_bytes, Ordering::Relaxed);
        let spool = Arc::new(Spool {
            inner: Mutex::new(Inner {
                next_seq,
                file: Arc::new(file),
                size: 0,
                written: 0,
                broken: false,
                segments,
                live_bytes,
                scratch: Vec::new(),
                closed: false,
            }),
            cfg,
            synced: AtomicU64::new(0),
            syncing: Mutex::new(()),
            stats,
            lock_file: Mutex::new(Some(lock_file)),
        });
        spool.reclaim(&mut lock(&spool.inner));
        if spool.cfg.sync == SyncMode::Batch {
            spawn_syncer(&spool)?;
        }
        Ok((spool, records))
    }

    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Asks `room()` whether the caller can take the message (its error is
    /// returned, nothing written), writes a message record, then calls
    /// `accept(seq)` (the caller stores the message; should it fail after
    /// all, the record is forgotten again and its error returned); both
    /// run under the spool's lock, so what `accept` stores is in `seq`
    /// order. `BufferFull` when the spool holds `max_bytes` already.
    /// Returns after the sync its mode promises.
    pub fn append(
        &self,
        tag: u64,
        meta: &[u8],
        body: &[u8],
        room: impl FnOnce() -> Result<()>,
        accept: impl FnOnce(u64) -> Result<()>,
    ) -> Result<()> {
        let len = (meta.len() + body.len()) as u64;
        let mut g = lock(&self.inner);
        if g.closed {
            return Err(Error::new(
                ErrorKind::Closed,
                format!("spool {} is closed", self.cfg.dir.display()),
            ));
        }
        room()?;
        if g.live_bytes + len > self.cfg.max_bytes {
            return Err(Error::new(
                ErrorKind::BufferFull,
                format!(
                    "spool full: {} + {len} bytes exceeds spool_max_bytes {} ({})",
                    g.live_bytes,
                    self.cfg.max_bytes,
                    self.cfg.dir.display()
                ),
            ));
        }
        if g.broken || g.size >= self.cfg.segment_bytes {
            self.roll(&mut g)?;
        }
        let seq = g.next_seq;
        let mut buf = std::mem::take(&mut g.scratch);
        buf.clear();
        record::encode_message(&mut buf, seq, tag, meta, body);
        let wrote = self.write(&mut g, &buf);
        g.scratch = buf;
        wrote?;
        g.next_seq += 1;
        if let Some(s) = g.segments.last_mut() {
            s.live += 1;
        }
        if let Err(e) = accept(seq) {
            self.forget_locked(&mut g, &[(seq, 1)]);
            return Err(e);
        }
        g.live_bytes += len;
        let at = g.written;
        drop(g);
        self.stats.appended.fetch_add(1, Ordering::Relaxed);
        self.stats.live.fetch_add(1, Ordering::Relaxed);
        self.stats.live_bytes.fetch_add(len, Ordering::Relaxed);
        if self.cfg.sync == SyncMode::Always {
            self.sync_to(at)?;
        }
        Ok(())
    }

    /// The messages `seqs` (any order) ended, `bytes` of metadata and body
    /// in all: a forget record is written (not synced) and segments that
    /// hold nothing live any more are deleted.
    pub fn forget(&self, seqs: &mut [u64], bytes: u64) {
        if seqs.is_empty() {
            return;
        }
        seqs.sort_unstable();
        let ranges = record::ranges(seqs);
        let mut g = lock(&self.inner);
        if g.closed {
            // They stay in the spool: the next process sends them again.
            return;
        }
        self.forget_locked(&mut g, &ranges);
        g.live_bytes = g.live_bytes.saturating_sub(bytes);
        drop(g);
        self.stats
            .forgotten
            .fetch_add(seqs.len() as u64, Ordering::Relaxed);
        let _ = self
            .stats
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(seqs.len() as u64))
            });
        let _ = self
            .stats
            .live_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(bytes))
            });
    }

    fn forget_locked(&self, g: &mut Inner, ranges: &[(u64, u32)]) {
        if g.broken {
            // Not after a torn record: it would be lost with the tail.
            if let Err(e) = self.roll(g) {
                warn!("{e}; the ended messages may be sent again after a restart");
                return;
            }
        }
        let mut buf = std::mem::take(&mut g.scratch);
        buf.clear();
        record::encode_forget(&mut buf, ranges);
        if let Err(e) = self.write(g, &buf) {
            warn!("{e}; the ended messages may be sent again after a restart");
        }
        g.scratch = buf;
        for &(first, n) in ranges {
            for seq in first..first + u64::from(n) {
                let i = g.segments.partition_point(|s| s.first <= seq);
                if let Some(s) = i.checked_sub(1).and_then(|i| g.segments.get_mut(i)) {
                    s.live = s.live.saturating_sub(1);
                }
            }
        }
        self.reclaim(g);
    }

    fn write(&self, g: &mut Inner, buf: &[u8]) -> Result<()> {
        match (&*g.file).write_all(buf) {
            Ok(()) => {
                g.size += buf.len() as u64;
                g.written += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                g.broken = true;
                Err(io_error("cannot write to", &self.cfg.dir, e))
            }
        }
    }

    /// Starts a new segment (the current one synced first unless `None`).
    fn roll(&self, g: &mut Inner) -> Result<()> {
        if self.cfg.sync != SyncMode::None {
            g.file
                .sync_data()
                .map_err(|e| io_error("cannot sync", &self.cfg.dir, e))?;
            self.synced.fetch_max(g.written, Ordering::AcqRel);
        }
        // Names are never reused (a segment may hold forget records only).
        if let Some(last) = g.segments.last() {
            g.next_seq = g.next_seq.max(last.first + 1);
        }
        let file = start_segment(&self.cfg.dir, &mut g.segments, g.next_seq, self.cfg.sync)?;
        g.file = Arc::new(file);
        g.size = 0;
        g.broken = false;
        self.reclaim(g);
        Ok(())
    }

    /// Deletes the oldest segments while they hold nothing live (never
    /// the current one).
    fn reclaim(&self, g: &mut Inner) {
        while g.segments.len() > 1 && g.segments[0].live == 0 {
            let s = g.segments.remove(0);
            if let Err(e) = std::fs::remove_file(&s.path) {
                warn!("spool: cannot delete {}: {e}", s.path.display());
            }
            self.stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Syncs everything written up to `at` (group commit: one sync covers
    /// every append before it).
    fn sync_to(&self, at: u64) -> Result<()> {
        let _one = lock(&self.syncing);
        if self.synced.load(Ordering::Acquire) >= at {
            return Ok(());
        }
        let (file, upto) = {
            let g = lock(&self.inner);
            (g.file.clone(), g.written)
        };
        file.sync_data()
            .map_err(|e| io_error("cannot sync", &self.cfg.dir, e))?;
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.synced.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Syncs everything written so far.
    pub fn sync(&self) -> Result<()> {
        let at = lock(&self.inner).written;
        self.sync_to(at)
    }

    /// Syncs (unless `None`), stops writing and releases the directory's
    /// lock now, whoever still holds this `Arc` (a publisher that has not
    /// ended yet, the batch syncer): once a connection's close returns,
    /// another handle or process may open the directory.
    pub fn close(&self) {
        let mut g = lock(&self.inner);
        if g.closed {
            return;
        }
        g.closed = true;
        if self.cfg.sync != SyncMode::None {
            if let Err(e) = g.file.sync_data() {
                warn!("{}", io_error("cannot sync", &self.cfg.dir, e));
            }
        }
        drop(lock(&self.lock_file).take());
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.close();
    }
}

/// Takes the directory's lock file, or says who holds it.
fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error("cannot open", &path, e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(Error::invalid(format!(
            "spool_dir {} is in use by another queue handle or process (pid {}); \
             one spool directory serves one queue handle at a time",
            dir.display(),
            holder.trim()
        )));
    }
    let _ = f.set_len(0);
    let _ = write!(f, "{}", std::process::id());
    Ok(f)
}

/// The spool belongs to the queue named in its `QUEUE` file.
fn check_queue(dir: &Path, queue: &str) -> Result<()> {
    let path = dir.join("QUEUE");
    match std::fs::read(&path) {
        Ok(name) if name == queue.as_bytes() => Ok(()),
        Ok(name) => Err(Error::invalid(format!(
            "spool_dir {} belongs to queue '{}', not '{queue}'",
            dir.display(),
            String::from_utf8_lossy(&name)
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, queue).map_err(|e| io_error("cannot write", &path, e))
        }
        Err(e) => Err(io_error("cannot read", &path, e)),
    }
}

type Live = BTreeMap<u64, (Record, usize)>;

/// Reads every segment, oldest first: the segments, the messages not
/// forgotten (with their segment's index) and the highest seq seen.
fn load(dir: &Path, stats: &SpoolStats) -> Result<(Vec<Segment>, Live, u64)> {
    let mut segments = list_segments(dir)?;
    let mut live: Live = BTreeMap::new();
    // Past every segment's name too: a new segment never reuses one (the
    // last may hold forget records only).
    let mut max_seq = segments.last().map_or(0, |s| s.first);
    for (i, seg) in segments.iter().enumerate() {
        let file = File::open(&seg.path).map_err(|e| io_error("cannot open", &seg.path, e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error("cannot read", &seg.path, e))?
            .len();
        let mut r = std::io::BufReader::with_capacity(1 << 16, file);
        let tail = record::read_segment(&mut r, len, |e| match e {
            Entry::Message(rec) => {
                max_seq = max_seq.max(rec.seq);
                live.insert(rec.seq, (rec, i));
            }
            Entry::Forget(ranges) => {
                for (first, n) in ranges {
                    let end = first.saturating_add(u64::from(n));
                    let gone: Vec<u64> = live.range(first..end).map(|(k, _)| *k).collect();
                    for k in gone {
                        live.remove(&k);
                    }
                }
            }
        })
        .map_err(|e| io_error("cannot read", &seg.path, e))?;
        report_tail(&seg.path, &tail, stats);
    }
    for (_, i) in live.values() {
        segments[*i].live += 1;
    }
    Ok((segments, live, max_seq))
}

fn report_tail(path: &Path, tail: &Tail, stats: &SpoolStats) {
    if let Some(why) = tail.why {
        stats.bad_tails.fetch_add(1, Ordering::Relaxed);
        stats
            .dropped_bytes
            .fetch_add(tail.dropped, Ordering::Relaxed);
        warn!(
            "spool: {}: {why} at byte {}: dropped the last {} bytes (the records before it are kept)",
            path.display(),
            tail.good,
            tail.dropped
        );
    }
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error("cannot list", dir, e))? {
        let path = entry.map_err(|e| io_error("cannot list", dir, e))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .filter(|n| n.len() == 16)
            .and_then(|n| u64::from_str_radix(n, 16).ok());
        if let Some(first) = first {
            out.push(Segment {
                first,
                path,
                live: 0,
            });
        }
    }
    out.sort_by_key(|s| s.first);
    Ok(out)
}

/// Creates the segment that starts at `first` (past every existing
/// segment's name) and adds it to `segments`.
fn start_segment(
    dir: &Path,
    segments: &mut Vec<Segment>,
    first: u64,
    sync: SyncMode,
) -> Result<File> {
    let path = dir.join(format!("{first:016x}.seg"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_error("cannot create", &path, e))?;
    if sync != SyncMode::None {
        // The new name must survive a power cut too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("cannot sync", dir, e))?;
    }
    segments.push(Segment {
        first,
        path,
        live: 0,
    });
    Ok(file)
}

/// `Batch`: a thread that syncs every `BATCH_INTERVAL` while `spool` lives.
fn spawn_syncer(spool: &Arc<Spool>) -> Result<()> {
    let weak = Arc::downgrade(spool);
    std::thread::Builder::new()
        .name("ra-spool-sync".into())
        .spawn(move || loop {
            std::thread::sleep(BATCH_INTERVAL);
            let Some(s) = weak.upgrade() else { return };
            if let Err(e) = s.sync() {
                warn!("{e}");
            }
        })
        .map(drop)
        .map_err(|e| Error::internal(format!("spool: cannot start the sync thread: {e}")))
}
