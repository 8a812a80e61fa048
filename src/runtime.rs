//! The one tokio runtime of the library.
//!
//! A current-thread runtime driven by one library-owned thread
//! ("ramqp-runtime"): every connection's I/O and every publisher share it,
//! so the publish path has no cross-core task hand-offs. The runtime lives in a static and its
//! thread is never joined, so nothing is dropped at process exit and exit
//! cannot hang on it. No user callback ever runs on it.

use crate::error::{Error, Result};
use once_cell::sync::OnceCell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::runtime::Handle;

static HANDLE: OnceCell<Handle> = OnceCell::new();
/// Set in a child process forked after the runtime started: the child has
/// none of our threads, so nothing would ever run; calls must fail instead
/// of waiting forever.
static FORKED: AtomicBool = AtomicBool::new(false);

extern "C" fn mark_forked_child() {
    FORKED.store(true, Ordering::Relaxed);
}

/// True in a child forked from a process that had started the library.
pub(crate) fn forked() -> bool {
    FORKED.load(Ordering::Relaxed)
}

pub(crate) fn forked_error() -> Error {
    Error::closed(
        "resilient-amqp cannot be used in a child created by fork() after the parent used it \
         (the child has none of the library's threads); connect from the parent, or exec",
    )
}

pub(crate) fn handle() -> Result<&'static Handle> {
    if forked() {
        return Err(forked_error());
    }
    HANDLE.get_or_try_init(|| {
        // SAFETY: registers a handler that only stores to an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(mark_forked_child)) };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("cannot start the runtime: {e}")))?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("ramqp-runtime".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| Error::internal(format!("cannot start the runtime thread: {e}")))?;
        Ok(handle)
    })
}

/// True inside any tokio runtime (ours or the application's): blocking on
/// ours from there could deadlock it, or stall the application's.
pub(crate) fn inside_a_runtime() -> bool {
    Handle::try_current().is_ok()
}

/// Runs `fut` on the runtime and waits for it on the calling thread, at most
/// `timeout`. Refuses on the runtime thread itself.
pub(crate) fn block_on<F>(fut: F, timeout: Duration) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if inside_a_runtime() {
        return Err(Error::internal(
            "a blocking call was made on the library's runtime thread",
        ));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv_timeout(timeout)
        .map_err(|_| Error::new(crate::ErrorKind::Timeout, "timed out"))
}

/// Spawns a task on the runtime (no-op if it cannot start); a panic in it
/// is logged, never silent.
pub(crate) fn spawn<F>(what: &'static str, fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    spawn_guarded(what, fut, || {});
}

/// Spawns a task on the runtime (no-op if it cannot start). A panic in it
/// (a bug: no input may cause one) is caught, logged at ERROR, and
/// `on_panic` runs, so that the task's owner recovers (reconnects) rather
/// than waiting on a task that is gone.
pub(crate) fn spawn_guarded<F>(what: &'static str, fut: F, on_panic: impl FnOnce() + Send + 'static)
where
    F: Future<Output = ()> + Send + 'static,
{
    use futures_util::FutureExt;
    if let Ok(h) = handle() {
        h.spawn(async move {
            if let Err(panic) = std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!("internal error: the {what} task panicked ({text}); recovering");
                on_panic();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_panicking_task_is_caught_and_its_owner_told() {
        let (tx, rx) = mpsc::channel();
        spawn_guarded("test", async { panic!("a bug") }, move || {
            let _ = tx.send("recovered");
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok("recovered"));
        // The runtime thread lives on and runs the next task.
        let (tx, rx) = mpsc::channel();
        spawn("test", async move {
            let _ = tx.send(1);
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
    }
}
