//! Small synchronisation helpers.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning: every critical section here leaves the state consistent
/// before anything that could panic, so a poisoned lock holds valid data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
