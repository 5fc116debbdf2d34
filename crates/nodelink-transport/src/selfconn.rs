//! Connections from an endpoint to itself: no network, heavyweight id 0, lcids from a
//! per-endpoint counter starting at 1024, events queued directly.
//!
//! A send to oneself waits for room in the event queue like a socket would, so a task
//! that sends to itself without ever receiving stops at the queue's capacity instead of
//! growing memory.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use crate::endpoint_shared::EndPointShared;
use crate::error::{Error, ErrorKind};
use crate::event::{ConnectionId, Event, Reliability};

/// Opens a connection to ourselves; returns its lcid (the caller makes the handle).
pub(crate) fn open(ep: &EndPointShared) -> Result<u32, Error> {
    let mut st = ep.lock();
    if st.peers.is_closed() {
        return Err(Error::new(ErrorKind::ConnectFailed, "endpoint closed"));
    }
    let lcid = st.next_self_lcid;
    st.next_self_lcid = st
        .next_self_lcid
        .wrapping_add(1)
        .max(crate::wire::FIRST_LCID);
    ep.events.push(Event::ConnectionOpened {
        id: ConnectionId::new(0, lcid),
        reliability: Reliability::ReliableOrdered,
        address: ep.address.clone(),
    });
    Ok(lcid)
}

/// Sends on our connection `lcid` to ourselves (`alive` is the handle's open flag).
pub(crate) async fn send<B: AsRef<[u8]>>(
    ep: &EndPointShared,
    lcid: u32,
    alive: &AtomicBool,
    chunks: &[B],
    total: usize,
) -> Result<(), Error> {
    if !alive.load(Ordering::Acquire) {
        return Err(Error::new(ErrorKind::SendClosed, "connection closed"));
    }
    ep.events.wait_room().await;
    let mut data = bytes::BytesMut::with_capacity(total);
    for c in chunks {
        data.extend_from_slice(c.as_ref());
    }
    let st = ep.lock();
    if !alive.load(Ordering::Acquire) {
        return Err(Error::new(ErrorKind::SendClosed, "connection closed"));
    }
    if st.peers.is_closed() {
        return Err(Error::new(ErrorKind::SendFailed, "endpoint closed"));
    }
    let data: Vec<Bytes> = vec![data.freeze()];
    ep.events.push(Event::Received {
        id: ConnectionId::new(0, lcid),
        data,
    });
    Ok(())
}

/// Closes our connection `lcid` to ourselves, once.
pub(crate) fn close(ep: &EndPointShared, lcid: u32, alive: &AtomicBool) {
    let st = ep.lock();
    if alive.swap(false, Ordering::AcqRel) && !st.peers.is_closed() {
        ep.events.push(Event::ConnectionClosed {
            id: ConnectionId::new(0, lcid),
        });
    }
}
