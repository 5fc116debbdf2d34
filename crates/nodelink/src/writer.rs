//! The sending half of a link.
//!
//! Senders encode their packet straight into a shared queue (a `BytesMut` tail for small
//! packets, zero-copy `Bytes` chunks for large payloads). Then, if no one is writing, the
//! sender takes the socket and writes the queue itself: no task hop on the request path,
//! and whatever other tasks queued meanwhile goes out in the same vectored write.
//!
//! Cancellation: the bytes being written live in a [`Flush`] guard, advanced as the socket
//! accepts them. If the sending future is dropped mid-write, the guard hands the unwritten
//! rest back to the front of the queue and wakes the background writer task, which
//! finishes it. Framing can therefore never be broken by a cancelled send.
//!
//! The background writer task also sends what the reader task queues (automatic replies,
//! flow-control frames): the reader must never block on the socket's write side, or a peer
//! that does not read could stop us from reading.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::core::{cost_of, ConnKey, Reserve};
use crate::frame::{Header, HEADER_LEN, MAX_PAYLOAD_LEN};
use crate::inner::{LinkEnd, LinkInner};
use crate::stats::Counters;
use crate::txqueue::{Body, BoxWrite, Rewind, SendFail, TxQueue, MAX_OWED_CREDITS};

/// Payloads at least this large are queued by reference instead of copied.
const ZERO_COPY_MIN: usize = 16 << 10;
/// Most slices handed to one vectored write.
const MAX_IOSLICES: usize = 64;
/// A caller that found the socket free writes at most this many batches before handing the
/// rest to the writer task, so one unlucky caller does not write for everybody forever.
const CALLER_ROUNDS: usize = 4;

/// Whether an encoded packet may be queued (see [`LinkInner::poll_enqueue_as`]).
pub(crate) enum Admit {
    /// Yes, on this id.
    Go(u32),
    /// Not yet: the waker is registered where the answer will come from.
    Wait,
    /// No.
    Fail(SendFail),
}

impl LinkInner {
    /// Queues one packet, waiting for queue space and (on a connection) for flow-control
    /// credit. Does not write.
    fn poll_enqueue<F: Fn(&mut BytesMut)>(
        &self,
        cx: &mut Context<'_>,
        conn: Option<ConnKey>,
        id: u32,
        code: u16,
        body: &Body<'_, F>,
    ) -> Poll<Result<(), SendFail>> {
        self.poll_enqueue_as(cx, code, body, |cx, payload_len| match conn {
            None => Admit::Go(id),
            Some(key) => {
                // Lock order: the send queue, then the core.
                let mut s = self.shared.lock();
                match s.core.reserve(key, cost_of(payload_len)) {
                    Reserve::Ok => Admit::Go(id),
                    Reserve::Closed => Admit::Fail(SendFail::Conn),
                    Reserve::Wait => {
                        if let Some(parked) = s.core.ext(key) {
                            parked.tx.register(cx.waker());
                        }
                        Admit::Wait
                    }
                }
            }
        })
    }

