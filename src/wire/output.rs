//! The connection's output: one buffer that any thread appends frames to
//! (acks come from consumer threads, publishes from the publisher), and the
//! writer loop that sends what piled up while it was busy, in one `write`.
//!
//! The thread that appends to an empty buffer while the writer is idle
//! writes it to the socket itself (`OutputBuffer::write_now_or_wake`), so
//! neither a batch of publishes nor a batch of acks needs a task hand-off.

use super::lock;
use super::socket::Sink;
use super::socket::TryWrite;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// A write buffer that grew past this (a burst of large bodies) is not kept.
const KEEP_WRITE_BUFFER: usize = 4 * 1024 * 1024;
const WRITE_BUFFER: usize = 64 * 1024;

pub(super) struct Output {
    buffer: Mutex<OutputBuffer>,
    /// Wakes the writer loop: frames to send, or closed.
    writer_wake: Notify,
    /// Bytes went to the socket; the heartbeat loop sends only on a quiet
    /// link.
    wrote: AtomicBool,
}

struct OutputBuffer {
    frames: Vec<u8>,
    /// No more frames: the connection is gone or closing.
    closed: bool,
    /// The writer loop holds bytes taken from `frames` that are not all
    /// written yet: nobody else may write to the socket now.
    writing: bool,
    /// For writes straight from the appending thread (None once closed,
    /// and on TLS: the writer loop alone writes there).
    stream: Option<Arc<dyn TryWrite>>,
}

impl OutputBuffer {
    /// After appending to `frames` that were empty: if the writer loop is
    /// not busy, write now from this thread, with no wake-up of the runtime;
    /// what the socket does not take is left for the writer. Returns whether
    /// the writer must be woken. The caller holds the lock, so bytes keep
    /// their order.
    fn write_now_or_wake(&mut self, wrote: &AtomicBool) -> bool {
        if self.frames.is_empty() {
            return false;
        }
        if self.writing {
            return true;
        }
        let Some(stream) = &self.stream else {
            return true;
        };
        match stream.try_write(&self.frames) {
            Ok(n) => {
                wrote.store(true, Ordering::Relaxed);
                if n == self.frames.len() {
                    self.frames.clear();
                    false
                } else {
                    self.frames.drain(..n);
                    true
                }
            }
            // Not writable now, or failing: the writer loop takes over (and
            // reports the error).
            Err(_) => true,
        }
    }
}

/// The output held for appending; when dropped, frames appended to an empty
/// buffer are written at once or handed to the writer.
pub(super) struct Appending<'a> {
    buffer: MutexGuard<'a, OutputBuffer>,
    output: &'a Output,
    was_empty: bool,
}

impl Appending<'_> {
    pub(super) fn is_closed(&self) -> bool {
        self.buffer.closed
    }
    /// The frames to append to. Check `is_closed` first.
    pub(super) fn frames(&mut self) -> &mut Vec<u8> {
        &mut self.buffer.frames
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        if self.was_empty && self.buffer.write_now_or_wake(&self.output.wrote) {
            self.output.writer_wake.notify_one();
        }
    }
}

impl Output {
    /// `stream` None: frames only pile up (the reader probe has no socket).
    pub(super) fn new(stream: Option<Arc<dyn TryWrite>>) -> Output {
        Output {
            buffer: Mutex::new(OutputBuffer {
                frames: Vec::with_capacity(WRITE_BUFFER),
                closed: false,
                writing: false,
                stream,
            }),
            writer_wake: Notify::new(),
            wrote: AtomicBool::new(false),
        }
    }

    /// Holds the output to append frames (several, in one go).
    pub(super) fn appending(&self) -> Appending<'_> {
        let buffer = lock(&self.buffer);
        let was_empty = buffer.frames.is_empty();
        Appending {
            buffer,
            output: self,
            was_empty,
        }
    }

    /// Appends frames unless the output, or the channel whose `closed` flag
    /// is given, is closed. False when nothing was appended.
    pub(super) fn append(
        &self,
        channel_closed: Option<&AtomicBool>,
        f: impl FnOnce(&mut Vec<u8>),
    ) -> bool {
        let mut a = self.appending();
        if a.is_closed() || channel_closed.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return false;
        }
        f(a.frames());
        true
    }

    /// No more frames; the writer sends what is queued, then ends.
    pub(super) fn close(&self) {
        lock(&self.buffer).closed = true;
        self.writer_wake.notify_one();
    }

    /// Lets the socket go (the last references are the reader's and the
    /// writer's).
    pub(super) fn release_stream(&self) {
        lock(&self.buffer).stream = None;
    }

    /// Bytes appended and not yet taken by the writer.
    pub(super) fn backlog(&self) -> usize {
        lock(&self.buffer).frames.len()
    }

    /// Whether bytes were written since the last call.
    pub(super) fn take_wrote(&self) -> bool {
        self.wrote.swap(false, Ordering::Relaxed)
    }
}

/// Sends the frames appended while it was busy, until the output is closed
/// and empty, or a write fails.
pub(super) async fn write_loop(output: &Output, mut stream: impl Sink) -> String {
    let mut chunk: Vec<u8> = Vec::with_capacity(WRITE_BUFFER);
    loop {
        let idle = {
            let mut b = lock(&output.buffer);
            if b.frames.is_empty() {
                Some(b.closed)
            } else {
                std::mem::swap(&mut b.frames, &mut chunk);
                b.writing = true;
                None
            }
        };
        match idle {
            Some(true) => return "connection closed".into(),
            Some(false) => {
                output.writer_wake.notified().await;
                continue;
            }
            None => {}
        }
        if let Err(e) = stream.write_chunk(&chunk).await {
            return format!("I/O error: {e}");
        }
        lock(&output.buffer).writing = false;
        output.wrote.store(true, Ordering::Relaxed);
        chunk.clear();
        if chunk.capacity() > KEEP_WRITE_BUFFER {
            chunk = Vec::with_capacity(WRITE_BUFFER);
        }
    }
}
