//! The receiving half of a link: one task reads the stream into a large buffer and hands
//! it to the protocol core, which cuts out every complete packet (zero-copy) and routes it.
//!
//! The task only moves bytes and waits: for the socket, for the core's one timer, and,
//! when the core holds a packet back (the link-wide receive limit, or a full accept
//! backlog: backpressure), for the core to say it may go on. Routing never waits on a
//! connection: a connection that is not read fills its own budget, not the link.

use crate::warnings::PEER_WARNINGS;
use nodelink_driver::peer_warn;
use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::core::{IdleEvent, Input};
use crate::inner::{LinkEnd, LinkInner, Output};
use crate::link::BoxRead;

/// Below this much free room the read buffer is topped up before the next read.
const MIN_READ_ROOM: usize = 4 << 10;

/// Why a reader that held back stopped waiting.
enum Unblocked {
    /// The core lets it read again.
    Go,
    /// The link is stopping.
    Stop,
    /// The socket failed while the reader held back.
    Gone,
}

impl LinkInner {
    pub(crate) async fn reader_task(self: Arc<Self>, mut io: BoxRead) {
        // Small at first: a quiet link holds little; the first read that fills it makes
        // room for `read_buffer` (below).
        let mut buf = BytesMut::with_capacity(2 * MIN_READ_ROOM);
        let mut out = Output::default();
        // One registration with the stop token for the task's life, not one per read.
        let stop = self.stop_reading.cancelled();
        tokio::pin!(stop);
        let err = loop {
            let input =
                self.with_core_into(&mut out, |s| s.core.handle_input(&mut buf, Instant::now()));
            self.dispatch(&mut out);
            match input {
                Ok(Input::Drained) => {}
                Ok(Input::PeerClosed) => {
                    break io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the link")
                }
                Ok(Input::Blocked) => match self.wait_until_unblocked(tcp_of(&io)).await {
                    Unblocked::Go => continue,
                    Unblocked::Stop => return,
                    Unblocked::Gone => {
                        break io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "the peer went away while the link held back reading from it",
                        )
                    }
                },
                Err(e) => {
                    // Link-fatal: the byte stream cannot be trusted any more.
                    peer_warn!(
                        PEER_WARNINGS,
                        link = %self.name,
                        error = &e as &dyn std::error::Error,
                        "protocol violation by the peer; closing the link"
                    );
                    break io::Error::new(io::ErrorKind::InvalidData, e);
                }
            }
            if buf.capacity() - buf.len() < MIN_READ_ROOM {
                buf.reserve(self.config.read_buffer);
            }
            let deadline = self.shared.lock().core.poll_timeout();
            tokio::select! {
                biased;
                _ = &mut stop => return,
                _ = sleep_until(deadline), if deadline.is_some() => {
                    if let IdleEvent::Expired(after) =
                        self.with_core(|s| s.core.handle_timeout(Instant::now()))
                    {
                        break io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no packet from the peer for {after:?} (idle timeout)"),
                        );
                    }
                }
                r = io.read_buf(&mut buf) => match r {
                    Ok(0) => break io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the link"),
                    Ok(_) => {}
                    Err(e) => break e,
                },
            }
        };
        self.shutdown(LinkEnd::Failed(Arc::new(err)));
    }

    /// Waits until the core lets the reader go on, the link stops, or the socket fails.
    ///
    /// A reader that holds back (its peer sends more than the application or the
    /// listener's memory budget can take) reads nothing, so it would never see the peer
    /// go: the paused link, with everything it holds, would stay until the writer tripped
    /// over the reset, which it never does when it has nothing left to send. On plain TCP
    /// it therefore watches the socket for an error (a reset: the peer went away with data
    /// unread) while it waits.
    async fn wait_until_unblocked(&self, tcp: Option<&tokio::net::TcpStream>) -> Unblocked {
        loop {
            // Registered before the check, so a release in between is not missed; a
            // release only makes the reader look again (a full accept backlog still holds).
            // (The `Notified` is created here, outside the async block, which would
            // create it only when first polled.)
            let released = self.config.budget.as_ref().map(|b| b.released());
            let released = async {
                match released {
                    Some(released) => released.await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(released);
            // A link held back partly for what it has to send looks again when that
            // drains: the budget may stay exceeded by others all along.
            let member = self.shared.lock().core.budget_member().cloned();
            let drained = async {
                match &member {
                    Some(m) => m.drained.notified().await,
                    None => std::future::pending().await,
                }
            };
            let failed = async {
                match tcp {
                    Some(tcp) => {
                        if tcp.ready(tokio::io::Interest::ERROR).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.stop_reading.cancelled() => return Unblocked::Stop,
                () = failed => return Unblocked::Gone,
                () = &mut released => continue,
                () = drained => continue,
                _ = poll_fn(|cx| {
                    let mut s = self.shared.lock();
                    if s.core.reader_blocked() {
                        s.reader = Some(cx.waker().clone());
                        Poll::Pending
                    } else {
                        Poll::Ready(())
                    }
                }) => return Unblocked::Go,
            }
        }
    }
}

/// The TCP socket beneath `io`, if the link runs on plain TCP.
fn tcp_of(io: &BoxRead) -> Option<&tokio::net::TcpStream> {
    io.as_ref().get_ref().tcp()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
