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
    /// Why the reading ended, once it has (what the connection task awaits).
    ended: watch::Sender<Option<String>>,
}

struct ReadState {
    stream: TcpStream,
    rb: ReadBuf,
    coalescer: Coalescer,
}

impl LinkReader {
    /// `stream`: the link's socket (non-blocking); `leftover`: bytes the
    /// handshake read past its last frame, handled here.
    pub(super) fn new(
        conn: Arc<ConnShared>,
        stream: TcpStream,
        leftover: &[u8],
    ) -> Arc<LinkReader> {
        let rb = ReadBuf::new(&conn, leftover);
        let reader = Arc::new(LinkReader {
            fd: stream.as_raw_fd(),
            st: Mutex::new(ReadState {
                stream,
                rb,
                coalescer: Coalescer::default(),
            }),
            stopped: AtomicBool::new(false),
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
        lock(&self.st).coalescer.on()
    }

    /// The `LINGER` timer fired (before the socket woke anyone): the link
    /// is not that busy any more, and the next turn reads what came.
    pub fn lingered(&self) {
        let mut st = lock(&self.st);
        if let Some(on) = st.coalescer.lingered(Instant::now()) {
            self.set_low_mark(on);
        }
    }

    /// Reads what the socket has (at most a fair share) and dispatches it;
    /// deliveries go to their consumers' sinks on this thread.
    pub fn read_turn(&self) -> Turn {
        let mut st = lock(&self.st);
        if self.ended.borrow().is_some() {
            return Turn::Ended;
        }
        let ReadState {
            stream,
            rb,
            coalescer,
        } = &mut *st;
        let turn = self.read_available(stream, rb);
        // A turn that found nothing (a holder looking again after its
        // callbacks) tells nothing of the broker's pace.
        let read = match turn {
            Turn::Drained(n) => n,
            Turn::More => YIELD_AFTER_BYTES,
            Turn::Nothing | Turn::Ended => return turn,
        };
        if let Some(on) = coalescer.read(read, Instant::now()) {
            self.set_low_mark(on);
        }
        turn
    }

    /// SO_RCVLOWAT: `coalesce::LOWAT` bytes (on) or one byte wake the
    /// socket's watchers.
    fn set_low_mark(&self, on: bool) {
        let bytes: libc::c_int = if on {
            super::coalesce::LOWAT as libc::c_int
        } else {
            1
        };
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
        if r != 0 {
            warn!(
                "cannot set the consume link's low mark: {}",
                std::io::Error::last_os_error()
            );
        } else if on {
            debug!("consume link busy: read once {bytes} bytes wait (or after the linger)");
        } else {
            debug!("consume link quiet: read at every write");
        }
    }

    fn read_available(&self, stream: &mut TcpStream, rb: &mut ReadBuf) -> Turn {
        let mut read = 0usize;
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return self.end("connection closed".into());
            }
            match stream.read(rb.space()) {
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
