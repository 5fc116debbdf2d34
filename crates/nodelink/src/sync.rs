//! Locks used by the connection table, swappable for loom's in model tests.
//!
//! Only the table goes through this facade: it is the state that the light-close versus
//! link-shutdown race is about, and the loom test (`cargo test` with
//! `RUSTFLAGS="--cfg nodelink_loom"`) explores every interleaving of the real table code.

#[cfg(nodelink_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(nodelink_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks a table mutex. A panic while holding it cannot leave the table half-updated in a
/// way that matters more than the panic itself, so poisoning is ignored.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks a std mutex, ignoring poisoning (see [`lock`]).
pub(crate) fn lock_std<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
