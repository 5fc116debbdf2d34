//! smux v1 and v2 stream multiplexing, wire-compatible with Go's `github.com/xtaci/smux`
//! (the version Debian's kcptun 20210922 uses), over any tokio byte stream.
//!
//! A [`Session`] runs over one reliable, ordered connection (TCP, a KCP stream, a snappy
//! framed stream …) and carries many [`Stream`]s. The client side opens odd stream ids
//! (3, 5, 7 …), the server side even ones (2, 4 …). The wire format lives in [`frame`],
//! free of I/O so it can be fuzzed on its own.
//!
//! ```no_run
//! # async fn demo(tcp: tokio::net::TcpStream) -> Result<(), nodelink_smux::Error> {
//! use nodelink_smux::{Config, Role, Session};
//! use tokio::io::AsyncWriteExt;
//! let session = Session::start(tcp, Role::Client, Config::default())?;
//! let mut stream = session.open().await?;
//! stream.write_all(b"hello").await.map_err(|e| {
//!     nodelink_smux::Error::new(nodelink_smux::ErrorKind::Io, e.to_string())
//! })?;
//! stream.shutdown().await.ok(); // sends FIN
//! # Ok(()) }
//! ```
//!
//! # Architecture
//!
//! The protocol lives in an I/O-free core (a state machine fed with the bytes read, the
//! application's operations and the current time, which returns frames to write, events
//! and its next deadline); three tasks per session drive it under one mutex. A reader
//! hands it what the connection delivers; a writer takes batches of frames (control
//! frames first, then one data frame per stream in turn, so streams share the connection
//! fairly and a window update never waits behind bulk data) and writes them out; a timer
//! hands it the time when its next deadline comes: a NOP every keepalive interval, and the
//! session's death when nothing at all has been received for the timeout. The reader does
//! stop reading at times, for backpressure (see below); the timeout is suspended while it
//! does, so a paused reader is never mistaken for a silent peer, and it fires only when
//! the reader is waiting for bytes that do not come.
//!
//! Received payloads are copied out of the reader's buffer (small ones are packed together),
//! so the memory a stream's unread data holds stays close to the byte count the buffer
//! bounds below limit, and the reader's buffer is reused rather than kept alive by slices.
//!
//! # Flow control and slow readers
//!
//! A stream whose application does not read must not hold up the other streams of the same
//! connection for long, and memory must stay bounded. The rules:
//!
//! - **v2** uses Go smux's per-stream windows. Each side advertises
//!   [`Config::max_stream_buffer`] in UPD frames, sent on a stream's first read and then
//!   whenever half of that amount has been consumed since the last UPD. A sender keeps the
//!   bytes it has written minus the bytes the peer reported consumed below the peer's
//!   window, assuming 256 KiB until the first UPD arrives (Go smux's initial guess). A
//!   stalled reader thus stalls only its own stream's sender. A peer that overruns the
//!   window (more than `max(max_stream_buffer, 256 KiB)` unread on one stream) breaks the
//!   protocol, and that stream alone is **reset** at once.
//! - **v1** has no flow control on the wire. When one stream's unread data exceeds
//!   [`Config::max_stream_buffer`], the session stops reading the connection
//!   (backpressure, which is what Go smux does when its session buffer runs out), so a
//!   slow reader slows the session to its pace rather than losing data. If that stream's
//!   reader then consumes nothing for [`Config::stall_timeout`] (default 5 s), the stream is
//!   **reset** and reading resumes: other streams are held up for at most that long by a
//!   stalled reader.
//! - **Both versions**: when the unread data of all streams together exceeds
//!   [`Config::max_receive_buffer`], reading pauses the same way; once a stream with unread
//!   data has made no progress for `stall_timeout`, the largest such stream is reset.
//! - **Many sessions**: a server runs one session per connection, and each is bounded as
//!   above, but not all of them together. Give them one [`MemoryBudget`]
//!   ([`Config::memory_budget`]): while the sessions hold more than it together (unread
//!   data and data queued to send), each session holding more than its floor (its share,
//!   and at most 256 KiB) pauses reading the same way, with the same stall verdict, until
//!   its streams catch up or the server is back under budget. Sessions under their floor,
//!   the well-behaved ones, go on reading.
//!
//! A reset drops the stream's buffered data both ways, sends a FIN to the peer, discards
//! later data for the stream, and fails the local reader and writer with
//! [`ErrorKind::StreamReset`]; it is logged (`tracing` warn) and counted in
//! [`SessionStats::streams_reset`]. While reading is paused the keepalive timeout does not
//! fire (as in Go). Choose `max_stream_buffer` larger than the bursts a healthy reader may
//! fall behind by (kcptun's `-streambuf` default is 2 MiB).
//!
//! Peer-opened streams wait in an accept queue of [`Config::accept_backlog`] entries; a SYN
//! beyond it is answered with a FIN and counted in [`SessionStats::syns_refused`]. Each
//! stream buffers at most `max(2 × max_frame_size, 64 KiB)` bytes of unsent data; writes
//! wait beyond that.
//!
//! # Hostile input
//!
//! A wrong version byte, an unknown command, a length on SYN/FIN/NOP, a UPD in v1 or of the
//! wrong size, or a SYN for an id of this side's parity (or 0) kills the session with a
//! [`Protocol`](ErrorKind::Protocol) error (Go smux stops reading on the first two and
//! would misparse the others). Data for a stream that is unknown, closed, reset or already
//! finished is discarded and counted, as Go does. A duplicate SYN is ignored.
//!
//! # Differences from Go smux worth knowing
//!
//! - Go's `Session.Close` is abrupt; here [`Session::close`] (and dropping the last
//!   handle) is graceful: queued data and a FIN per stream go out first, within
//!   [`Config::linger`]. Streams the peer opened before its connection ended can still be
//!   accepted, and read to their end if the peer's FIN arrived.
//! - Go's `Stream.Close` is a full close; here [`Stream`] shutdown is a half close (FIN,
//!   reading continues), which is what a Go peer sees anyway.
//! - In v2 a write blocked on the peer's window does not fail the moment the peer's FIN
//!   arrives, as Go's does: a peer of this crate still reads, and grants window, after its
//!   own FIN. Pending data is given up (the stream is reset) only when no window update
//!   came for [`Config::stall_timeout`] after the FIN, or at once if the stream is dropped.
//! - A stalled stream (one whose reader consumes nothing) never holds the session's reader
//!   back for longer than `stall_timeout`; Go's reader can block for good once its
//!   session buffer is full.

mod config;
mod core;
mod error;
pub mod frame;
mod session;
mod shared;
mod stream;

pub use crate::core::SessionStats;
pub use config::Config;
pub use error::{Error, ErrorKind};
pub use nodelink_driver::{MemoryBudget, Role};
pub use session::Session;
pub use stream::Stream;
