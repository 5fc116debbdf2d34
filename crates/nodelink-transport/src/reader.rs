//! The one task per accepted socket: reads frames and feeds them to the socket's core.
//!
//! The protocol decisions live in the core (`core/socket.rs`); this task moves bytes. It
//! decodes frames, applies each to the core under the endpoint lock, and lets
//! [`Remote::pump`] carry the results out (events to the application, control frames to
//! the socket's one writer, behind any data already queued). It also sleeps until the
//! core's next deadline (an unanswered probe or CloseSocket) and tells the core when it
//! passes.
//!
//! Before handling a data frame or a new connection the reader waits for room in the event
//! queue, so a full queue stops the reading (and, through TCP, the peer). Teardown frames
//! (`CloseConnection`, `CloseSocket`, `CloseEndPoint`) and probes do not wait: the events
//! they post are bounded by the connections the peer opened earlier (each of which waited
//! for room), and a socket must be able to finish closing — which a pending connect may
//! be waiting for — even while the application is not receiving. For the same reason a
//! new connection that arrives while we are closing does not wait either: it resumes the
//! socket, which is the other way a close ends (`SocketCore::needs_room`).
//!
//! What a socket holds of messages still arriving counts against the transport's memory
//! budget ([`Config::max_memory`](crate::Config::max_memory)): peers may open as many
//! sockets as they like, each with a message of up to `max_receive_length` in progress.
//! Past the budget, a socket holding more than its floor stops reading (the peer waits,
//! through TCP) until the budget is released; still held back after [`HELD_BACK_AT_MOST`],
//! it is dropped with a log line. (Waiting for ever could deadlock: held-back sockets
//! free nothing until they read on.) The one dropped is not necessarily the offender: a
//! good peer's large message may be the one held back while many peers each hold a floor's
//! worth and say nothing more. Those go first: while the budget is exceeded and some
//! socket is held back waiting for it, a socket with part of a message from a peer quiet
//! for [`UNFINISHED_QUIET`] is dropped, whatever it holds, so the budget is released for
//! the sockets that are making progress.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::Instant;

use crate::address::EndPointAddress;
use crate::core::socket::{End, SocketCore};
use crate::endpoint_shared::{EndPointShared, CLOSE_LINGER};
use crate::limit::Activity;
use crate::remote::Sink;
use crate::stats::Counters;
use crate::wire::{Frame, FrameDecoder, WireError};
use crate::writer::SocketWriter;
use nodelink_driver::{peer_warn, Holding};

/// What to do after a step of the core.
enum Next {
    Continue,
    /// Write up to this mark, then continue.
    Flush(u64),
    /// The socket is finished in good order: write what is queued, close, exit.
    Close,
    /// The socket is finished badly (already reported): drop it at once.
    Drop,
    /// The socket broke: tell the core, then drop it.
    Lost(String),
    /// The peer broke the protocol: warn (within the budget), then as `Lost`.
    Violation(String),
}

const READ_CHUNK: usize = 16 << 10;

/// A socket publishes what it holds to the transport's budget in steps of this much.
const BUDGET_STEP: usize = 64 << 10;

/// The most one read takes in.
const READ_AT_MOST: u64 = 64 << 10;

/// How long a socket may stay held back by the memory budget before it is dropped.
pub(crate) const HELD_BACK_AT_MOST: std::time::Duration = std::time::Duration::from_secs(10);

/// Past the memory budget, while a socket is held back, a socket whose peer sent part of
/// a message and then nothing for this long is dropped (it holds budget that others
/// making progress wait for).
pub(crate) const UNFINISHED_QUIET: std::time::Duration = std::time::Duration::from_secs(3);

