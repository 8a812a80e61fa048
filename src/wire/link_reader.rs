//! A link read by a host's threads instead of the runtime (the consume
//! link, read by its connection's callback threads: the thread that reads
//! a delivery runs its callback, with no hand-off between threads).
//!
//! The host watches `fd()` for readability and calls `read_turn` when it
//! is readable, from one thread at a time, until a turn says `Ended`. The
//! runtime still writes (it watches the socket for writability alone, so
//! bytes arriving wake none of its threads) and runs the heartbeats.
//!
//! A busy link wakes its host once a few KiB wait rather than at every
//! write of the broker (`coalesce`): while `coalescing()`, a host that
//! waits on the socket also sets a timer `LINGER` long, and calls
//! `lingered` then `read_turn` when it fires.

use super::coalesce::Coalescer;
use super::lock;
use super::reader::{ReadBuf, YIELD_AFTER_BYTES};
use super::shared::ConnShared;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// What takes over the reading of a link (the consumer pool).
pub(crate) trait ReadHost: Send + Sync {
    /// From now on the host's threads call `reader.read_turn()` whenever
    /// `reader.fd()` is readable, one at a time, until it says `Ended`. Err:
    /// the host cannot (the link is not used).
    fn attach(self: Arc<Self>, reader: Arc<LinkReader>) -> std::io::Result<()>;
}

/// What a turn left.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// The socket had nothing at all.
    Nothing,
    /// The socket has nothing more, after this many bytes.
    Drained(usize),
    /// It stopped early (a fair share read) and more may wait.
    More,
    /// The link is over: stop watching it.
    Ended,
}

pub(crate) struct LinkReader {
    conn: Arc<ConnShared>,
    fd: RawFd,
    st: Mutex<ReadState>,
    /// The connection's task ended (`stop`): the next turn ends.
    stopped: AtomicBool,
    /// The coalescer's state, for a look without the lock.
    coalescing: AtomicBool,
    /// Why the reading ended, once it has (what the connection task awaits).
    ended: watch::Sender<Option<String>>,
}

struct ReadState {
    stream: TcpStream,
    rb: ReadBuf,
    /// The consume link's (a link read eagerly has none).
    coalescer: Option<Coalescer>,
}

impl LinkReader {
    /// `stream`: the link's socket (non-blocking); `leftover`: bytes the
    /// handshake read past its last frame, handled here; `coalesce`: a
    /// busy link wakes its host once a few KiB wait (the consume link).
    pub(super) fn new(
        conn: Arc<ConnShared>,
        stream: TcpStream,
        leftover: &[u8],
        coalesce: bool,
    ) -> Arc<LinkReader> {
        let rb = ReadBuf::new(&conn, leftover);
        let reader = Arc::new(LinkReader {
            fd: stream.as_raw_fd(),
            st: Mutex::new(ReadState {
                stream,
                rb,
                coalescer: coalesce.then(Coalescer::default),
            }),
            stopped: AtomicBool::new(false),
            coalescing: AtomicBool::new(false),
            ended: watch::channel(None).0,
            conn,
        });
        let handled = lock(&reader.st).rb.handle(&reader.conn);
        if let Err(why) = handled {
            reader.end(why);
        }
        reader
    }

    /// The socket to watch for readability.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The socket wakes its host only once `coalesce::LOWAT` bytes wait:
    /// whoever waits on it sets the `coalesce::LINGER` timer too.
    pub fn coalescing(&self) -> bool {
        self.coalescing.load(Ordering::Relaxed)
    }

    /// The `LINGER` timer fired (before the socket woke anyone): the link
    /// is not that busy any more, and the next turn reads what came.
    pub fn lingered(&self) {
        let mut st = lock(&self.st);
        let lingered = st.coalescer.as_mut().map(|c| c.lingered(Instant::now()));
        if let Some(Some(on)) = lingered {
            self.set_coalescing(on);
        }
    }

    /// Reads what the socket has (at most a fair share) and dispatches it;
    /// deliveries go to their consumers' sinks on this thread.
    pub fn read_turn(&self) -> Turn {
        self.turn(&mut lock(&self.st))
    }

