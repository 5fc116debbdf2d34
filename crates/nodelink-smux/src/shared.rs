//! What a session's tasks and handles share: the state under its mutex, the signals that
//! wake the tasks, and the guard whose last drop closes the session.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind};
use crate::state::Inner;

pub(crate) struct Shared {
    pub(crate) inner: Mutex<Inner>,
    /// Wakes the writer task: there is something to send.
    pub(crate) writer: Arc<Notify>,
    /// Wakes tasks waiting in `accept`.
    pub(crate) acceptors: Arc<Notify>,
    /// Wakes tasks waiting for stream progress (data, window, close).
    pub(crate) progress: Arc<Notify>,
    /// Cancelled when the session fails or closes.
    pub(crate) dead: CancellationToken,
    /// Cancelled when every task released the connection.
    pub(crate) finished: CancellationToken,
}

impl Shared {
    /// Locks the state. A poisoned lock means a panic elsewhere already broke an invariant;
    /// carrying on with the data is still memory-safe, so the poison is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn kill(&self, err: Error) {
        let mut inner = self.lock();
        inner.die(err);
        // Marked dead before the lock is released: a task woken by the failure (a stream
        // reader ending its TCP connection, say) must already see `is_closed`, or a caller
        // it races with could pick this session again.
        self.dead.cancel();
        drop(inner);
    }
}

/// Keeps the session alive while any [`Session`] clone or [`Stream`] exists; the last one
/// to go closes it.
pub(crate) struct LifeGuard {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for LifeGuard {
    fn drop(&mut self) {
        self.shared.kill(Error::new(
            ErrorKind::SessionClosed,
            "every session and stream handle was dropped",
        ));
    }
}
