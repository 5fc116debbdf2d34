//! The send queue of a link: what waits to be written, and how it is batched.
//!
//! Senders encode packets into [`TxQueue`] under its mutex (small ones back to back in a
//! tail buffer, large payloads by reference); the flush procedures in `writer.rs` take it
//! out in batches. Flow-control credit owed to the peer rides along as CREDIT frames at
//! the end of the next batch.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWrite;

use crate::frame::{Header, HEADER_LEN};
use crate::stats::Counters;
use crate::waiters::Waiters;

pub(crate) type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// Most connections credit can be owed to at once; beyond it (a peer that sends on many
/// connections and never reads) further credit is not returned and the count says so.
pub(crate) const MAX_OWED_CREDITS: usize = 65_536;

/// State of the send side, behind one mutex.
pub(crate) struct TxQueue {
    /// The socket's write half, absent while a flusher writes.
    pub(crate) io: Option<BoxWrite>,
    /// Frozen chunks waiting to be written, oldest first.
    pub(crate) chunks: VecDeque<Bytes>,
    /// A spare deque swapped in when a flusher takes `chunks`, to keep its capacity.
    pub(crate) spare: VecDeque<Bytes>,
    /// Small packets are encoded here back to back.
    pub(crate) tail: BytesMut,
    /// Bytes in `chunks` and `tail`.
    pub(crate) queued: usize,
    /// Bytes a flusher took out and has not finished writing. They count against the
    /// send buffer like queued ones: a peer that stops reading must not let a full batch
    /// stall in the socket while the queue fills again behind it.
    pub(crate) in_flight: usize,
    /// No more sends: the link is closing or down.
    pub(crate) down: bool,
    /// Senders waiting for the queue to shrink below the send buffer size.
    pub(crate) space: Waiters,
    /// Flow-control credit owed to the peer, per connection, sent as CREDIT frames with the
    /// next write (a stateless server owes some for every request; batching keeps that
    /// cheap). Bounded by [`MAX_OWED_CREDITS`] connections.
    pub(crate) credits: rustc_hash::FxHashMap<u32, u32>,
    /// Scratch for encoding `credits`, kept to avoid allocating per write.
    pub(crate) credit_list: Vec<(u32, u32)>,
    /// Reserved id the peer receives control frames on.
    pub(crate) peer_control_id: u32,
    /// The socket half took bytes it may not have flushed yet (TLS keeps records until a
    /// flush completes): a write that did not wait for its flush leaves this for the
    /// writer task, which flushes even with nothing queued.
    pub(crate) unflushed: bool,
}

/// What the tail buffer takes when a packet is first encoded into it: an idle link holds
/// no tail buffer at all (a server with thousands of quiet links pays for none).
const TAIL_CHUNK: usize = 16 << 10;

impl TxQueue {
    /// Starts a packet at the end of the tail: room for its header, filled in once the
    /// payload is encoded after it. Returns where the packet starts.
    pub(crate) fn start_packet(&mut self) -> usize {
        if self.tail.capacity() == 0 {
            self.tail.reserve(TAIL_CHUNK);
        }
        let mark = self.tail.len();
        self.tail.put_slice(&[0u8; HEADER_LEN]);
        mark
    }

    pub(crate) fn new(io: BoxWrite, peer_control_id: u32) -> Self {
        TxQueue {
            io: Some(io),
            chunks: VecDeque::new(),
            spare: VecDeque::new(),
            tail: BytesMut::new(),
            queued: 0,
            in_flight: 0,
            down: false,
            space: Waiters::default(),
            credits: Default::default(),
            credit_list: Vec::new(),
            peer_control_id,
            unflushed: false,
        }
    }

    /// Whether a writer has something to do: bytes or credit queued, or a flush owed.
    pub(crate) fn has_data(&self) -> bool {
        self.queued > 0 || !self.credits.is_empty() || self.unflushed
    }

    /// Bytes this link holds to send: queued, and taken out but not yet written.
    pub(crate) fn held(&self) -> usize {
        self.queued + self.in_flight
    }

    /// Encodes the owed credit as CREDIT frames at the end of the tail; returns how many
    /// frames and bytes that added.
    pub(crate) fn encode_credits(&mut self) -> (u64, u64) {
        const PER_FRAME: usize = 512;
        let start = self.tail.len();
        let mut frames = 0;
        let mut list = std::mem::take(&mut self.credit_list);
        list.extend(self.credits.drain());
        for entries in list.chunks(PER_FRAME) {
            let mark = self.start_packet();
            crate::control::encode_credits(entries, &mut self.tail);
            let len = self.tail.len() - mark - HEADER_LEN;
            let header = Header {
                conn_id: self.peer_control_id,
                code: crate::control::CONTROL_CODE,
                len: len as u32,
            };
            self.tail[mark..mark + HEADER_LEN].copy_from_slice(&header.to_bytes());
            frames += 1;
        }
        list.clear();
        self.credit_list = list;
        (frames, (self.tail.len() - start) as u64)
    }

    /// Moves everything queued into `batch` (it is in flight from then on).
    pub(crate) fn take_into(&mut self, batch: &mut VecDeque<Bytes>, stats: &Counters) {
        if !self.credits.is_empty() {
            let (frames, bytes) = self.encode_credits();
            Counters::add(&stats.packets_out, frames);
            Counters::add(&stats.bytes_out, bytes);
        }
        if !self.tail.is_empty() {
            let tail = self.tail.split().freeze();
            self.chunks.push_back(tail);
        }
        std::mem::swap(&mut self.chunks, batch);
        // `batch` was empty; what is now in `self.chunks` is that empty deque. Keep the
        // larger allocation around for the next round.
        if self.chunks.capacity() < self.spare.capacity() {
            std::mem::swap(&mut self.chunks, &mut self.spare);
        }
        self.in_flight += self.queued;
        self.queued = 0;
    }
}

/// What to send as the payload.
pub(crate) enum Body<'a, F> {
    /// Encode in place into the queue.
    Encode(F),
    /// Raw bytes (queued by reference when large).
    Bytes(&'a Bytes),
    /// Raw bytes owned by the sending future (`ask1_packet`), queued as [`Body::Bytes`].
    Owned(Bytes),
}

impl<F> Body<'_, F> {
    /// The raw payload, unless it is encoded in place.
    pub(crate) fn raw(&self) -> Option<&Bytes> {
        match self {
            Body::Encode(_) => None,
            Body::Bytes(b) => Some(b),
            Body::Owned(b) => Some(b),
        }
    }
}

/// Why a send did not happen.
#[derive(Debug)]
pub(crate) enum SendFail {
    /// The link is closed or down.
    Link,
    /// The connection's send side is closed.
    Conn,
    /// The payload exceeds the packet size limit.
    TooBig(usize),
    /// Writing failed with this error (reported to the send that hit it).
    Io(Arc<std::io::Error>),
    /// The connection of a lightweight exchange could not be opened.
    Open(crate::core::OpenError),
}

/// Truncates the queue tail back to a mark if encoding panics, so a half-encoded packet is
/// never written.
pub(crate) struct Rewind<'a> {
    pub(crate) buf: &'a mut BytesMut,
    pub(crate) mark: usize,
    pub(crate) armed: bool,
}

impl Drop for Rewind<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.buf.truncate(self.mark);
        }
    }
}

impl TxQueue {
    /// Refuses further sends and returns the senders waiting for space.
    pub(crate) fn mark_down(&mut self) -> crate::waiters::Wake {
        self.down = true;
        self.space.take()
    }
}
