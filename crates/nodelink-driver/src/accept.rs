//! Accepting TCP connections without giving up on errors that pass.
//!
//! `accept` fails for two very different reasons. Most failures concern one incoming
//! connection (the peer reset it before we took it) or a shortage that passes (out of file
//! descriptors until some connection closes, out of kernel buffers): the listener is fine
//! and the right thing is to wait a moment and accept again. A few mean the listening
//! socket itself is broken: then the server must say so and stop. Every nodelink listener
//! (the link's, the endpoint transport's, the tunnel client's) uses this one rule, so they
//! behave alike under the same pressure.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! loop {
//!     // Transient errors are logged and retried inside; only a broken listener returns.
//!     let (stream, peer) = nodelink_driver::accept(&listener).await?;
//!     # drop((stream, peer)); break;
//! }
//! # Ok(()) }
//! ```

/// The process's soft limit on open files (1024 when it cannot be read): what servers
/// derive their default connection limits from, since each connection holds a
/// descriptor (the `nodelink` command raises the soft limit to the hard one at start).
pub fn open_file_limit() -> usize {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _hard)| soft);
    usize::try_from(soft).unwrap_or(usize::MAX)
}

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// How long to wait before accepting again after a transient failure: long enough that a
/// listener out of descriptors does not spin, short enough that clients barely notice.
/// Failures in a row double it, up to [`RETRY_AT_MOST`].
pub const RETRY_AFTER: Duration = Duration::from_millis(50);

/// The longest pause between accepts while failures go on (a process out of descriptors
/// tries once a second, not in a hot loop).
pub const RETRY_AT_MOST: Duration = Duration::from_secs(1);

/// The pause after `failures` transient failures in a row (1 for the first).
pub fn retry_pause(failures: u32) -> Duration {
    RETRY_AFTER
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(RETRY_AT_MOST)
}

/// Whether an `accept` error leaves the listener usable (retry after [`RETRY_AFTER`]) rather
/// than broken (stop).
///
/// Transient: the connection was aborted or reset before we took it, the call was
/// interrupted, the process or system is out of descriptors (EMFILE, ENFILE), memory or
/// buffers (ENOMEM, ENOBUFS), and the network errors Linux reports from `accept` for a
/// connection that already failed (EPROTO, ENETDOWN, ENETUNREACH, EHOSTDOWN,
/// EHOSTUNREACH, ENONET, ENOPROTOOPT, EOPNOTSUPP, EPERM from a firewall rule).
pub fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::ConnectionAborted
            | K::ConnectionReset
            | K::ConnectionRefused
            | K::Interrupted
            | K::WouldBlock
            | K::OutOfMemory
    ) {
        return true;
    }
    // Linux errno values (the same on every Linux architecture nodelink builds for).
    const EPERM: i32 = 1;
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ENONET: i32 = 64;
    const EPROTO: i32 = 71;
    const ENOPROTOOPT: i32 = 92;
    const EOPNOTSUPP: i32 = 95;
    const ENETDOWN: i32 = 100;
    const ENETUNREACH: i32 = 101;
    const ENOBUFS: i32 = 105;
    const EHOSTDOWN: i32 = 112;
    const EHOSTUNREACH: i32 = 113;
    cfg!(target_os = "linux")
        && matches!(
            e.raw_os_error(),
            Some(
                EPERM
                    | ENOMEM
                    | ENFILE
                    | EMFILE
                    | ENONET
                    | EPROTO
                    | ENOPROTOOPT
                    | EOPNOTSUPP
                    | ENETDOWN
                    | ENETUNREACH
                    | ENOBUFS
                    | EHOSTDOWN
                    | EHOSTUNREACH
            )
        )
}

/// Accepts the next connection. Transient failures ([`is_transient`]) are retried after a
/// pause that grows while they go on ([`retry_pause`]); the first of a streak is logged at
/// WARN, the end of the streak at INFO with its count, so a listener out of descriptors
/// writes two lines, not one per attempt. Only an error that means the listener is broken
/// is returned. Cancel-safe, like [`TcpListener::accept`].
pub async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let mut retry = Retry::default();
    std::future::poll_fn(|cx| retry.poll_accept(listener, cx)).await
}

/// [`accept`] in polling form, for listeners that are themselves polled (a
/// `futures_core::Stream` of connections): it keeps the pause after a transient failure
/// between polls.
#[derive(Debug, Default)]
pub struct Retry {
    pause: Option<Pin<Box<Sleep>>>,
    /// Transient failures in a row.
    failures: u32,
}

impl Retry {
    /// Polls `listener` for the next connection, with [`accept`]'s retry policy.
    pub fn poll_accept(
        &mut self,
        listener: &TcpListener,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        loop {
            if let Some(pause) = &mut self.pause {
                if pause.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.pause = None;
            }
            match listener.poll_accept(cx) {
                Poll::Ready(Err(e)) if is_transient(&e) => {
                    self.failures = self.failures.saturating_add(1);
                    if self.failures == 1 {
                        tracing::warn!(
                            error = &e as &dyn std::error::Error,
                            "accept failed; retrying, less often while it goes on"
                        );
                    } else {
                        tracing::debug!(
                            error = &e as &dyn std::error::Error,
                            failures = self.failures,
                            "accept failed again"
                        );
                    }
                    let pause = retry_pause(self.failures);
                    self.pause = Some(Box::pin(tokio::time::sleep(pause)));
                }
                Poll::Ready(Ok(accepted)) => {
                    if self.failures > 0 {
                        tracing::info!(failures = self.failures, "accept works again");
                    }
                    self.failures = 0;
                    return Poll::Ready(Ok(accepted));
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_grows_while_failures_go_on_and_is_bounded() {
        let pauses: Vec<_> = (1..=8).map(retry_pause).collect();
        assert_eq!(pauses[0], RETRY_AFTER);
        assert_eq!(pauses[1], RETRY_AFTER * 2);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(retry_pause(8), RETRY_AT_MOST);
        assert_eq!(retry_pause(u32::MAX), RETRY_AT_MOST);
        assert_eq!(retry_pause(0), RETRY_AFTER);
    }

    #[test]
    fn passing_failures_are_transient_and_a_broken_listener_is_not() {
        for kind in [
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::Interrupted,
            io::ErrorKind::WouldBlock,
        ] {
            assert!(is_transient(&io::Error::from(kind)), "{kind:?}");
        }
        if cfg!(target_os = "linux") {
            for errno in [23, 24, 105, 12, 71] {
                assert!(
                    is_transient(&io::Error::from_raw_os_error(errno)),
                    "{errno}"
                );
            }
            // EBADF, EINVAL, ENOTSOCK: the listening socket itself is unusable.
            for errno in [9, 22, 88] {
                assert!(
                    !is_transient(&io::Error::from_raw_os_error(errno)),
                    "{errno}"
                );
            }
        }
        assert!(!is_transient(&io::Error::other("listener gone")));
    }

    #[tokio::test]
    async fn accepts_a_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dial = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (_stream, peer) = accept(&listener).await.unwrap();
        let dialed = dial.await.unwrap();
        assert_eq!(peer, dialed.local_addr().unwrap());
    }
}
