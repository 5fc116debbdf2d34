//! Socket creation and options.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};

use crate::config::Config;

/// Applies the per-socket options of `config` to a connected socket.
pub(crate) fn configure(stream: &TcpStream, config: &Config) {
    if let Err(e) = stream.set_nodelay(config.no_delay) {
        tracing::debug!(error = &e as &dyn std::error::Error, "TCP_NODELAY");
    }
    let sock = socket2::SockRef::from(stream);
    if config.keep_alive {
        if let Err(e) = sock.set_keepalive(true) {
            tracing::debug!(error = &e as &dyn std::error::Error, "SO_KEEPALIVE");
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    if let Some(t) = config.user_timeout {
        if let Err(e) = sock.set_tcp_user_timeout(Some(t)) {
            tracing::debug!(error = &e as &dyn std::error::Error, "TCP_USER_TIMEOUT");
        }
    }
}

/// How an outgoing TCP connect failed.
pub(crate) enum DialError {
    /// No socket could be created.
    Socket(io::Error),
    /// The name did not resolve or nobody accepted.
    Unreachable(String),
}

/// Resolves `host:port` and connects to the first address that accepts.
pub(crate) async fn dial(host: &str, port: u16, config: &Config) -> Result<TcpStream, DialError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| DialError::Unreachable(format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = format!("{host} resolved to no address");
    for addr in addrs {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(DialError::Socket)?;
        if config.reuse_address {
            let _ = socket.set_reuseaddr(true);
        }
        match socket.connect(addr).await {
            Ok(stream) => {
                configure(&stream, config);
                return Ok(stream);
            }
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    Err(DialError::Unreachable(last))
}