/// How often a socket with part of a message from a quiet peer looks at the budget.
const UNFINISHED_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) async fn run(
    ep: Arc<EndPointShared>,
    address: EndPointAddress,
    key: u64,
    mut read: OwnedReadHalf,
    mut buf: BytesMut,
    writer: Arc<SocketWriter>,
    activity: Option<Arc<Activity>>,
) {
    let mut decoder = FrameDecoder::new(ep.config.max_receive_length);
    // The core's next deadline, as of the last step here; others that give the core a
    // deadline (a probe, a close) wake us through `deadline_wake` to look again.
    let mut deadline = None;
    let holding = ep.memory.join(BUDGET_STEP);
    if let Some(a) = activity.as_ref().filter(|_| !buf.is_empty()) {
        // Bytes that came with the handshake: the peer has spoken.
        a.heard();
    }
    // When the peer last sent bytes, and when a quiet socket with part of a message
    // next looks at the budget.
    let mut last_heard = Instant::now();
    let mut quiet_check = last_heard + UNFINISHED_QUIET;
    let end = 'outer: loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e @ WireError::TooLong { .. }) => {
                    Counters::add(&ep.counters.protocol_violations, 1);
                    peer_warn!(
                        ep.warn_limit,
                        peer = %address,
                        endpoint = %ep.address,
                        error = &e as &dyn std::error::Error,
                        "message over the size limit (max_receive_length): socket dropped"
                    );
                    break 'outer Next::Lost(format!("message over the size limit: {e}"));
                }
                Err(e) => break 'outer Next::Violation(e.to_string()),
            };
            while needs_room(&ep, &address, key, &frame) {
                tokio::select! {
                    _ = ep.events.wait_room() => break,
                    _ = writer.cancel.cancelled() => break 'outer Next::Lost("socket cancelled".into()),
                    // Our side may start closing while this waits (the application closed
                    // its last connection); then a new connection must not wait: look again.
                    _ = writer.deadline_wake.notified() => deadline = next_timer(&ep, &address, key),
                }
            }
            let next = step(&ep, &address, key, &mut deadline, |core| {
                core.on_frame(frame, Instant::now()).map_err(|v| v.0)
            });
            match next {
                Next::Continue => {}
                Next::Flush(mark) => {
                    if let Err(e) = writer.flush(mark).await {
                        break 'outer Next::Lost(format!("write failed: {e}"));
                    }
                }
                other => break 'outer other,
            }
        }
        holding.set(buf.len());
        if holding.over(buf.len()) {
            let socket = Socket {
                ep: &ep,
                address: &address,
                key,
                writer: &writer,
            };
            if let Some(next) = held_back(&socket, &holding, buf.len(), &mut deadline).await {
                break next;
            }
            // Not quiet: it was us who did not read.
            last_heard = Instant::now();
            quiet_check = last_heard + UNFINISHED_QUIET;
            if let Some(a) = &activity {
                a.heard();
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        // At most this much per read: the decoder gives the buffer room for the whole
        // message in progress, which one read could otherwise fill with megabytes before
        // the budget is looked at again.
        let mut limited = (&mut read).take(READ_AT_MOST);
        tokio::select! {
            // In this order: a cancelled socket stops even under a flood, and bytes
            // already received win over an expiring deadline (an acknowledgement sitting
            // in the kernel buffer must not lose a random draw against its timer).
            biased;
            _ = writer.cancel.cancelled() => break Next::Lost("socket cancelled".into()),
            r = limited.read_buf(&mut buf) => match r {
                Ok(0) => break Next::Lost("the peer closed the socket".into()),
                Ok(_) => {
                    last_heard = Instant::now();
                    quiet_check = last_heard + UNFINISHED_QUIET;
                    if let Some(a) = &activity {
                        a.heard();
                    }
                }
                Err(e) => break Next::Lost(format!("read failed: {e}")),
            },
            _ = writer.deadline_wake.notified() => deadline = next_timer(&ep, &address, key),
            () = tokio::time::sleep_until(quiet_check), if !buf.is_empty() => {
                let budget = holding.budget();
                if budget.exceeded_share().is_some() && budget.held_back() > 0 {
                    let quiet = last_heard.elapsed();
                    peer_warn!(
                        ep.warn_limit,
                        peer = %address,
                        endpoint = %ep.address,
                        held = buf.len(),
                        quiet_ms = quiet.as_millis() as u64,
                        "memory budget (max_memory) reached: socket with part of a message \
                         from a peer that sends nothing more, dropped"
                    );
                    break Next::Lost(format!(
                        "part of a message ({} bytes) and nothing more for {quiet:?} past the \
                         memory budget",
                        buf.len()
                    ));
                }
                quiet_check = Instant::now() + UNFINISHED_RECHECK;
            }
            _ = expiry(deadline) => {
                match step(&ep, &address, key, &mut deadline, |core| {
                    core.on_timer(Instant::now());
                    Ok(())
                }) {
                    Next::Continue => {}
                    Next::Flush(mark) => {
                        if let Err(e) = writer.flush(mark).await {
                            break Next::Lost(format!("write failed: {e}"));
                        }
                    }
                    other => break other,
                }
            }
        }
    };
    let end = match end {
        Next::Violation(reason) => {
            Counters::add(&ep.counters.protocol_violations, 1);
            peer_warn!(
                ep.warn_limit,
                peer = %address,
                endpoint = %ep.address,
                %reason,
                "protocol violation: socket dropped"
            );
            lost(&ep, &address, key, reason)
        }
        Next::Lost(reason) => lost(&ep, &address, key, reason),
        other => other,
    };
    match end {
        Next::Close => {
            let _ = tokio::time::timeout(CLOSE_LINGER, writer.shutdown()).await;
        }
        _ => {
            writer.kill();
            writer.cancel.cancel();
        }
    }
    writer.abandon().await;
    drop(read);
}

