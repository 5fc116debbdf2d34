//! What both ends share: building an smux session over a KCP session (with or without
//! snappy), copying a TCP connection to and from an smux stream, and the stream logs.

use std::fmt;
use std::io;
use std::time::Duration;

use nodelink_kcp::KcpStream;
use nodelink_smux::{Config as SmuxConfig, Session};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::SmuxSettings;
use crate::snappy::SnappyStream;
use crate::Error;

/// Copy buffer per direction. smux cuts writes into frames of at most 32 KiB; a buffer of
/// that size lets one read become one full frame (one snappy chunk), which both compresses
/// better and costs fewer headers than kcptun's 4 KiB copies.
const COPY_BUF: usize = 32 * 1024;

/// How long a half-closed side may take to push its FIN when a copy ends with an error.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// smux settings with kcptun's values; everything else keeps smux's defaults.
pub(crate) fn smux_config(s: &SmuxSettings) -> SmuxConfig {
    SmuxConfig {
        version: s.version,
        keep_alive_interval: s.keep_alive_interval,
        max_receive_buffer: s.max_receive_buffer,
        max_stream_buffer: s.max_stream_buffer,
        ..SmuxConfig::default()
    }
}

/// Which smux end to run.
#[derive(Clone, Copy)]
pub(crate) enum End {
    Client,
    Server,
}

/// Runs smux over `kcp`, through snappy framing unless `nocomp` (kcptun's layering: KCP
/// stream, then snappy, then smux).
pub(crate) fn open_session(
    kcp: KcpStream,
    nocomp: bool,
    settings: &SmuxSettings,
    end: End,
) -> Result<Session, Error> {
    let cfg = smux_config(settings);
    let session = match (nocomp, end) {
        (true, End::Client) => Session::client(kcp, cfg)?,
        (true, End::Server) => Session::server(kcp, cfg)?,
        (false, End::Client) => Session::client(SnappyStream::new(kcp), cfg)?,
        (false, End::Server) => Session::server(SnappyStream::new(kcp), cfg)?,
    };
    Ok(session)
}

/// Copies both ways until both directions ended, passing each end of stream on as a
/// half-close: EOF from the TCP side becomes a FIN on the smux stream, and the peer's FIN
/// becomes a TCP write shutdown. Returns the bytes copied `(a to b, b to a)`.
pub(crate) async fn pipe<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    match tokio::io::copy_bidirectional_with_sizes(a, b, COPY_BUF, COPY_BUF).await {
        Ok(n) => Ok(n),
        Err(e) => {
            // One side failed (reset, dead session): end both so the other peer learns.
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, a.shutdown()).await;
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, b.shutdown()).await;
            Err(e)
        }
    }
}

/// The two ends of a forwarded stream, for the "stream opened/closed" logs:
/// `in: <where the data came from> out: <where it goes>(stream id)`.
pub(crate) struct Route {
    pub(crate) inbound: String,
    pub(crate) outbound: String,
    pub(crate) quiet: bool,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "in: {} out: {}", self.inbound, self.outbound)
    }
}

impl Route {
    pub(crate) fn opened(&self) {
        if !self.quiet {
            tracing::info!("stream opened {self}");
        }
    }

    pub(crate) fn closed(&self, result: &io::Result<(u64, u64)>) {
        if self.quiet {
            return;
        }
        match result {
            Ok((up, down)) => {
                tracing::info!("stream closed {self} ({up} bytes in, {down} bytes back)")
            }
            Err(e) => tracing::info!("stream closed {self} ({e})"),
        }
    }
}
