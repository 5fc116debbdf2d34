//! Connections from an endpoint to itself: no network, heavyweight id 0, lcids from a
//! per-endpoint counter starting at 1024, events queued directly.
//!
//! A send to oneself waits for room in the event queue like a socket would, so a task
//! that sends to itself without ever receiving stops at the queue's capacity instead of
//! growing memory.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::connection::{ConnInner, Connection, Kind};
use crate::endpoint::EndPointShared;
use crate::error::{Error, ErrorKind};
use crate::event::{ConnectionId, Event, Reliability};

pub(crate) fn connect(ep: &Arc<EndPointShared>) -> Result<Connection, Error> {
    let mut st = ep.lock();
    if st.closed {
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
    Ok(Connection::new(ep.clone(), lcid, Kind::Local))
}

pub(crate) async fn send<B: AsRef<[u8]>>(
    inner: &ConnInner,
    chunks: &[B],
    total: usize,
) -> Result<(), Error> {
    if !inner.alive.load(Ordering::Acquire) {
        return Err(Error::new(ErrorKind::SendClosed, "connection closed"));
    }
    inner.ep.events.wait_room().await;
    let mut data = bytes::BytesMut::with_capacity(total);
    for c in chunks {
        data.extend_from_slice(c.as_ref());
    }
    let st = inner.ep.lock();
    if !inner.alive.load(Ordering::Acquire) {
        return Err(Error::new(ErrorKind::SendClosed, "connection closed"));
    }
    if st.closed {
        return Err(Error::new(ErrorKind::SendFailed, "endpoint closed"));
    }
    let data: Vec<Bytes> = vec![data.freeze()];
    inner.ep.events.push(Event::Received {
        id: ConnectionId::new(0, inner.lcid),
        data,
    });
    Ok(())
}

pub(crate) fn close(inner: &ConnInner) {
    let st = inner.ep.lock();
    if inner.alive.swap(false, Ordering::AcqRel) && !st.closed {
        inner.ep.events.push(Event::ConnectionClosed {
            id: ConnectionId::new(0, inner.lcid),
        });
    }
}
