//! What idle pool threads wait on: one epoll instance holding an eventfd
//! (work for a thread: `notify`), the hosted link's socket (readable,
//! one-shot: one thread reads it at a time) and the link's timer. Threads
//! waiting on one epoll instance are woken one per event, so a burst of
//! bytes wakes one thread, not all of them.

use crate::wire::TimerFd;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(super) struct Events {
    epoll: OwnedFd,
    wake: OwnedFd,
    /// The link's timer (`arm_timer`): its holder has not read for a while,
    /// or a coalescing link's bytes waited `LINGER`.
    timer: TimerFd,
}

/// What ended a wait.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// `notify`: look at the ready list.
    Notified,
    /// The watched socket is readable (and not watched until `rearm`).
    Readable,
    /// The link's timer fired (`arm_timer`).
    Timer,
}

const WAKE: u64 = u64::MAX;
const TIMER: u64 = u64::MAX - 1;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Events {
    pub(super) fn new() -> io::Result<Events> {
        // SAFETY: plain syscalls; the descriptors returned are owned here.
        let events = unsafe {
            let epoll = OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?);
            let ev = check(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
            let wake = OwnedFd::from_raw_fd(ev);
            Events {
                epoll,
                wake,
                timer: TimerFd::new()?,
            }
        };
        // Edge-triggered: every `notify` (every timer expiry) is one
        // new event, for one waiter.
        for (fd, data) in [
            (events.wake.as_raw_fd(), WAKE),
            (events.timer.as_raw_fd(), TIMER),
        ] {
            let flags = libc::EPOLLIN | libc::EPOLLET;
            events.ctl(libc::EPOLL_CTL_ADD, fd, flags, data)?;
        }
        Ok(events)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, flags: libc::c_int, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: flags as u32,
            u64: data,
        };
        // SAFETY: `ev` lives across the call; the descriptors are open.
        check(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// Wakes one waiting thread (or the next to wait).
    pub(super) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd. It cannot block; the
        // counter never nears its limit (it is drained by every waiter).
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// The timer fires once after `after` (replacing an earlier
    /// setting); `None` disarms it.
    pub(super) fn arm_timer(&self, after: Option<std::time::Duration>) {
        self.timer.arm(after);
    }

    /// Watches `fd` for readability, for one waiter (until `rearm`).
    pub(super) fn watch(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, READ_ONCE, fd as u64)
    }

    /// Watches `fd` again after the event it gave (readable now: at once).
    pub(super) fn rearm(&self, fd: RawFd) {
        if let Err(e) = self.ctl(libc::EPOLL_CTL_MOD, fd, READ_ONCE, fd as u64) {
            error!("internal error: cannot watch the consume link again: {e}");
        }
    }

    pub(super) fn unwatch(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Blocks until an event.
    pub(super) fn wait(&self) -> Event {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        loop {
            // SAFETY: room for one event; the epoll descriptor is open.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut ev, 1, -1) };
            if n == 1 {
                let (event, fd) = match ev.u64 {
                    WAKE => (Event::Notified, self.wake.as_raw_fd()),
                    TIMER => (Event::Timer, self.timer.as_raw_fd()),
                    _ => return Event::Readable,
                };
                let mut count = 0u64;
                // SAFETY: an 8-byte read from our non-blocking eventfd or
                // timerfd (resets its count).
                unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
                return event;
            }
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                error!("internal error: epoll_wait: {}", io::Error::last_os_error());
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Readable (or closed), for one waiter, until re-armed.
const READ_ONCE: libc::c_int =
    libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT | libc::EPOLLERR | libc::EPOLLHUP;