    /// Queues one packet once `admit` lets it go (it runs under the send queue's lock,
    /// with the payload's length, and names the id the packet goes on). Does not write.
    pub(crate) fn poll_enqueue_as<F: Fn(&mut BytesMut)>(
        &self,
        cx: &mut Context<'_>,
        code: u16,
        body: &Body<'_, F>,
        admit: impl FnOnce(&mut Context<'_>, usize) -> Admit,
    ) -> Poll<Result<(), SendFail>> {
        let mut q = self.tx.lock();
        if q.down {
            return Poll::Ready(Err(SendFail::Link));
        }
        // Something is held (so someone is writing, and will wake us) and the limit is
        // reached: wait. With nothing held, one packet of any size goes.
        if q.held() > 0 && q.held() >= self.send_limit() {
            q.space.register(cx.waker());
            return Poll::Pending;
        }
        let q = &mut *q;
        let mark = q.start_packet();
        let payload_len = match body {
            Body::Encode(encode) => {
                let mut rewind = Rewind {
                    buf: &mut q.tail,
                    mark,
                    armed: true,
                };
                encode(rewind.buf);
                rewind.armed = false;
                rewind.buf.len() - mark - HEADER_LEN
            }
            Body::Bytes(b) => b.len(),
            Body::Owned(b) => b.len(),
        };
        if payload_len > MAX_PAYLOAD_LEN {
            q.tail.truncate(mark);
            return Poll::Ready(Err(SendFail::TooBig(payload_len)));
        }
        let id = match admit(cx, payload_len) {
            Admit::Go(id) => id,
            Admit::Fail(f) => {
                q.tail.truncate(mark);
                return Poll::Ready(Err(f));
            }
            Admit::Wait => {
                q.tail.truncate(mark);
                return Poll::Pending;
            }
        };
        let header = Header {
            conn_id: id,
            code,
            len: payload_len as u32,
        };
        q.tail[mark..mark + HEADER_LEN].copy_from_slice(&header.to_bytes());
        if let Some(b) = body.raw() {
            if b.len() >= ZERO_COPY_MIN {
                let head = q.tail.split().freeze();
                q.chunks.push_back(head);
                q.chunks.push_back(b.clone());
            } else {
                q.tail.put_slice(b);
            }
        }
        let wire = HEADER_LEN + payload_len;
        q.queued += wire;
        self.report_tx(q);
        Counters::add(&self.stats.packets_out, 1);
        Counters::add(&self.stats.bytes_out, wire as u64);
        tracing::trace!(link = %self.name, conn = id, code, len = payload_len, "send");
        Poll::Ready(Ok(()))
    }

    /// Most bytes the send side may hold: the send buffer, or less while the listener's
    /// memory budget is exceeded (`budget.rs`).
    fn send_limit(&self) -> usize {
        match &self.budget {
            Some(member) => member.send_limit(self.config.send_buffer),
            None => self.config.send_buffer,
        }
    }

    /// Tells the listener's budget what the send side holds now.
    pub(crate) fn report_tx(&self, q: &TxQueue) {
        if let Some(member) = &self.budget {
            member.report_tx(q.held());
        }
    }

    /// Sends one packet: queue it, then write the queue if the socket is free.
    pub(crate) async fn send_frame<F: Fn(&mut BytesMut)>(
        &self,
        conn: Option<ConnKey>,
        id: u32,
        code: u16,
        body: Body<'_, F>,
    ) -> Result<(), SendFail> {
        poll_fn(|cx| self.poll_enqueue(cx, conn, id, code, &body)).await?;
        self.flush(CALLER_ROUNDS).await
    }

    /// Sends the answer to a request taken with recv1: queued, then written at once if the
    /// socket is free ([`Self::write_now`]; what the socket does not take goes to the
    /// writer task, the asker waits for it anyway). When this side has more requests
    /// waiting to be served, the write is left to the writer task instead: it runs once
    /// the serving task yields and then sends every answer queued by then in one system
    /// call, instead of one call each.
    pub(crate) fn poll_answer<F: Fn(&mut BytesMut)>(
        &self,
        cx: &mut Context<'_>,
        id: u32,
        code: u16,
        body: &Body<'_, F>,
    ) -> Poll<Result<(), SendFail>> {
        std::task::ready!(self.poll_enqueue(cx, None, id, code, body))?;
        if self.backlog_len.load(Ordering::Relaxed) == 0 {
            self.write_now(cx)?;
        } else {
            self.kick_writer();
        }
        Poll::Ready(Ok(()))
    }

    /// Queues a packet from a context that must not wait (the reader task, a receive
    /// returning credit) and makes sure someone writes it. Returns false if it was dropped
    /// because the peer is not reading.
    pub(crate) fn enqueue_nowait(
        &self,
        id: u32,
        code: u16,
        encode: impl FnOnce(&mut BytesMut),
    ) -> bool {
        self.enqueue_nowait_capped(id, code, encode, true)
    }

    /// [`Self::enqueue_nowait`]; without `capped`, queued whatever is queued already (for
    /// the one BYE a closing link sends: a few bytes, once).
    pub(crate) fn enqueue_nowait_capped(
        &self,
        id: u32,
        code: u16,
        encode: impl FnOnce(&mut BytesMut),
        capped: bool,
    ) -> bool {
        let mut q = self.tx.lock();
        if q.down {
            return false;
        }
        // Replies to a peer that does not read what we send must not grow memory: past
        // twice the send buffer they are dropped (and counted).
        if capped && q.held() >= 2 * self.send_limit() {
            Counters::add(&self.stats.replies_dropped, 1);
            return false;
        }
        let mark = q.start_packet();
        encode(&mut q.tail);
        let payload_len = q.tail.len() - mark - HEADER_LEN;
        let header = Header {
            conn_id: id,
            code,
            len: payload_len as u32,
        };
        q.tail[mark..mark + HEADER_LEN].copy_from_slice(&header.to_bytes());
        q.queued += HEADER_LEN + payload_len;
        self.report_tx(&q);
        let idle = q.io.is_some();
        drop(q);
        Counters::add(&self.stats.packets_out, 1);
        Counters::add(&self.stats.bytes_out, (HEADER_LEN + payload_len) as u64);
        tracing::trace!(link = %self.name, conn = id, code, len = payload_len, "send");
        if idle {
            self.writer_kick.notify_one();
        }
        true
    }

    /// Owes `bytes` of connection `id`'s window to the peer; it goes out with the next write.
    /// With `kick`, makes sure a write happens; without, the caller is about to send (and
    /// flush) a packet itself.
    pub(crate) fn owe_credit(&self, id: u32, bytes: u32, kick: bool) {
        let mut q = self.tx.lock();
        if q.down {
            return;
        }
        let owed_ids = q.credits.len();
        match q.credits.entry(id) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                *e.get_mut() = e.get().saturating_add(bytes)
            }
            std::collections::hash_map::Entry::Vacant(e) if owed_ids < MAX_OWED_CREDITS => {
                e.insert(bytes);
            }
            std::collections::hash_map::Entry::Vacant(_) => {
                Counters::add(&self.stats.replies_dropped, 1);
                return;
            }
        }
        let idle = q.io.is_some();
        drop(q);
        if idle && kick {
            self.writer_kick.notify_one();
        }
    }

    /// Takes the socket half and everything queued, unless there is nothing to do or
    /// someone else is writing (and will pick our bytes up). Whoever takes the queue has
    /// looked at it: a kick of the writer is due again for what comes next.
    fn take_job(&self) -> Option<(BoxWrite, VecDeque<Bytes>)> {
        // Cleared before the queue is looked at. A kick that still finds the flag set comes
        // before this store in the flag's order, and its data was queued (under the queue's
        // lock) before that kick: the look below sees it. A later kick finds the flag
        // clear and wakes the writer again.
        self.kicked.store(false, Ordering::SeqCst);
        let mut q = self.tx.lock();
        if !q.has_data() {
            return None;
        }
        let io = q.io.take()?;
        let mut batch = std::mem::take(&mut q.spare);
        q.take_into(&mut batch, &self.stats);
        let wake = q.space.take();
        drop(q);
        wake.wake();
        Some((io, batch))
    }

    /// Writes the queue if nobody else is writing. `rounds` bounds how many refills this
    /// caller performs before leaving the rest to the writer task.
    pub(crate) async fn flush(&self, rounds: usize) -> Result<(), SendFail> {
        let mut job = {
            let Some((io, batch)) = self.take_job() else {
                return Ok(());
            };
            Flush {
                link: self,
                io: Some(io),
                batch,
            }
        };
        let mut done = 0;
        loop {
            let written = tokio::select! {
                biased;
                _ = self.stop_writing.cancelled() => Err(None),
                r = job.write_batch() => r.map_err(Some),
            };
            if let Err(err) = written {
                // Drop the socket half; the guard sees it gone and does not hand back.
                job.io = None;
                if let Some(err) = err {
                    let err = Arc::new(err);
                    self.shutdown(LinkEnd::Failed(err.clone()));
                    return Err(SendFail::Io(err));
                }
                return Err(SendFail::Link);
            }
            done += 1;
            if !job.refill(done < rounds) {
                return Ok(());
            }
        }
    }

    /// Leaves the write of what is queued to the writer task. Kicked once, it looks at the
    /// queue once: a burst of requests (or answers) that each ask for a write costs one
    /// wake-up of the writer, not one each.
    pub(crate) fn kick_writer(&self) {
        if !self.kicked.swap(true, Ordering::SeqCst) {
            self.writer_kick.notify_one();
        }
    }

    /// Writes the queue at once if nobody is writing, without waiting for the socket: what
    /// it does not take now goes back in front of the queue for the writer task. For
    /// lightweight exchanges, whose callers wait for an answer anyway: no future to hold
    /// across the write, and the common case (the socket takes it all) costs two locks of
    /// the send queue. An error ends the link and is returned.
    pub(crate) fn write_now(&self, cx: &mut Context<'_>) -> Result<(), SendFail> {
        let Some((mut io, mut batch)) = self.take_job() else {
            return Ok(());
        };
        let written = match poll_write_all(io.as_mut(), &mut batch, cx) {
            Poll::Ready(Ok(())) => io.as_mut().poll_flush(cx),
            other => other,
        };
        let flushed = match written {
            Poll::Ready(Err(e)) => {
                // The socket half is dropped with the link; nobody writes again.
                drop(io);
                let err = Arc::new(e);
                self.shutdown(LinkEnd::Failed(err.clone()));
                return Err(SendFail::Io(err));
            }
            Poll::Ready(Ok(())) => true,
            // Not all written, or written but not flushed (TLS holding records back):
            // the writer task finishes either.
            Poll::Pending => false,
        };
        self.hand_back(io, &mut batch, flushed);
        Ok(())
    }

    /// Gives the socket half back after a write, with what it did not take of `batch` in
    /// front of the queue (in order), and wakes the writer task if anything is left,
    /// including a flush the write did not see through (`flushed` false).
    fn hand_back(&self, io: BoxWrite, batch: &mut VecDeque<Bytes>, flushed: bool) {
        let mut q = self.tx.lock();
        // A completed flush flushed everything the half held, older bytes included.
        q.unflushed = !flushed;
        q.queued += batch.iter().map(Bytes::len).sum::<usize>();
        q.in_flight = 0;
        self.report_tx(&q);
        while let Some(chunk) = batch.pop_back() {
            q.chunks.push_front(chunk);
        }
        if !self.stop_writing.is_cancelled() {
            q.io = Some(io);
        }
        if q.spare.capacity() < batch.capacity() {
            q.spare = std::mem::take(batch);
        }
        let wake = q.space.take();
        let leftover = q.has_data() || q.down;
        drop(q);
        wake.wake();
        if leftover {
            self.writer_kick.notify_one();
        }
    }

    /// The background writer: flushes what was handed to it, and on a graceful close sends
    /// what is left (bounded by the linger time) before shutting the write side down.
    pub(crate) async fn writer_task(self: Arc<Self>) {
        // Registered once for the task's life, not once per round (a fired token stays
        // ready: polling it again returns at once).
        let stop = self.stop_writing.cancelled();
        let closing = self.closing.cancelled();
        tokio::pin!(stop, closing);
        // Batching on a multi-thread runtime. A task that kicks the writer (an answer or a
        // request queued while more are on their way, see `kick_writer`) puts it first in
        // line on its worker, so the writer would take the queue right after that one task,
        // with the others still to come. A kicked writer therefore yields once: tokio then
        // runs it only when that worker has run the tasks already queued there (or polls
        // its driver), and one write carries what they queued (docs/PERFORMANCE.md, "The
        // writer waits one turn"). Other wake-ups (replies of the reader, credit owed, the
        // rest of a partial write) are written without the wait. On a current-thread
        // runtime a woken writer already runs after the queued tasks.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = self.writer_kick.notified() => {}
            }
            if multi_thread && self.kicked.load(Ordering::Relaxed) {
                tokio::task::yield_now().await;
            }
            // A flush to a peer that does not read waits as long as the link is open; once
            // it is closed, only the linger is left (flushes are cancel-safe).
            tokio::select! {
                biased;
                _ = &mut closing => {}
                _ = self.flush(usize::MAX) => {}
            }
            if self.tx.lock().down {
                if self.stop_writing.is_cancelled() {
                    // The link failed (possibly while the flush above ran, which then let
                    // the socket half go): nothing is left to drain.
                    break;
                }
                let linger = self.config.close_linger;
                let _ = tokio::time::timeout(linger, self.drain_and_shutdown()).await;
                break;
            }
        }
        self.stop_writing.cancel();
        let io = self.tx.lock().io.take();
        drop(io);
    }

    /// Waits until everything queued is written, then shuts the write side down cleanly
    /// (FIN for TCP, close_notify for TLS).
    async fn drain_and_shutdown(&self) {
        loop {
            if self.flush(usize::MAX).await.is_err() {
                return;
            }
            let io = {
                let mut q = self.tx.lock();
                if q.has_data() {
                    None
                } else {
                    q.io.take()
                }
            };
            if let Some(mut io) = io {
                let _ = io.shutdown().await;
                return;
            }
            // A caller is still writing; it kicks us when it hands the socket back, unless
            // the link fails meanwhile (then the half is dropped, not handed back).
            tokio::select! {
                _ = self.writer_kick.notified() => {}
                _ = self.stop_writing.cancelled() => return,
            }
        }
    }
}