/// Waits while the memory budget holds this socket back, holding `held` bytes of a
/// message still arriving: `None` once it may read on, or how the socket ends. The
/// core's deadlines (an unanswered probe, a close) still pass meanwhile.
async fn held_back(
    socket: &Socket<'_>,
    holding: &Holding,
    held: usize,
    deadline: &mut Option<Instant>,
) -> Option<Next> {
    let Socket {
        ep,
        address,
        key,
        writer,
    } = *socket;
    let budget = holding.budget();
    if budget.first_exceeded() {
        tracing::warn!(
            limit = budget.limit(),
            used = budget.used(),
            sockets = budget.members(),
            exceeded_unsaid = budget.unsaid_excesses(),
            endpoint = %ep.address,
            "memory budget (max_memory) reached: sockets holding more than their share of \
             messages still arriving (at most 256 KiB) stop reading; those still held back \
             after 10 s are dropped"
        );
    }
    let give_up = tokio::time::sleep(HELD_BACK_AT_MOST);
    tokio::pin!(give_up);
    // Published exactly: the release this waits for is signalled when the published
    // total falls under the limit, which unpublished bytes of ours would hide.
    holding.publish(held);
    // Counted while it waits: quiet sockets holding part of a message are ended only
    // while someone waits for the budget they hold.
    let _waiting = budget.hold_back();
    loop {
        // Created before the check, so a release in between is not missed.
        let released = budget.released();
        if !holding.over(held) {
            return None;
        }
        tokio::select! {
            biased;
            _ = writer.cancel.cancelled() => return Some(Next::Lost("socket cancelled".into())),
            () = released => {}
            _ = writer.deadline_wake.notified() => *deadline = next_timer(ep, address, key),
            _ = expiry(*deadline) => {
                match step(ep, address, key, deadline, |core| {
                    core.on_timer(Instant::now());
                    Ok(())
                }) {
                    Next::Continue => {}
                    Next::Flush(mark) => {
                        if let Err(e) = writer.flush(mark).await {
                            return Some(Next::Lost(format!("write failed: {e}")));
                        }
                    }
                    other => return Some(other),
                }
            }
            () = &mut give_up => {
                peer_warn!(
                    ep.warn_limit,
                    peer = %address,
                    endpoint = %ep.address,
                    held,
                    "memory budget (max_memory): socket held back for 10 s with part of a \
                     message, dropped"
                );
                return Some(Next::Lost(format!(
                    "held {held} bytes of an unfinished message past the memory budget \
                     for {HELD_BACK_AT_MOST:?}"
                )));
            }
        }
    }
}

/// What identifies one socket to the steps of its reader.
struct Socket<'a> {
    ep: &'a EndPointShared,
    address: &'a EndPointAddress,
    key: u64,
    writer: &'a Arc<SocketWriter>,
}

async fn expiry(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Whether `frame` must wait for room in the event queue ([`SocketCore::needs_room`]); not
/// if the socket is no longer ours (the step that follows finds that out).
fn needs_room(ep: &EndPointShared, address: &EndPointAddress, key: u64, frame: &Frame) -> bool {
    let mut st = ep.lock();
    st.peers
        .get_mut(address, key)
        .and_then(|rec| rec.core())
        .is_some_and(|core| core.needs_room(frame))
}

/// The core's next deadline, if the socket is still ours.
fn next_timer(ep: &EndPointShared, address: &EndPointAddress, key: u64) -> Option<Instant> {
    let mut st = ep.lock();
    st.peers.get_mut(address, key)?.core()?.next_timer()
}

/// Runs `f` on the socket's core under the endpoint lock and carries out the result;
/// leaves the core's next deadline in `deadline`.
fn step(
    ep: &EndPointShared,
    address: &EndPointAddress,
    key: u64,
    deadline: &mut Option<Instant>,
    f: impl FnOnce(&mut SocketCore) -> Result<(), String>,
) -> Next {
    let mut st = ep.lock();
    let Some(rec) = st.peers.get_mut(address, key) else {
        // The endpoint closed or forgot this socket.
        return Next::Close;
    };
    let Some(core) = rec.core_mut() else {
        return Next::Continue;
    };
    if let Err(violation) = f(core) {
        return Next::Violation(violation);
    }
    *deadline = core.next_timer();
    let sink = Sink {
        events: &ep.events,
        us: &ep.address,
        warn_limit: &ep.warn_limit,
        counters: &ep.counters,
    };
    let pumped = rec.pump(&sink, address);
    if let Some((end, resolution)) = pumped.finished {
        st.remove_remote(address, key, resolution);
        return match end {
            End::Lost { .. } => Next::Drop,
            _ => Next::Close,
        };
    }
    match pumped.mark {
        Some(mark) => Next::Flush(mark),
        None => Next::Continue,
    }
}

/// The socket broke or was dropped for a violation: the core decides what the application
/// hears (ConnectionLost if it was in use), then the record goes.
fn lost(ep: &EndPointShared, address: &EndPointAddress, key: u64, reason: String) -> Next {
    match step(ep, address, key, &mut None, |core| {
        core.fail(reason);
        Ok(())
    }) {
        // The record was already gone: nothing to report.
        Next::Close => Next::Drop,
        other => other,
    }
}
