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
//! parks, at most once a second. A park within a second of the thread's last collection
//! skips it and leaves the thread owing one; since a parked worker may sleep for good, a
//! watcher thread wakes the runtime's workers a second later so that they park again and
//! pay what they owe. An idle server gives its memory back within about two seconds, and a
//! busy one pays one collection per thread per second (no difference was measurable in
//! throughput or request rate).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The global allocator of the `nodelink` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Least time between two collections on one thread.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// Worker threads whose last park skipped its collection.
static OWING: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
    static OWES: Cell<bool> = const { Cell::new(false) };
}

/// For `on_thread_park`: returns the calling thread's free memory to the system, unless
/// it did so less than [`COLLECT_EVERY`] ago (then the thread owes a collection, which
/// [`start_watcher`] comes back for).
pub fn collect_when_idle() {
    let now = Instant::now();
    let due = LAST_COLLECT.with(|last| match last.get() {
        Some(t) if now.duration_since(t) < COLLECT_EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    let owed = OWES.with(|owes| owes.replace(!due));
    match (owed, due) {
        (false, false) => {
            OWING.fetch_add(1, Ordering::Relaxed);
        }
        (true, true) => {
            OWING.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {}
    }
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

/// Starts the thread that, once a second, wakes `runtime`'s workers while some owe a
/// collection. It runs until the process exits.
pub fn start_watcher(runtime: tokio::runtime::Handle) {
    let spawned = std::thread::Builder::new()
        .name("alloc-collect".into())
        .spawn(move || loop {
            std::thread::sleep(COLLECT_EVERY);
            // One short task per owing worker. Each blocks its worker for a millisecond, so
            // that the next one is taken by another worker (tokio wakes a parked worker for
            // work left in its queue) rather than run after it on the same thread; every
            // worker that ran one parks again, and collects. A busy server owes a
            // collection most of the time: each worker is then held up a millisecond a
            // second.
            for _ in 0..OWING.load(Ordering::Relaxed) {
                runtime.spawn(async { std::thread::sleep(Duration::from_millis(1)) });
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the thread that gives memory back to the system: {e}");
    }
}
