//! Snappy framed compression around a byte stream, as kcptun wraps its KCP stream unless
//! `-nocomp` is given (Go's `snappy.NewBufferedWriter` flushed after every write, and
//! `snappy.NewReader`).
//!
//! [`SnappyStream`] compresses what is written to it and decompresses what is read from
//! it. Each `poll_write` call turns its data (up to 64 KiB per call) into one chunk at
//! once, as kcptun's flush-after-every-write does, so no data lingers in a compression
//! buffer waiting for more; the encoded bytes are pushed to the inner stream
//! opportunistically and completely on `poll_flush`/`poll_shutdown`. The wire format and
//! the sans-IO encoder/decoder are in [`codec`].

pub mod codec;

#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use codec::{FrameDecoder, FrameEncoder, SnappyError, MAX_BLOCK_SIZE};

/// Encoded bytes kept before `poll_write` waits for the inner stream to take some.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Bytes requested from the inner stream per read.
const READ_CHUNK: usize = 64 * 1024;

/// A byte stream whose both directions go through the snappy framing format.
#[derive(Debug)]
pub struct SnappyStream<S> {
    inner: S,
    encoder: FrameEncoder,
    decoder: FrameDecoder,
    /// Encoded chunks not yet accepted by `inner`.
    pending_out: BytesMut,
    /// Raw bytes read from `inner`, not yet decoded.
    raw_in: BytesMut,
    /// Decoded data not yet handed to the reader.
    decoded: Bytes,
    read_error: Option<SnappyError>,
    read_eof: bool,
}

impl<S> SnappyStream<S> {
    /// Wraps `inner`. Nothing is sent until the first write (the stream identifier goes out
    /// with the first chunk).
    pub fn new(inner: S) -> SnappyStream<S> {
        SnappyStream {
            inner,
            encoder: FrameEncoder::new(),
            decoder: FrameDecoder::new(),
            pending_out: BytesMut::new(),
            raw_in: BytesMut::new(),
            decoded: Bytes::new(),
            read_error: None,
            read_eof: false,
        }
    }

    /// The wrapped stream. Buffered data in either direction is lost.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A reference to the wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> SnappyStream<S> {
    /// Writes pending encoded bytes to the inner stream until none are left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending_out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending_out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SnappyStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.decoded.is_empty() {
                let n = this.decoded.len().min(buf.remaining());
                buf.put_slice(&this.decoded[..n]);
                this.decoded.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(err) = &this.read_error {
                return Poll::Ready(Err(err.clone().into()));
            }
            match this.decoder.decode(&mut this.raw_in) {
                Ok(Some(data)) => {
                    this.decoded = data;
                    continue;
                }
                Ok(None) => {}
                Err(err) => {
                    this.read_error = Some(err.clone());
                    return Poll::Ready(Err(err.into()));
                }
            }
            if this.read_eof {
                if this.raw_in.is_empty() && !this.decoder.mid_chunk() {
                    return Poll::Ready(Ok(()));
                }
                this.read_error = Some(SnappyError::Truncated);
                continue;
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Read straight into the tail of `raw_in` (zero-filled first: no unsafe code).
            let start = this.raw_in.len();
            this.raw_in.resize(start + READ_CHUNK, 0);
            let mut tail = ReadBuf::new(&mut this.raw_in[start..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut tail);
            let n = tail.filled().len();
            this.raw_in.truncate(start + n);
            ready!(polled)?;
            if n == 0 {
                this.read_eof = true;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SnappyStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        while this.pending_out.len() >= WRITE_HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        let n = this.encoder.encode_chunk(
            &data[..data.len().min(MAX_BLOCK_SIZE)],
            &mut this.pending_out,
        );
        // Push the chunk out now if the inner stream takes it; if it is busy, the bytes
        // stay queued for the next write or flush (a spurious wake-up at most).
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
