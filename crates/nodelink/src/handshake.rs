//! The version handshake: each side sends its 4-byte big-endian version word and reads the
//! peer's, concurrently.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::HandshakeError;

/// Exchanges version words. Our word is always fully sent before a mismatch is reported,
/// so the peer sees the mismatch rather than a bare close.
pub(crate) async fn exchange_versions<R, W>(
    reader: &mut R,
    writer: &mut W,
    ours: u32,
) -> Result<(), HandshakeError>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let send = async {
        writer.write_all(&ours.to_be_bytes()).await?;
        writer.flush().await
    };
    let mut peer = [0u8; 4];
    let recv = reader.read_exact(&mut peer);
    let (sent, received) = tokio::join!(send, recv);
    match received {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(HandshakeError::PeerClosed)
        }
        Err(e) => return Err(HandshakeError::Io(Arc::new(e))),
    }
    let peer = u32::from_be_bytes(peer);
    if peer != ours {
        return Err(HandshakeError::VersionMismatch { peer, ours });
    }
    sent.map_err(|e| HandshakeError::Io(Arc::new(e)))
}
