//! What the tokio drivers around nodelink's protocol cores share, written once:
//!
//! - [`accept`] (and [`Retry`] for polled listeners): accepting TCP connections without
//!   giving up on errors that pass (`accept.rs`);
//! - [`WarnLimiter`] and [`peer_warn!`]: a budget for the warnings peers cause, so a
//!   hostile peer cannot flood the log (`warn_budget.rs`);
//! - [`MemoryBudget`] and its [`Holding`]s: what the links or sessions of one server may
//!   hold together, and which of them to hold back past it (`budget.rs`);
//! - [`lock`]: a mutex lock that survives a panic elsewhere (`sync.rs`);
//! - [`SHUTDOWN_GRACE`]: how long whatever was told to stop may take to drain;
//! - [`Role`]: which side of a protocol an end is (`role.rs`).

mod accept;
mod budget;
mod role;
mod sync;
mod warn_budget;

pub use accept::{
    accept, is_transient, open_file_limit, retry_pause, Retry, RETRY_AFTER, RETRY_AT_MOST,
};
pub use budget::{HeldBack, Holding, MemoryBudget, BUDGET_FLOOR, SAY_AT_MOST_EVERY};
pub use role::Role;
pub use sync::lock;
pub use warn_budget::{WarnLimiter, WarnSite, INTERVAL, PER_KIND, PER_SECOND};

/// How long something told to stop (a server, a tunnel end, a forwarded connection whose
/// other direction ended) may take to finish what is in flight before it is dropped:
/// bounded, so that a peer that never reads cannot hold a shutdown up.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What [`peer_warn!`] needs at the call site; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use tracing;
}
