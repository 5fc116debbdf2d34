//! Links over TLS, the way NEO secures its clusters.
//!
//! A NEO cluster that uses TLS gives every node three PEM files: the cluster's **CA
//! certificate**, the node's own **certificate** (signed by that CA) and the node's
//! **private key**. Every node then trusts exactly the nodes whose certificate was signed by
//! the shared CA, in both directions:
//!
//! * the dialing side checks that the listener's certificate chains to the CA;
//! * the listening side checks the dialer's certificate the same way, and can refuse
//!   dialers that present none ([`TlsSettings::from_pem`]'s `require_client_cert`).
//!
//! Host names are **not** checked: nodes are addressed by IP and port, and a certificate
//! signed by the cluster CA is what makes a peer legitimate, not the name written in it.
//! Everything else is: an unknown issuer, an expired certificate or a bad signature fails the
//! TLS handshake.
//!
//! ## How a TLS link starts
//!
//! 1. TCP connect (with `TCP_NODELAY`);
//! 2. the TLS handshake (TLS 1.2 or 1.3), certificates verified as above;
//! 3. NEO's 4-byte version handshake, sent *inside* TLS;
//! 4. packets, also inside TLS.
//!
//! Steps 2 and 3 together are bounded by [`Config::handshake_timeout`]. A TLS failure is
//! reported as [`HandshakeError::Tls`](crate::HandshakeError::Tls), a peer that stays silent as
//! [`HandshakeError::Timeout`](crate::HandshakeError::Timeout).
//!
//! With TLS 1.3 the dialer finishes its part of the TLS handshake before the listener has
//! looked at the dialer's certificate, so a listener that rejects the certificate is seen by
//! the dialer during step 3: the error is then a [`HandshakeError::Io`](crate::HandshakeError::Io) (the listener's TLS
//! alert) or [`HandshakeError::PeerClosed`](crate::HandshakeError::PeerClosed) rather than [`HandshakeError::Tls`](crate::HandshakeError::Tls).
//!
//! ## Choosing the settings
//!
//! * [`TlsSettings::from_pem_files`] / [`TlsSettings::from_pem`]: NEO's behaviour, from the
//!   three PEM inputs. The same settings serve [`connect_tls`] and [`bind_tls`].
//! * [`TlsSettings::from_configs`]: bring your own [`rustls`] configurations (other
//!   verification rules, session resumption, key logging, ...).
//!
//! Cryptography comes from rustls' `ring` provider, selected explicitly, so no process-wide
//! default provider has to be installed.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio::net::ToSocketAddrs;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::Config;
use crate::error::{Cause, Error, Place, Result};
use crate::handle::Link;
use crate::net::{tcp_bind, tcp_connect, Acceptor, Listener};
use crate::role::Role;
use crate::tls_start::{addresses, bounded, link_name, link_over, tls_error};

/// The TLS side of a node: how it proves who it is and which peers it trusts.
///
/// One value holds both the dialing ([`rustls::ClientConfig`]) and the listening
/// ([`rustls::ServerConfig`]) configuration, so a node that both dials and listens (every NEO
/// node does) builds it once. Cloning is cheap.
///
/// ```no_run
/// # async fn demo() -> nodelink::Result<()> {
/// use nodelink::tls::{connect_tls, bind_tls, TlsSettings};
/// use nodelink::{Config, Ping, Pong};
///
/// // The cluster's CA, this node's certificate and key; dialers must present a certificate.
/// let tls = TlsSettings::from_pem_files("ca.crt", "node.crt", "node.key", true)?;
///
/// let mut listener = bind_tls("0.0.0.0:5551", &tls, Config::default()).await?;
/// tokio::spawn(async move {
///     while let Ok(link) = listener.accept().await {
///         tokio::spawn(async move {
///             while let Ok(request) = link.recv1().await {
///                 let _ = request.reply(&Pong).await;
///             }
///         });
///     }
/// });
///
/// let link = connect_tls("10.0.0.2:5551", &tls, Config::default()).await?;
/// let _pong: Pong = link.ask1(&Ping).await?;
/// link.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsSettings {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("client", &self.client)
            .field("server", &self.server)
            .finish()
    }
}

