//! The threads that call the application (consume and log callbacks): plain
//! POSIX threads whose start routine is `extern "C-unwind"` and has no catch
//! frame, where `std::thread` runs its closure inside `catch_unwind`.
//!
//! Why: runtimes end the threads that call into them while they shut down.
//! Python's finalization calls `pthread_exit` on a thread that asks for the
//! GIL, and thread cancellation does the same: a *forced unwind*, which
//! unwinds the stack (running destructors) up to the start of the thread and
//! ends it there. A `catch_unwind` on the way cannot let it pass: it stops
//! the unwind, and glibc aborts the process ("FATAL: exception not rethrown";
//! rust-lang/rust#65441). On these threads nothing catches: the unwind runs
//! the library's guards (which keep counters and queues consistent) and the
//! thread ends, as the runtime wanted.
//!
//! The closure must catch its own Rust panics (a panic that reaches the start
//! routine aborts the process): the library does so around everything but
//! the application's function.

use std::ffi::{c_int, c_void, CStr};
use std::io;

type Main = Box<dyn FnOnce() + Send + 'static>;

extern "C" {
    /// libc's `pthread_create`, with the start routine declared as one that
    /// may unwind (the calling convention is the same as `extern "C"`).
    #[link_name = "pthread_create"]
    fn pthread_create_unwind(
        native: *mut libc::pthread_t,
        attr: *const libc::pthread_attr_t,
        start: extern "C-unwind" fn(*mut c_void) -> *mut c_void,
        arg: *mut c_void,
    ) -> c_int;
}

extern "C-unwind" fn start(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the `Box<Main>` that `spawn` leaked for this thread
    // alone; it is taken back exactly once, here.
    let main = unsafe { Box::from_raw(arg as *mut Main) };
    main();
    std::ptr::null_mut()
}

/// Starts a detached thread named `name` (at most 15 bytes) running `f`.
pub(crate) fn spawn(name: &'static CStr, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    // Named by the thread itself before it runs anything: named by its
    // creator after pthread_create, it could run a callback under the
    // creator's name first (a new thread starts with its creator's name).
    let named = move || {
        // SAFETY: our own thread; `name` is NUL-terminated and short enough
        // (a longer one only fails with ERANGE).
        unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
        f();
    };
    let main: Box<Main> = Box::new(Box::new(named));
    let arg = Box::into_raw(main) as *mut c_void;
    let mut thread: libc::pthread_t = 0;
    // SAFETY: a NULL attr means the defaults; `start` takes ownership of
    // `arg` only if the thread was created (rc 0).
    let rc = unsafe { pthread_create_unwind(&mut thread, std::ptr::null(), start, arg) };
    if rc != 0 {
        // SAFETY: no thread was created, so `arg` is still ours.
        drop(unsafe { Box::from_raw(arg as *mut Main) });
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `thread` was just created and is neither joined nor detached.
    unsafe { libc::pthread_detach(thread) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    extern "C-unwind" {
        /// Declared as a function that unwinds (libc's declaration says it
        /// does not, and a call site that cannot unwind aborts the unwind).
        fn pthread_exit(value: *mut c_void) -> !;
    }

    /// The thread has its name from its first instruction on (it ran
    /// callbacks under its creator's name when the creator named it).
    #[test]
    fn a_thread_runs_under_its_own_name_from_the_start() {
        let (tx, rx) = mpsc::channel();
        for _ in 0..200 {
            let tx = tx.clone();
            spawn(c"ra-named", move || {
                let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
                let _ = tx.send(comm.trim_end().to_string());
            })
            .expect("spawn");
        }
        for _ in 0..200 {
            let name = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a thread ran");
            assert_eq!(name, "ra-named");
        }
    }

    /// A forced unwind (here pthread_exit) passes through the closure's
    /// frames, runs their destructors and ends the thread; the process
    /// lives on.
    #[test]
    fn pthread_exit_ends_the_thread_and_runs_destructors() {
        struct Guard(mpsc::Sender<&'static str>);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = self.0.send("unwound");
            }
        }
        let (tx, rx) = mpsc::channel();
        spawn(c"ramqp-test", move || {
            let _guard = Guard(tx);
            // SAFETY: ends this thread, which holds nothing but the guard.
            unsafe { pthread_exit(std::ptr::null_mut()) };
        })
        .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok("unwound"));
    }
}
