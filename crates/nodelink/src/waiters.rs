//! A small set of wakers kept inside a mutex-protected state.
//!
//! Nearly always one task waits (one receiver per connection, one acceptor), so the first
//! waker is stored inline and taking it does not allocate; further waiters go to a vector.

use std::task::Waker;

#[derive(Default, Debug)]
pub(crate) struct Waiters {
    first: Option<Waker>,
    /// Boxed so an idle connection pays one word for it.
    #[allow(clippy::box_collection)]
    rest: Option<Box<Vec<Waker>>>,
}

impl Waiters {
    /// Registers `waker`, unless the same task is already registered.
    pub(crate) fn register(&mut self, waker: &Waker) {
        match &mut self.first {
            None => self.first = Some(waker.clone()),
            Some(w) if w.will_wake(waker) => {}
            Some(_) => {
                let rest = self.rest.get_or_insert_with(Default::default);
                if !rest.iter().any(|w| w.will_wake(waker)) {
                    rest.push(waker.clone());
                }
            }
        }
    }

    /// Whether any task is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Takes every registered waker, to be woken after the lock is released.
    pub(crate) fn take(&mut self) -> Wake {
        Wake {
            first: self.first.take(),
            rest: std::mem::take(&mut self.rest),
        }
    }
}

/// Wakers taken out of a [`Waiters`]; call [`Wake::wake`] once the lock is dropped.
#[must_use = "call .wake() after releasing the lock"]
#[derive(Default)]
pub(crate) struct Wake {
    first: Option<Waker>,
    #[allow(clippy::box_collection)]
    rest: Option<Box<Vec<Waker>>>,
}

impl Wake {
    /// One waker.
    pub(crate) fn one(waker: Waker) -> Wake {
        Wake {
            first: Some(waker),
            rest: None,
        }
    }

    pub(crate) fn wake(self) {
        if let Some(w) = self.first {
            w.wake();
        }
        if let Some(rest) = self.rest {
            for w in *rest {
                w.wake();
            }
        }
    }
}
