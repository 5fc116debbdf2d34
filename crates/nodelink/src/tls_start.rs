//! Starting a link over TLS once the TCP connection exists: the TLS handshake, then the
//! version handshake inside it, bounded together by [`Config::handshake_timeout`]. Used by
//! `tls.rs` to dial and by the listener (`net.rs`) to accept; the settings themselves are
//! in `tls.rs`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::error::{connect_error, Cause, Error, HandshakeError, Place, Result};
use crate::handle::Link;
use crate::role::Role;

/// Runs the server side of the TLS handshake and then the version handshake on an accepted
/// TCP stream, bounded together by [`Config::handshake_timeout`].
pub(crate) async fn accept_tls(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    config: Config,
) -> Result<Link> {
    let (local, remote) = addresses(&stream)?;
    let timeout = config.handshake_timeout;
    let name = link_name(local, remote);
    let start = async {
        let stream = acceptor
            .accept(stream)
            .await
            .map_err(|e| tls_error(&name, e))?;
        link_over(stream, Role::Server, config, local, remote).await
    };
    bounded(timeout, &name, start).await
}

/// Splits a TLS stream into halves and runs the version handshake over it.
pub(crate) async fn link_over<S>(
    stream: S,
    role: Role,
    config: Config,
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<Link>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    Link::handshake_halves(
        Box::pin(read),
        Box::pin(write),
        role,
        config,
        Some(local),
        Some(remote),
    )
    .await
}

/// Bounds the whole start of a link (TLS plus version handshake) by one timeout. The version
/// handshake has its own timeout of the same length, but it starts later, so this one fires
/// first when the total is exceeded.
pub(crate) async fn bounded(
    timeout: std::time::Duration,
    name: &Arc<str>,
    start: impl std::future::Future<Output = Result<Link>>,
) -> Result<Link> {
    match tokio::time::timeout(timeout, start).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            Cause::Handshake(HandshakeError::Timeout(timeout)),
            Place::link(name),
            "handshake",
        )),
    }
}

pub(crate) fn addresses(stream: &TcpStream) -> Result<(SocketAddr, SocketAddr)> {
    let local = stream.local_addr().map_err(connect_error)?;
    let remote = stream.peer_addr().map_err(connect_error)?;
    Ok((local, remote))
}

/// The same `"<local> - <remote>"` name the link itself uses in its errors.
pub(crate) fn link_name(local: SocketAddr, remote: SocketAddr) -> Arc<str> {
    Arc::from(format!("{local} - {remote}"))
}

pub(crate) fn tls_error(name: &Arc<str>, e: io::Error) -> Error {
    Error::new(
        Cause::Handshake(HandshakeError::Tls(Arc::new(e))),
        Place::link(name),
        "handshake",
    )
}
