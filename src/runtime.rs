//! The one tokio runtime of the library.
//!
//! A current-thread runtime driven by one library-owned thread
//! ("ramqp-runtime"): lapin's publish path is fastest without cross-core
//! task hand-offs (see LAPIN-NOTES). The runtime lives in a static and its
//! thread is never joined, so nothing is dropped at process exit and exit
//! cannot hang on it. No user callback ever runs on it.

use crate::error::{Error, Result};
use once_cell::sync::OnceCell;
use std::future::Future;
use std::time::Duration;
use tokio::runtime::Handle;

static HANDLE: OnceCell<Handle> = OnceCell::new();

pub fn handle() -> Result<&'static Handle> {
    HANDLE.get_or_try_init(|| {
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

/// True on the runtime thread, where blocking would deadlock the library.
pub fn on_runtime_thread() -> bool {
    Handle::try_current().is_ok()
}

/// Runs `fut` on the runtime and waits for it on the calling thread, at most
/// `timeout`. Refuses on the runtime thread itself.
pub fn block_on<F>(fut: F, timeout: Duration) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if on_runtime_thread() {
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

/// Spawns a task on the runtime (no-op if it cannot start).
pub fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if let Ok(h) = handle() {
        h.spawn(fut);
    }
}