impl TlsSettings {
    /// Builds NEO-style settings from PEM text:
    ///
    /// * `ca_pem`: the certificate(s) of the cluster's CA; peers must chain to one of them;
    /// * `cert_pem`: this node's certificate, optionally followed by intermediates;
    /// * `key_pem`: this node's private key (PKCS#8, PKCS#1/RSA or SEC1/EC);
    /// * `require_client_cert`: when listening, refuse dialers without a valid certificate.
    ///   When `false`, a dialer may present no certificate, but one it presents must still
    ///   be valid.
    ///
    /// The peer's host name is never checked (see the [module docs](self)). Both TLS 1.2
    /// and TLS 1.3 are allowed.
    ///
    /// Fails with [`ErrorKind::Connect`](crate::ErrorKind::Connect) (an [`std::io::ErrorKind::InvalidInput`] error that says
    /// what is wrong) when the input has no certificate or no key, the key does not match
    /// the certificate, or rustls refuses the material.
    pub fn from_pem(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
        require_client_cert: bool,
    ) -> Result<TlsSettings> {
        let ca = read_certs(ca_pem, "CA")?;
        let chain = read_certs(cert_pem, "certificate")?;
        let key = read_key(key_pem)?;

        let mut roots = RootCertStore::empty();
        for (i, cert) in ca.into_iter().enumerate() {
            roots
                .add(cert)
                .map_err(|e| config_error(format!("CA certificate #{}: {e}", i + 1)))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| {
                    config_error(format!("building the server certificate verifier: {e}"))
                })?;
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(format!("TLS protocol versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CaOnlyVerifier {
                inner: server_verifier,
            }))
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| config_error(format!("certificate and key: {e}")))?;

        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        let client_verifier = if require_client_cert {
            client_verifier
        } else {
            client_verifier.allow_unauthenticated()
        };
        let client_verifier = client_verifier
            .build()
            .map_err(|e| config_error(format!("building the client certificate verifier: {e}")))?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(format!("TLS protocol versions: {e}")))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain, key)
            .map_err(|e| config_error(format!("certificate and key: {e}")))?;

        Ok(TlsSettings {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// Like [`from_pem`](Self::from_pem), reading the three PEM files first.
    ///
    /// A file that cannot be read fails with [`ErrorKind::Connect`](crate::ErrorKind::Connect), naming the file.
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        require_client_cert: bool,
    ) -> Result<TlsSettings> {
        let ca = read_file(ca.as_ref(), "CA")?;
        let cert = read_file(cert.as_ref(), "certificate")?;
        let key = read_file(key.as_ref(), "key")?;
        Self::from_pem(&ca, &cert, &key, require_client_cert)
    }

    /// Uses rustls configurations built by the caller, for anything
    /// [`from_pem`](Self::from_pem) does not cover.
    ///
    /// `client` is used by [`connect_tls`], `server` by [`bind_tls`]. The caller chooses the
    /// verification rules; note that [`connect_tls`] passes the peer's IP address as the server
    /// name, so a standard rustls verifier requires an IP address SAN in the listener's
    /// certificate.
    pub fn from_configs(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> TlsSettings {
        TlsSettings { client, server }
    }

    /// The configuration used when dialing.
    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.client
    }

    /// The configuration used when listening.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.server
    }
}

/// Connects over TCP, runs the TLS handshake and then the version handshake inside TLS, and
/// returns the link in the client role.
///
/// The TLS and version handshakes together are bounded by [`Config::handshake_timeout`].
/// The server name given to TLS is the peer's IP address; it is not checked against the
/// certificate when the settings come from [`TlsSettings::from_pem`].
///
/// ```no_run
/// # async fn demo(tls: nodelink::tls::TlsSettings) -> nodelink::Result<()> {
/// let link = nodelink::tls::connect_tls("127.0.0.1:5551", &tls, nodelink::Config::default()).await?;
/// # Ok(()) }
/// ```
pub async fn connect_tls(
    addr: impl ToSocketAddrs,
    tls: &TlsSettings,
    config: Config,
) -> Result<Link> {
    let stream = tcp_connect(addr, &config).await?;
    let (local, remote) = addresses(&stream)?;
    let server_name = ServerName::IpAddress(remote.ip().into());
    let connector = TlsConnector::from(tls.client.clone());
    let timeout = config.handshake_timeout;
    let name = link_name(local, remote);
    let start = async {
        let stream = connector
            .connect(server_name, stream)
            .await
            .map_err(|e| tls_error(&name, e))?;
        link_over(stream, Role::Client, config, local, remote).await
    };
    bounded(timeout, &name, start).await
}

/// Binds a TCP listener whose [`Listener::accept`] returns links that completed the TLS
/// handshake and then the version handshake inside TLS.
///
/// Dialers that fail either handshake (bad certificate, plain TCP, wrong version, too slow)
/// are logged and skipped, and counted in [`Listener::failed_handshakes`].
pub async fn bind_tls(
    addr: impl ToSocketAddrs,
    tls: &TlsSettings,
    config: Config,
) -> Result<Listener> {
    let tcp = tcp_bind(addr).await?;
    let acceptor = TlsAcceptor::from(tls.server.clone());
    Listener::new(tcp, config, Acceptor::Tls(acceptor))
}

/// A configuration mistake, said in `message` (an `InvalidInput` error as an `io::Error`).
fn config_error(message: String) -> Error {
    Error::new(
        Cause::Setup {
            what: format!("tls settings: {message}"),
            cause: None,
        },
        Place::link(&Arc::from("tls")),
        "configure",
    )
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::new(
            Cause::Setup {
                what: format!("tls settings: reading the {what} file {}", path.display()),
                cause: Some(Arc::new(e)),
            },
            Place::link(&Arc::from("tls")),
            "configure",
        )
    })
}

/// Every certificate in `pem`; at least one is required.
fn read_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| config_error(format!("reading the {what} PEM: {e}")))?;
    if certs.is_empty() {
        return Err(config_error(format!(
            "the {what} PEM holds no \"CERTIFICATE\" block"
        )));
    }
    Ok(certs)
}

/// The first private key in `pem`.
fn read_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(config_error(
            "the key PEM holds no private key (expected a \"PRIVATE KEY\", \"RSA PRIVATE KEY\" \
             or \"EC PRIVATE KEY\" block)"
                .to_string(),
        )),
        Err(e) => Err(config_error(format!("reading the key PEM: {e}"))),
    }
}

/// Verifies a listener's certificate like NEO: it must chain to the shared CA and be valid
/// now, but the name in it does not have to match the address dialed.
///
/// Every check is delegated to rustls' WebPKI verifier; only its verdict "valid, but for
/// another name" is turned into success. rustls checks the name last, after the chain,
/// validity period and revocation, so that verdict means everything else passed.
#[derive(Debug)]
struct CaOnlyVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for CaOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
