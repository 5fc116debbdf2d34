//! Mutex helpers.

/// Locks a mutex, ignoring poisoning: the state behind every lock of this crate is updated
/// by short, non-panicking sections (the protocol core's operations, the send queue), so
/// a panic elsewhere while holding it leaves nothing half-updated that matters more than
/// the panic itself.
pub(crate) fn lock_std<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
