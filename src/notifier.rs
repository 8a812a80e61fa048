//! The pull consumer's notification descriptor: a pipe whose read end is
//! readable exactly while it holds one byte. The library keeps both ends;
//! an application gets a duplicate of the read end (same open file, so the
//! same readiness), which it owns and closes. Raising writes the byte,
//! lowering reads it; both only on a change, so a busy queue costs no
//! system call per delivery.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub(crate) struct Notifier {
    read: OwnedFd,
    write: OwnedFd,
    /// The byte is in the pipe.
    raised: bool,
}

impl Notifier {
    /// A new pipe, both ends close-on-exec and non-blocking, not raised.
    pub fn new() -> io::Result<Notifier> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
        #[cfg(target_os = "linux")]
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        // SAFETY: as above, for pipe.
        #[cfg(not(target_os = "linux"))]
        let r = unsafe { libc::pipe(fds.as_mut_ptr()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the call succeeded: both are open descriptors that nothing
        // else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        #[cfg(not(target_os = "linux"))]
        for fd in [&read, &write] {
            // SAFETY: fcntl on a descriptor we own, with integer arguments.
            unsafe {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
            }
        }
        Ok(Notifier {
            read,
            write,
            raised: false,
        })
    }

    /// Makes the read end readable exactly when `readable`.
    pub fn show(&mut self, readable: bool) {
        if readable {
            self.raise();
        } else {
            self.lower();
        }
    }

    /// Makes the read end readable (if it is not already).
    pub fn raise(&mut self) {
        if self.raised {
            return;
        }
        let byte = 1u8;
        // SAFETY: writes one byte from a live local to a descriptor we own;
        // non-blocking, and the pipe holds at most this one byte.
        let n = unsafe { libc::write(self.write.as_raw_fd(), (&byte as *const u8).cast(), 1) };
        self.raised = n == 1;
    }

    /// Makes the read end not readable (if it is).
    pub fn lower(&mut self) {
        if !self.raised {
            return;
        }
        let mut buf = [0u8; 16];
        loop {
            // SAFETY: reads into a live local buffer of its length from a
            // descriptor we own; non-blocking.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
        }
        self.raised = false;
    }

    /// A new descriptor for the application: the read end duplicated
    /// (close-on-exec, non-blocking as the open file is), never below 3.
    pub fn duplicate(&self) -> io::Result<OwnedFd> {
        self.read.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: &OwnedFd) -> bool {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn duplicates_share_readiness_and_outlive_their_close() {
        let mut n = Notifier::new().unwrap();
        let a = n.duplicate().unwrap();
        let b = n.duplicate().unwrap();
        assert_ne!(a.as_raw_fd(), b.as_raw_fd());
        assert!(!readable(&a) && !readable(&b));
        n.raise();
        n.raise();
        assert!(readable(&a) && readable(&b));
        drop(a);
        n.lower();
        assert!(!readable(&b));
        n.raise();
        assert!(readable(&b));
        // SAFETY: fcntl queries on a descriptor we own.
        let (fd_flags, fl_flags) = unsafe {
            (
                libc::fcntl(b.as_raw_fd(), libc::F_GETFD),
                libc::fcntl(b.as_raw_fd(), libc::F_GETFL),
            )
        };
        assert!(fd_flags & libc::FD_CLOEXEC != 0);
        assert!(fl_flags & libc::O_NONBLOCK != 0);
    }
}
