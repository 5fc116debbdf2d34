//! TLS links (placeholder, being written).
use tokio::net::TcpStream;
use crate::{Config, Link, Result};
pub(crate) async fn accept_tls(_a: &tokio_rustls::TlsAcceptor, _s: TcpStream, _c: Config) -> Result<Link> {
    unimplemented!()
}
