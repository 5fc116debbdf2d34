//! A budget for warnings caused by peers.
//!
//! Anything a peer can trigger at will (a malformed frame, a rejected handshake, a datagram
//! that does not decrypt) could fill the log if every occurrence wrote a line: a hostile
//! client that reconnects in a loop would turn our log into its megaphone. So each server
//! (a transport, a KCP listener, a tunnel end) shares one [`WarnLimiter`]:
//!
//! * each **kind** of warning (one [`peer_warn!`](crate::peer_warn) call site) writes at most [`PER_KIND`]
//!   lines per [`INTERVAL`], and all kinds together at most [`PER_SECOND`] a second;
//! * what is held back is counted per kind with a few example peers, and said in **one
//!   summary line per kind** once its interval is over ("1523 more in the last 10 s, e.g.
//!   192.0.2.7:4000, ...: the warning"), with the next warning of that server or when
//!   the limiter is dropped.
//!
//! So a flood costs a few lines per kind every ten seconds, with counts and examples an
//! operator can act on. Events of our own making (a connection opened, an endpoint
//! closed) are logged at info level without a budget.
//!
//! ```
//! use nodelink_driver::{peer_warn, WarnLimiter};
//!
//! let limit = WarnLimiter::new();
//! for port in 0..1000u16 {
//!     let peer = std::net::SocketAddr::from(([192, 0, 2, 7], port));
//!     // PER_KIND lines now; the rest are counted, with example peers, for the summary.
//!     peer_warn!(limit, peer = %peer, "a malformed frame: dropped");
//! }
//! ```

use std::fmt::Display;
use std::sync::Mutex;

use crate::sync::lock;
use std::time::Duration;

use tokio::time::Instant;

/// Peer-caused warnings written per second, all kinds together.
pub const PER_SECOND: u32 = 10;

/// Lines one kind of warning writes per [`INTERVAL`]; the rest go into its summary.
pub const PER_KIND: u32 = 3;

/// How long a kind's lines are counted before its summary line.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Example peers a summary names at most.
const EXAMPLES: usize = 3;

/// Held warnings per kind and interval whose peer is formatted in search of a new example
/// (a flood from one address would otherwise format it on every warning).
const EXAMPLE_TRIES: u32 = 16;

const SECOND: Duration = Duration::from_secs(1);

/// One kind of warning: a [`peer_warn!`](crate::peer_warn) call site (a `static` it declares), named by its
/// message.
#[derive(Debug)]
pub struct WarnSite {
    message: &'static str,
    /// The module of the call site (its warnings' tracing target), named in summaries.
    origin: &'static str,
    /// Its lines, and so its summaries, are INFO rather than WARN
    /// ([`peer_info!`](crate::peer_info)).
    info: bool,
}

impl WarnSite {
    /// The site of the warning `message`.
    pub const fn new(message: &'static str) -> WarnSite {
        WarnSite {
            message,
            origin: "",
            info: false,
        }
    }

    /// The site of the warning `message` in module `origin` (what
    /// [`peer_warn!`](crate::peer_warn) declares, with `module_path!()`).
    pub const fn at(message: &'static str, origin: &'static str) -> WarnSite {
        WarnSite::warn(message, origin)
    }

    /// The site of the warning `message` in module `origin`.
    pub const fn warn(message: &'static str, origin: &'static str) -> WarnSite {
        WarnSite {
            message,
            origin,
            info: false,
        }
    }

    /// The site of the INFO line `message` in module `origin` (what
    /// [`peer_info!`](crate::peer_info) declares); its summaries are INFO too.
    pub const fn info(message: &'static str, origin: &'static str) -> WarnSite {
        WarnSite {
            message,
            origin,
            info: true,
        }
    }
}

/// One budget of peer-caused warnings; share it (`Arc`) among everything one server does.
#[derive(Debug)]
pub struct WarnLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Start of the current one-second window, and lines written in it.
    second: Option<Instant>,
    written: u32,
    /// The kinds seen (a handful per server: one per call site).
    kinds: Vec<Kind>,
}

#[derive(Debug)]
struct Kind {
    site: &'static WarnSite,
    /// Start of this kind's interval.
    since: Instant,
    written: u32,
    held: u64,
    examples: Vec<String>,
    /// Peers formatted this interval in search of examples.
    example_tries: u32,
}

