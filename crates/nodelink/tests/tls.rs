//! TLS links. Certificates are generated with rcgen at test time; nothing is written to
//! disk. Every wait is bounded.
#![cfg(feature = "tls")]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nodelink::tls::{bind_tls, connect_tls, TlsSettings};
use nodelink::{Config, ErrorKind, HandshakeError, Link, Listener, Ping, Pong};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test step timed out")
}

/// A certificate authority able to sign node certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// PEM text of one node: its certificate and its private key.
struct NodeCert {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A node certificate usable both to listen and to dial, with the given SANs (IP
    /// addresses or DNS names).
    fn node(&self, sans: &[&str]) -> NodeCert {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, "node");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        NodeCert {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn settings(&self, node: &NodeCert, require_client_cert: bool) -> TlsSettings {
        TlsSettings::from_pem(
            self.pem().as_bytes(),
            node.cert.as_bytes(),
            node.key.as_bytes(),
            require_client_cert,
        )
        .unwrap()
    }
}

/// Accepts one link (skipping failed handshakes) and gives the listener back, so the test
/// can look at `failed_handshakes`.
fn accept_one(mut listener: Listener) -> tokio::task::JoinHandle<(Listener, Link)> {
    tokio::spawn(async move {
        let link = listener.accept().await.unwrap();
        (listener, link)
    })
}

fn serve_pings(link: Link) {
    tokio::spawn(async move {
        while let Ok(req) = link.recv1().await {
            let _ = req.reply(&Pong).await;
        }
    });
}

async fn tls_listener(tls: &TlsSettings, config: Config) -> (Listener, SocketAddr) {
    let listener = bind_tls("127.0.0.1:0", tls, config).await.unwrap();
    let addr = listener.local_addr();
    (listener, addr)
}

fn assert_handshake_error(e: &nodelink::Error) {
    assert!(matches!(e.kind(), ErrorKind::Handshake), "{e:?}");
    assert_eq!(e.op(), "handshake", "{e}");
}

#[tokio::test]
async fn round_trips_and_conn_exchange_with_client_certs() {
    let ca = Ca::new("cluster CA");
    let server_tls = ca.settings(&ca.node(&["127.0.0.1"]), true);
    let client_tls = ca.settings(&ca.node(&["127.0.0.1"]), true);
    let (listener, addr) = tls_listener(&server_tls, Config::default()).await;

    let server = tokio::spawn(async move {
        let mut listener = listener;
        let link = listener.accept().await.unwrap();
        // Lightweight requests first...
        for _ in 0..20 {
            let req = link.recv1().await.unwrap();
            req.reply(&Pong).await.unwrap();
        }
        // ...then a full connection: Ping/Pong, and a payload bigger than a TLS record
        // echoed back.
        let conn = link.accept().await.unwrap();
        let _: Ping = conn.expect().await.unwrap();
        conn.send(&Pong).await.unwrap();
        let p = conn.recv().await.unwrap();
        conn.send_packet(0x8000 | p.code, p.payload).await.unwrap();
        let e = conn.recv().await.unwrap_err();
        assert!(e.is_link_gone(), "{e}");
        link
    });

    let link = bounded(connect_tls(addr, &client_tls, Config::default()))
        .await
        .unwrap();
    assert_eq!(link.remote_addr(), Some(addr));
    for _ in 0..20 {
        let _: Pong = bounded(link.ask1(&Ping)).await.unwrap();
    }

    let conn = link.open().unwrap();
    let _: Pong = bounded(conn.ask(&Ping)).await.unwrap();
    let big = Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    bounded(conn.send_packet(10, big.clone())).await.unwrap();
    let echo = bounded(conn.recv()).await.unwrap();
    assert_eq!(echo.code, 0x800a);
    assert_eq!(echo.payload, big);

    assert_eq!(link.stats().conns_opened, 21);
    link.close().await;
    let slink = bounded(server).await.unwrap();
    assert_eq!(slink.stats().conns_accepted, 21);
}

#[tokio::test]
async fn server_name_is_not_checked() {
    let ca = Ca::new("cluster CA");
    // Neither the IP dialed nor anything like it is in this certificate.
    let server_tls = ca.settings(&ca.node(&["storage-7.neo.invalid", "10.9.8.7"]), true);
    let client_tls = ca.settings(&ca.node(&["client.neo.invalid"]), true);
    let (listener, addr) = tls_listener(&server_tls, Config::default()).await;
    let server = accept_one(listener);

    let link = bounded(connect_tls(addr, &client_tls, Config::default()))
        .await
        .unwrap();
    let (_listener, slink) = bounded(server).await.unwrap();
    serve_pings(slink);
    let _: Pong = bounded(link.ask1(&Ping)).await.unwrap();
}

#[tokio::test]
async fn client_cert_from_another_ca_is_rejected_and_listener_keeps_serving() {
    let ca = Ca::new("cluster CA");
    let rogue = Ca::new("rogue CA");
    let server_tls = ca.settings(&ca.node(&["127.0.0.1"]), true);
    // The rogue client trusts the cluster CA (so it accepts the server) but its own
    // certificate comes from another CA.
    let rogue_node = rogue.node(&["127.0.0.1"]);
    let rogue_tls = TlsSettings::from_pem(
        ca.pem().as_bytes(),
        rogue_node.cert.as_bytes(),
        rogue_node.key.as_bytes(),
        true,
    )
    .unwrap();
    let good_tls = ca.settings(&ca.node(&["127.0.0.1"]), true);
    let (listener, addr) = tls_listener(&server_tls, Config::default()).await;
    let server = accept_one(listener);

    let e = bounded(connect_tls(addr, &rogue_tls, Config::default()))
        .await
        .unwrap_err();
    assert_handshake_error(&e);

    let link = bounded(connect_tls(addr, &good_tls, Config::default()))
        .await
        .unwrap();
    let (listener, slink) = bounded(server).await.unwrap();
    assert_eq!(listener.failed_handshakes(), 1);
    serve_pings(slink);
    let _: Pong = bounded(link.ask1(&Ping)).await.unwrap();
}

#[tokio::test]
async fn server_cert_from_another_ca_is_rejected_by_the_client() {
    let ca = Ca::new("cluster CA");
    let rogue = Ca::new("rogue CA");
    // A listener whose certificate is signed by a CA the client does not trust.
    let rogue_node = rogue.node(&["127.0.0.1"]);
    let rogue_server = TlsSettings::from_pem(
        ca.pem().as_bytes(),
        rogue_node.cert.as_bytes(),
        rogue_node.key.as_bytes(),
        true,
    )
    .unwrap();
    let client_tls = ca.settings(&ca.node(&["127.0.0.1"]), true);
    let (mut listener, addr) = tls_listener(&rogue_server, Config::default()).await;
    let server = tokio::spawn(async move { listener.accept().await });

    let e = bounded(connect_tls(addr, &client_tls, Config::default()))
        .await
        .unwrap_err();
    assert_handshake_error(&e);
    match e.handshake_error() {
        Some(HandshakeError::Tls(io)) => {
            let text = io.to_string();
            assert!(text.contains("UnknownIssuer"), "{text}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    server.abort();
}

#[tokio::test]
async fn plain_tcp_client_fails_against_tls_listener() {
    let ca = Ca::new("cluster CA");
    let server_tls = ca.settings(&ca.node(&["127.0.0.1"]), true);
    let client_tls = ca.settings(&ca.node(&["127.0.0.1"]), true);
    let (listener, addr) = tls_listener(&server_tls, Config::default()).await;
    let server = accept_one(listener);

    // The listener's TLS layer rejects the plain client's version word as a malformed
    // record and answers with an alert, which the client reads as a wrong version word
    // (0x15030300). The short timeout bounds the test should a peer wait instead.
    let short = Config::default().with_handshake_timeout(Duration::from_millis(300));
    let e = bounded(nodelink::connect(addr, short)).await.unwrap_err();
    assert_handshake_error(&e);

    // The listener skipped the failed handshake and serves a TLS client next.
    let link = bounded(connect_tls(addr, &client_tls, Config::default()))
        .await
        .unwrap();
    let (listener, slink) = bounded(server).await.unwrap();
    assert_eq!(listener.failed_handshakes(), 1);
    serve_pings(slink);
    let _: Pong = bounded(link.ask1(&Ping)).await.unwrap();
}

#[tokio::test]
async fn silent_tls_peer_times_out() {
    let ca = Ca::new("cluster CA");
    let client_tls = ca.settings(&ca.node(&["127.0.0.1"]), true);
    // A TCP listener that accepts and never answers.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (stream, _) = tcp.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut stream = stream;
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut buf).await;
    });
    let timeout = Duration::from_millis(200);
    let config = Config::default().with_handshake_timeout(timeout);
    let e = bounded(connect_tls(addr, &client_tls, config))
        .await
        .unwrap_err();
    match e.handshake_error() {
        Some(HandshakeError::Timeout(t)) => assert_eq!(*t, timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
    bounded(hold).await.unwrap();
}

#[tokio::test]
async fn version_mismatch_inside_tls() {
    let ca = Ca::new("cluster CA");
    let server_tls = ca.settings(&ca.node(&["127.0.0.1"]), true);
    let client_tls = ca.settings(&ca.node(&["127.0.0.1"]), true);
    let (mut listener, addr) = tls_listener(&server_tls, Config::default().with_version(7)).await;
    let server = tokio::spawn(async move { listener.accept().await });

    let e = bounded(connect_tls(addr, &client_tls, Config::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.handshake_error(),
            Some(HandshakeError::VersionMismatch { peer: 7, ours: 6 })
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.ends_with("protocol version mismatch: peer = 00000007 ; our side = 00000006"),
        "{text}"
    );
    // The error names the link: "<local> - <remote>: handshake: ...".
    assert!(text.contains(&format!(" - {addr}: handshake: ")), "{text}");
    server.abort();
}

#[tokio::test]
async fn optional_client_certs() {
    let ca = Ca::new("cluster CA");
    let server_node = ca.node(&["127.0.0.1"]);

    // A client without any certificate, built by hand through the escape hatch. With
    // standard rustls verification the listener's certificate needs the dialed IP as SAN.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let anonymous = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let unused_server = ca.settings(&server_node, true).server_config().clone();
    let anonymous = TlsSettings::from_configs(Arc::new(anonymous), unused_server);

    // Required: refused, and the listener serves the next client.
    let strict = ca.settings(&server_node, true);
    let (listener, addr) = tls_listener(&strict, Config::default()).await;
    let server = accept_one(listener);
    let e = bounded(connect_tls(addr, &anonymous, Config::default()))
        .await
        .unwrap_err();
    assert_handshake_error(&e);
    let good = ca.settings(&ca.node(&["127.0.0.1"]), true);
    let _link = bounded(connect_tls(addr, &good, Config::default()))
        .await
        .unwrap();
    let (listener, _slink) = bounded(server).await.unwrap();
    assert_eq!(listener.failed_handshakes(), 1);

    // Not required: accepted.
    let lenient = ca.settings(&server_node, false);
    let (listener, addr) = tls_listener(&lenient, Config::default()).await;
    let server = accept_one(listener);
    let link = bounded(connect_tls(addr, &anonymous, Config::default()))
        .await
        .unwrap();
    let (_listener, slink) = bounded(server).await.unwrap();
    serve_pings(slink);
    let _: Pong = bounded(link.ask1(&Ping)).await.unwrap();
}

/// The words of a configuration error (kind `Connect`, an `InvalidInput` as an
/// `io::Error`), checked to say so.
fn invalid_input(e: &nodelink::Error) -> String {
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    let io = std::io::Error::from(e.clone());
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    e.to_string()
}

#[test]
fn bad_pem_input_is_a_clear_error() {
    let ca = Ca::new("cluster CA");
    let node = ca.node(&["127.0.0.1"]);
    let other = ca.node(&["127.0.0.1"]);
    let (ca_pem, cert, key) = (ca.pem(), node.cert.as_bytes(), node.key.as_bytes());

    let e = TlsSettings::from_pem(b"not a pem file", cert, key, true).unwrap_err();
    assert!(invalid_input(&e).contains("CA PEM holds no"), "{e}");

    let e = TlsSettings::from_pem(ca_pem.as_bytes(), key, key, true).unwrap_err();
    assert!(
        invalid_input(&e).contains("certificate PEM holds no"),
        "{e}"
    );

    let e = TlsSettings::from_pem(ca_pem.as_bytes(), cert, cert, true).unwrap_err();
    assert!(invalid_input(&e).contains("no private key"), "{e}");

    // A key that does not belong to the certificate.
    let e = TlsSettings::from_pem(ca_pem.as_bytes(), cert, other.key.as_bytes(), true).unwrap_err();
    assert!(invalid_input(&e).contains("certificate and key"), "{e}");

    // A truncated certificate block.
    let truncated = &node.cert[..node.cert.len() / 2];
    let e = TlsSettings::from_pem(truncated.as_bytes(), cert, key, true).unwrap_err();
    invalid_input(&e);

    let e = TlsSettings::from_pem_files(
        "/nonexistent/nodelink/ca.crt",
        "/nonexistent/nodelink/node.crt",
        "/nonexistent/nodelink/node.key",
        true,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    // The file is named in the error's words; the I/O error is its cause.
    assert!(
        e.to_string().contains("/nonexistent/nodelink/ca.crt"),
        "{e}"
    );
    assert_eq!(
        e.io_error().map(std::io::Error::kind),
        Some(std::io::ErrorKind::NotFound)
    );
}

/// Silent sockets against a TLS listener (no ClientHello ever comes): more of them than
/// handshakes may run at once, and a good TLS client is still served while they stay
/// open, as on plain TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_cannot_starve_a_tls_client() {
    let ca = Ca::new("cluster CA");
    let server_tls = ca.settings(&ca.node(&["127.0.0.1"]), true);
    let client_tls = ca.settings(&ca.node(&["127.0.0.1"]), true);
    // A handshake timeout longer than the test: only eviction can make room.
    let config = Config::default().with_handshake_timeout(Duration::from_secs(3600));
    let (mut listener, addr) = tls_listener(&server_tls, config).await;
    let serving = tokio::spawn(async move {
        while let Ok(link) = listener.accept().await {
            serve_pings(link);
        }
    });
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(bounded(tokio::net::TcpStream::connect(addr)).await.unwrap());
    }
    let link = bounded(connect_tls(addr, &client_tls, Config::default()))
        .await
        .unwrap();
    let _: Pong = bounded(link.ask1(&Ping)).await.unwrap();
    serving.abort();
    drop(silent);
}