/// A write in progress: owns the socket half and the unwritten bytes until they are out.
struct Flush<'a> {
    link: &'a LinkInner,
    io: Option<BoxWrite>,
    batch: VecDeque<Bytes>,
}

impl Flush<'_> {
    /// Writes the whole batch; progress is kept in `self.batch`, so dropping this future
    /// part-way loses nothing.
    async fn write_batch(&mut self) -> io::Result<()> {
        let Flush { io, batch, .. } = self;
        let io = io.as_mut().expect("flush job owns the socket");
        poll_fn(|cx| poll_write_all(io.as_mut(), batch, cx)).await?;
        io.flush().await
    }

    /// Takes more queued bytes (when `again`), or hands the socket back. Returns whether
    /// there is more to write.
    fn refill(&mut self, again: bool) -> bool {
        let mut q = self.link.tx.lock();
        // The batch is written and flushed: its bytes are no longer held.
        q.in_flight = 0;
        q.unflushed = false;
        self.link.report_tx(&q);
        if again && q.has_data() && !q.down {
            q.take_into(&mut self.batch, &self.link.stats);
            let wake = q.space.take();
            drop(q);
            wake.wake();
            return true;
        }
        let wake = q.space.take();
        q.io = self.io.take();
        if self.link.stop_writing.is_cancelled() {
            // The writer task has exited: nobody would ever write or close this half.
            q.io = None;
        }
        q.spare = std::mem::take(&mut self.batch);
        let leftover = q.has_data() || q.down;
        drop(q);
        wake.wake();
        if leftover {
            self.link.writer_kick.notify_one();
        }
        false
    }
}

impl Drop for Flush<'_> {
    fn drop(&mut self) {
        // Only reached with the socket still held if the sending future was cancelled
        // mid-write: put the unwritten bytes back in front and let the writer finish them.
        let Some(io) = self.io.take() else { return };
        if self.link.stop_writing.is_cancelled() {
            // The writer task has exited; dropping the half closes our side of the stream.
            return;
        }
        // Cancelled mid-write or mid-flush: the writer task writes the rest and flushes.
        self.link.hand_back(io, &mut self.batch, false);
    }
}

fn poll_write_all(
    mut io: Pin<&mut (dyn AsyncWrite + Send)>,
    batch: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !batch.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOSLICES];
        let mut n = 0;
        for chunk in batch.iter().take(MAX_IOSLICES) {
            slices[n] = IoSlice::new(chunk);
            n += 1;
        }
        let written = match io.as_mut().poll_write_vectored(cx, &slices[..n]) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket accepted no bytes",
                )))
            }
            Poll::Ready(Ok(k)) => k,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        advance(batch, written);
    }
    Poll::Ready(Ok(()))
}

fn advance(batch: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let front = batch.front_mut().expect("wrote more than queued");
        if front.len() <= n {
            n -= front.len();
            batch.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}