impl Kind {
    /// The summary of what this kind held back, if anything.
    fn summary(&self, now: Instant) -> Option<Summary> {
        (self.held > 0).then(|| Summary {
            message: self.site.message,
            origin: self.site.origin,
            held: self.held,
            seconds: now.duration_since(self.since).as_secs().max(1),
            examples: self.examples.join(", "),
            info: self.site.info,
        })
    }
}

/// A summary line to write once the lock is released.
struct Summary {
    message: &'static str,
    origin: &'static str,
    held: u64,
    seconds: u64,
    examples: String,
    info: bool,
}

impl Summary {
    fn write(&self) {
        let examples = if self.examples.is_empty() {
            String::new()
        } else {
            format!(", e.g. {}", self.examples)
        };
        // The summary's target is this module (tracing needs a constant one); `origin`
        // names the module whose warnings it counts.
        if self.info {
            tracing::info!(
                suppressed = self.held,
                origin = self.origin,
                "{} more in the last {} s{examples}: {}",
                self.held,
                self.seconds,
                self.message
            );
        } else {
            tracing::warn!(
                suppressed = self.held,
                origin = self.origin,
                "{} more in the last {} s{examples}: {}",
                self.held,
                self.seconds,
                self.message
            );
        }
    }
}

impl WarnLimiter {
    /// A full budget.
    pub const fn new() -> Self {
        WarnLimiter {
            state: Mutex::new(State {
                second: None,
                written: 0,
                kinds: Vec::new(),
            }),
        }
    }

    /// Whether one more warning of kind `site` may be written now; if not, it is counted
    /// for the kind's summary, with `peer` as an example. Summaries of kinds whose
    /// interval is over are written first. [`peer_warn!`](crate::peer_warn) calls this.
    pub fn allow(&self, site: &'static WarnSite, peer: Option<&dyn Display>) -> bool {
        let now = Instant::now();
        let mut summaries = Vec::new();
        let allowed = {
            let mut st = lock(&self.state);
            for kind in &mut st.kinds {
                if now.duration_since(kind.since) >= INTERVAL {
                    summaries.extend(kind.summary(now));
                    kind.since = now;
                    kind.written = 0;
                    kind.held = 0;
                    kind.examples.clear();
                    kind.example_tries = 0;
                }
            }
            if st.second.is_none_or(|s| now.duration_since(s) >= SECOND) {
                st.second = Some(now);
                st.written = 0;
            }
            let room = st.written < PER_SECOND;
            let index = match st.kinds.iter().position(|k| std::ptr::eq(k.site, site)) {
                Some(i) => i,
                None => {
                    st.kinds.push(Kind {
                        site,
                        since: now,
                        written: 0,
                        held: 0,
                        examples: Vec::new(),
                        example_tries: 0,
                    });
                    st.kinds.len() - 1
                }
            };
            let kind = &mut st.kinds[index];
            if room && kind.written < PER_KIND {
                kind.written += 1;
                st.written += 1;
                Allowed::Yes
            } else {
                kind.held += 1;
                if kind.examples.len() < EXAMPLES && kind.example_tries < EXAMPLE_TRIES {
                    kind.example_tries += 1;
                    Allowed::NoButExample
                } else {
                    Allowed::No
                }
            }
        };
        // Formatting runs the caller's Display: not under the lock every server shares.
        if let (Allowed::NoButExample, Some(peer)) = (allowed, peer) {
            let peer = peer.to_string();
            let mut st = lock(&self.state);
            if let Some(kind) = st.kinds.iter_mut().find(|k| std::ptr::eq(k.site, site)) {
                if kind.examples.len() < EXAMPLES && !kind.examples.contains(&peer) {
                    kind.examples.push(peer);
                }
            }
        }
        for summary in summaries {
            summary.write();
        }
        allowed == Allowed::Yes
    }
}

/// What [`WarnLimiter::allow`] decided under its lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Allowed {
    Yes,
    No,
    /// Held back, and the peer may make a new example for the summary.
    NoButExample,
}

impl Default for WarnLimiter {
    fn default() -> Self {
        WarnLimiter::new()
    }
}

impl Drop for WarnLimiter {
    /// The summaries still pending: a server that stops says what it held back.
    fn drop(&mut self) {
        let now = Instant::now();
        let st = lock(&self.state);
        let summaries: Vec<Summary> = st.kinds.iter().filter_map(|k| k.summary(now)).collect();
        drop(st);
        for summary in summaries {
            summary.write();
        }
    }
}

