//! Locking without poisoning.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning. Every lock in nodelink guards state that short,
/// non-panicking sections update (a protocol core's operations, a send queue), so a panic
/// elsewhere while one was held leaves nothing half-updated that matters more than the
/// panic itself; the drivers go on instead of turning one panic into many.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
