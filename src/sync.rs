//! Locking that outlives a panic: every mutex of the library guards state
//! that stays consistent between statements, and a panic on one thread (a
//! bug, caught at the FFI boundary) must not turn every later call into a
//! second one.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking over a lock that a panic poisoned.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