/// Writes a WARN line if the [`WarnLimiter`] `$limit` allows it; the other arguments are
/// as for `tracing::warn!`, ending with the message (a string literal, which names the
/// kind in summaries). A `peer = %name,` or `%peer,` field gives the summary its examples.
#[macro_export]
macro_rules! peer_warn {
    ($limit:expr, $($arg:tt)+) => {
        $crate::__peer_warn!(@find [warn, $limit] [$($arg)+] [] $($arg)+)
    };
}

/// [`peer_warn!`] at INFO level: for lines each peer may cause in normal operation (a
/// session starting) that a flood of peers must not turn into a flood of lines. They share
/// `$limit`'s budget; what is held back is summarised as for warnings.
#[macro_export]
macro_rules! peer_info {
    ($limit:expr, $($arg:tt)+) => {
        $crate::__peer_warn!(@find [info, $limit] [$($arg)+] [] $($arg)+)
    };
}

/// The parts of [`peer_warn!`](crate::peer_warn): finds the peer field and the message among the arguments.
#[doc(hidden)]
#[macro_export]
macro_rules! __peer_warn {
    (@find [$lvl:ident, $limit:expr] [$($all:tt)+] [$($p:tt)*] peer = % $peer:ident , $($rest:tt)*) => {
        $crate::__peer_warn!(@find [$lvl, $limit] [$($all)+] [$peer] $($rest)*)
    };
    // A shorthand `%name,` field: the peer if its name is `peer` (the caller's own token is
    // kept, so that it names the caller's variable).
    (@find [$lvl:ident, $limit:expr] [$($all:tt)+] [$($p:tt)*] % $field:ident , $($rest:tt)*) => {
        $crate::__peer_warn!(@shorthand [$field] [$field] [$lvl, $limit] [$($all)+] [$($p)*] $($rest)*)
    };
    (@shorthand [peer] [$field:ident] [$lvl:ident, $limit:expr] [$($all:tt)+] [$($p:tt)*] $($rest:tt)*) => {
        $crate::__peer_warn!(@find [$lvl, $limit] [$($all)+] [$field] $($rest)*)
    };
    (@shorthand [$other:ident] [$field:ident] [$lvl:ident, $limit:expr] [$($all:tt)+] [$($p:tt)*] $($rest:tt)*) => {
        $crate::__peer_warn!(@find [$lvl, $limit] [$($all)+] [$($p)*] $($rest)*)
    };
    (@find [$lvl:ident, $limit:expr] [$($all:tt)+] [$($p:tt)*] $message:literal $(,)?) => {
        $crate::__peer_warn!(@emit [$lvl, $limit] [$($all)+] [$($p)*] $message)
    };
    (@find [$lvl:ident, $limit:expr] [$($all:tt)+] [$($p:tt)*] $head:tt $($rest:tt)*) => {
        $crate::__peer_warn!(@find [$lvl, $limit] [$($all)+] [$($p)*] $($rest)*)
    };
    (@emit [$lvl:ident, $limit:expr] [$($all:tt)+] [] $message:literal) => {{
        static SITE: $crate::WarnSite = $crate::WarnSite::$lvl($message, ::std::module_path!());
        if $limit.allow(&SITE, None) {
            $crate::__private::tracing::$lvl!($($all)+);
        }
    }};
    (@emit [$lvl:ident, $limit:expr] [$($all:tt)+] [$peer:ident] $message:literal) => {{
        static SITE: $crate::WarnSite = $crate::WarnSite::$lvl($message, ::std::module_path!());
        if $limit.allow(&SITE, Some(&$peer as &dyn ::std::fmt::Display)) {
            $crate::__private::tracing::$lvl!($($all)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    static A: WarnSite = WarnSite::new("kind a");
    static B: WarnSite = WarnSite::new("kind b");

    fn held(l: &WarnLimiter, site: &'static WarnSite) -> (u64, Vec<String>) {
        let st = lock(&l.state);
        let k = st
            .kinds
            .iter()
            .find(|k| std::ptr::eq(k.site, site))
            .unwrap();
        (k.held, k.examples.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn each_kind_writes_a_few_lines_per_interval_and_counts_the_rest() {
        let l = WarnLimiter::new();
        let peers: Vec<String> = (0..100).map(|i| format!("192.0.2.{i}:4000")).collect();
        let allowed = peers
            .iter()
            .filter(|p| l.allow(&A, Some(p as &dyn Display)))
            .count();
        assert_eq!(allowed, PER_KIND as usize);
        let (count, examples) = held(&l, &A);
        assert_eq!(count, 100 - u64::from(PER_KIND));
        assert_eq!(
            examples,
            ["192.0.2.3:4000", "192.0.2.4:4000", "192.0.2.5:4000"]
        );
        // Another kind has its own lines.
        assert!(l.allow(&B, None));
        // Within the interval nothing more of A; after it, A writes again and its count
        // starts over (the summary was written).
        tokio::time::advance(INTERVAL / 2).await;
        assert!(!l.allow(&A, None));
        tokio::time::advance(INTERVAL / 2).await;
        assert!(l.allow(&A, None));
        assert_eq!(held(&l, &A).0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_summary_line_counts_and_names_examples() {
        let log = nodelink_testkit::Captured::default();
        let _guard = log.install();
        let l = WarnLimiter::new();
        for i in 0..50u16 {
            let peer = std::net::SocketAddr::from(([192, 0, 2, 9], 4000 + i));
            crate::peer_warn!(l, peer = %peer, detail = i, "a forged datagram: dropped");
        }
        assert_eq!(
            log.find("WARN", &["a forged datagram"]).len(),
            PER_KIND as usize
        );
        // The next warning after the interval writes the summary first.
        tokio::time::advance(INTERVAL).await;
        crate::peer_warn!(l, "something else");
        log.expect_one(
            "WARN",
            &[
                "47 more in the last 10 s, e.g. 192.0.2.9:4003, 192.0.2.9:4004, 192.0.2.9:4005",
                "a forged datagram: dropped",
            ],
        );
        // A kind still held back when the limiter goes is summarised then (this call site
        // is a kind of its own: three lines, two held back).
        for _ in 0..5 {
            crate::peer_warn!(l, "a third kind");
        }
        drop(l);
        log.expect_one("WARN", &["2 more in the last 1 s: a third kind"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_peer_field_is_found_in_either_form() {
        let log = nodelink_testkit::Captured::default();
        let _guard = log.install();
        let l = WarnLimiter::new();
        let reason = "not the peer";
        for i in 0..5u16 {
            let peer = std::net::SocketAddr::from(([198, 51, 100, 1], i));
            crate::peer_warn!(l, %reason, %peer, "shorthand form");
        }
        for i in 0..5u16 {
            let from = std::net::SocketAddr::from(([198, 51, 100, 2], i));
            crate::peer_warn!(l, peer = %from, "named form");
        }
        drop(l);
        log.expect_one(
            "WARN",
            &["e.g. 198.51.100.1:3, 198.51.100.1:4: shorthand form"],
        );
        log.expect_one("WARN", &["e.g. 198.51.100.2:3, 198.51.100.2:4: named form"]);
    }

    #[tokio::test(start_paused = true)]
    async fn all_kinds_together_stay_within_the_budget_per_second() {
        let l = WarnLimiter::new();
        let sites: Vec<&'static WarnSite> = (0..20)
            .map(|_| &*Box::leak(Box::new(WarnSite::new("many kinds"))))
            .collect();
        let allowed = sites.iter().filter(|s| l.allow(s, None)).count();
        assert_eq!(allowed, PER_SECOND as usize);
        tokio::time::advance(SECOND).await;
        assert!(l.allow(sites[19], None), "the budget returns each second");
    }

    /// A flood from one address formats that address a bounded number of times per
    /// interval, not once per warning.
    #[tokio::test(start_paused = true)]
    async fn one_peers_flood_formats_it_a_bounded_number_of_times() {
        use std::sync::atomic::{AtomicU32, Ordering};
        struct Counted<'a>(&'a AtomicU32);
        impl Display for Counted<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fetch_add(1, Ordering::Relaxed);
                f.write_str("192.0.2.9:1")
            }
        }
        let formats = AtomicU32::new(0);
        let l = WarnLimiter::new();
        for _ in 0..10_000 {
            l.allow(&A, Some(&Counted(&formats) as &dyn Display));
        }
        assert_eq!(formats.load(Ordering::Relaxed), EXAMPLE_TRIES);
        assert_eq!(held(&l, &A).1, ["192.0.2.9:1"]);
    }
}
