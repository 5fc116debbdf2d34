//! TLS flags shared by the commands, and dialing / listening with or without TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use nodelink::tls::TlsSettings;
use nodelink::{Config, Link, Listener};

/// How long dialing (TCP connect, TLS and the version handshake) may take in all.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// TLS flags of `serve`: all three files, or none.
#[derive(Debug, Args)]
pub struct ServerTlsArgs {
    /// PEM file of the CA that signs client certificates (enables TLS).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// PEM file of this server's certificate chain.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of this server's private key.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not present a certificate signed by --tls-ca. This is the
    /// default (as NEO); the flag is kept for scripts that pass it.
    #[arg(
        long,
        requires = "tls_ca",
        conflicts_with = "tls_allow_anonymous_clients"
    )]
    pub tls_require_client_cert: bool,
    /// Also serve clients that present no certificate (one they present must still be
    /// signed by --tls-ca). Off by default: anyone could connect.
    #[arg(long, requires = "tls_ca")]
    pub tls_allow_anonymous_clients: bool,
}

impl ServerTlsArgs {
    /// Loads the TLS settings, if TLS was asked for.
    pub fn settings(&self) -> anyhow::Result<Option<TlsSettings>> {
        load(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            !self.tls_allow_anonymous_clients,
        )
    }
}

/// TLS flags of `ping`: all three files, or none.
#[derive(Debug, Args)]
pub struct ClientTlsArgs {
    /// PEM file of the CA that signs the server's certificate (enables TLS).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// PEM file of this client's certificate chain.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of this client's private key.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// Loads the TLS settings, if TLS was asked for.
    pub fn settings(&self) -> anyhow::Result<Option<TlsSettings>> {
        load(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            false,
        )
    }
}

fn load(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
    require_client_cert: bool,
) -> anyhow::Result<Option<TlsSettings>> {
    let (Some(ca), Some(cert), Some(key)) = (ca, cert, key) else {
        // clap makes sure the three come together.
        return Ok(None);
    };
    let settings = TlsSettings::from_pem_files(ca, cert, key, require_client_cert)
        .context("cannot set up TLS")?;
    Ok(Some(settings))
}

/// Dials `addr`, over TLS when `tls` is given, within [`DIAL_TIMEOUT`].
pub async fn connect(
    addr: &str,
    config: Config,
    tls: Option<&TlsSettings>,
) -> anyhow::Result<Link> {
    let what = if tls.is_some() { "TLS " } else { "" };
    let dialing = async {
        match tls {
            Some(tls) => nodelink::tls::connect_tls(addr, tls, config).await,
            None => nodelink::connect(addr, config).await,
        }
    };
    match tokio::time::timeout(DIAL_TIMEOUT, dialing).await {
        Ok(Ok(link)) => Ok(link),
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot {what}connect to {addr}")),
        Err(_) => anyhow::bail!("cannot {what}connect to {addr}: timed out after {DIAL_TIMEOUT:?}"),
    }
}

/// Binds a listener on `addr`, accepting TLS links when `tls` is given.
pub async fn bind(
    addr: &str,
    config: Config,
    tls: Option<&TlsSettings>,
) -> anyhow::Result<Listener> {
    let listener = match tls {
        Some(tls) => nodelink::tls::bind_tls(addr, tls, config).await,
        None => nodelink::bind(addr, config).await,
    };
    listener.with_context(|| format!("cannot listen on {addr}"))
}
