//! A timerfd: any thread sets it with one syscall, and it wakes only a
//! thread that watches its descriptor, when it fires (a tokio timer can be
//! set only from its runtime, by waking it).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub(crate) struct TimerFd(OwnedFd);

impl TimerFd {
    /// A disarmed, non-blocking timer on the monotonic clock.
    pub fn new() -> io::Result<TimerFd> {
        let flags = libc::TFD_CLOEXEC | libc::TFD_NONBLOCK;
        // SAFETY: a plain syscall; the descriptor returned is owned here.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Ok(TimerFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Fires once after `after` (replacing an earlier setting); `None`
    /// disarms it.
    pub fn arm(&self, after: Option<Duration>) {
        let d = after.unwrap_or_default();
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
            },
        };
        // SAFETY: our timerfd; `spec` lives across the call.
        unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }

    /// Takes the expiry count, so the descriptor is not readable until the
    /// timer fires again.
    pub fn clear(&self) {
        let mut count = 0u64;
        // SAFETY: an 8-byte read from our non-blocking timerfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