    /// A turn, unless another thread is taking one now (None); `during`
    /// is set while it lasts (so the frames it dispatches can tell).
    pub fn try_read_turn(&self, during: &AtomicBool) -> Option<Turn> {
        let mut st = match self.st.try_lock() {
            Ok(st) => st,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        during.store(true, Ordering::Relaxed);
        let turn = self.turn(&mut st);
        during.store(false, Ordering::Relaxed);
        Some(turn)
    }

    fn turn(&self, st: &mut ReadState) -> Turn {
        if self.ended.borrow().is_some() {
            return Turn::Ended;
        }
        let ReadState {
            stream,
            rb,
            coalescer,
        } = st;
        let turn = self.read_available(stream, rb);
        // A turn that found nothing (a holder looking again after its
        // callbacks) tells nothing of the broker's pace.
        let read = match turn {
            Turn::Drained(n) => n,
            Turn::More => YIELD_AFTER_BYTES,
            Turn::Nothing | Turn::Ended => return turn,
        };
        let now = Instant::now();
        if let Some(Some(on)) = coalescer.as_mut().map(|c| c.read(read, now)) {
            self.set_coalescing(on);
        }
        turn
    }

    /// Called under the state's lock, as the coalescer turns on or off.
    fn set_coalescing(&self, on: bool) {
        self.coalescing.store(on, Ordering::Relaxed);
        let bytes = if on { super::coalesce::LOWAT } else { 1 };
        if let Err(e) = self.set_low_mark(bytes) {
            warn!("cannot set the consume link's low mark: {e}");
        } else if on {
            debug!("consume link busy: read once {bytes} bytes wait (or after the linger)");
        } else {
            debug!("consume link quiet: read at every write");
        }
    }

    /// SO_RCVLOWAT: the socket wakes its watchers once `bytes` wait (and
    /// at once if they already do).
    pub(super) fn set_low_mark(&self, bytes: usize) -> std::io::Result<()> {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt on the descriptor this reader owns, with an
        // int that lives across the call.
        let r = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    fn read_available(&self, stream: &mut TcpStream, rb: &mut ReadBuf) -> Turn {
        let mut read = 0usize;
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return self.end("connection closed".into());
            }
            let space = rb.space();
            let room = space.len();
            match stream.read(space) {
                Ok(0) => return self.end("the broker closed the connection (EOF)".into()),
                Ok(n) => {
                    rb.filled(n);
                    if let Err(why) = rb.handle(&self.conn) {
                        return self.end(why);
                    }
                    read += n;
                    if read >= YIELD_AFTER_BYTES {
                        // Others' turns: callbacks, and other links.
                        return Turn::More;
                    }
                    // Less than there was room for: the socket was empty
                    // (a recv that says so would be one syscall per turn
                    // more). Bytes that come after this read make it
                    // readable again for its watchers (epoll re-armed by
                    // the pool, a new edge for the runtime's).
                    if n < room {
                        return Turn::Drained(read);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock && read == 0 => return Turn::Nothing,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Turn::Drained(read),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.end(format!("I/O error: {e}")),
            }
        }
    }

    fn end(&self, why: String) -> Turn {
        self.ended.send_if_modified(|e| {
            if e.is_none() {
                *e = Some(why);
                true
            } else {
                false
            }
        });
        Turn::Ended
    }

    /// The connection task ends for another reason: the host's next turn
    /// (which the shutdown makes readable) ends the reading.
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        // SAFETY: shutdown(2) on the descriptor this reader owns (open as
        // long as `self` lives). It makes the socket readable (end of
        // stream), so a watching thread takes the turn that ends.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RD) };
    }

    /// Resolves when the reading ended, with why.
    pub(super) async fn ended(&self) -> String {
        let mut rx = self.ended.subscribe();
        let why = match rx.wait_for(|e| e.is_some()).await {
            Ok(e) => e.clone().unwrap_or_default(),
            Err(_) => "connection closed".into(),
        };
        why
    }
}
