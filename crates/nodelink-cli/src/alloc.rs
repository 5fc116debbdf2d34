//! The binary's allocator, and giving memory back to the system when the server goes idle.
//!
//! The `nodelink` binary uses mimalloc: after a flood, glibc's malloc kept what the links
//! had freed in its arenas, mimalloc gives most of it back (docs/PERFORMANCE.md, "Memory
//! given back after a flood"). But mimalloc returns freed pages lazily, from inside later
//! allocator calls on the thread that owns them; a server whose attackers went away is
//! idle, its worker threads make no such calls, and the memory stayed resident (79 MiB of a
//! 32 MiB budget's flood, ten seconds after the peers had gone).
//!
//! So each runtime worker thread asks mimalloc to collect (return what is free) when it
//! parks, at most once a second: an idle server gives its memory back within about a
//! second, and a busy one pays one collection per thread per second (no difference was
//! measurable in throughput or request rate).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The global allocator of the `nodelink` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Least time between two collections on one thread.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// For `on_thread_park`: returns the calling thread's free memory to the system, unless
/// it did so less than [`COLLECT_EVERY`] ago.
pub fn collect_when_idle() {
    let now = Instant::now();
    let due = LAST_COLLECT.with(|last| match last.get() {
        Some(t) if now.duration_since(t) < COLLECT_EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        // SAFETY: `mi_collect` has no preconditions: it may be called from any thread at
        // any time, and only frees what the calling thread's heap and the shared arenas
        // hold unused. mimalloc is this process's allocator (above), so its heaps are the
        // ones in use.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_collect(true)
        };
    }
}
