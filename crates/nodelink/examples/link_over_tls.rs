//! A link over TLS, the way a NEO cluster secures itself: one CA signs every node's
//! certificate, and each side accepts only peers whose certificate chains to that CA.
//!
//! Run it with `cargo run -p nodelink --example link_over_tls`. A real deployment reads the
//! three PEM files with `TlsSettings::from_pem_files("ca.crt", "node.crt", "node.key",
//! true)`; this example makes a throwaway CA and node certificate with `rcgen` so that it
//! runs anywhere.

use nodelink::tls::{bind_tls, connect_tls, TlsSettings};
use nodelink::{Config, Handlers, Ping, Pong};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio_util::sync::CancellationToken;

/// The cluster's CA (PEM) and one node's certificate and key (PEM), signed by it.
fn cluster_pems() -> Result<(String, String, String), rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "example cluster CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    // Host names are not checked (nodes are addressed by IP): any name will do.
    let mut node = CertificateParams::new(vec!["node-1".to_string()])?;
    node.distinguished_name.push(DnType::CommonName, "node-1");
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let node_key = KeyPair::generate()?;
    let node_cert = node.signed_by(&node_key, &ca_cert, &ca_key)?;
    Ok((ca_cert.pem(), node_cert.pem(), node_key.serialize_pem()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (ca, cert, key) = cluster_pems()?;
    // Listeners require a client certificate (`true`), as NEO does.
    let tls = TlsSettings::from_pem(ca.as_bytes(), cert.as_bytes(), key.as_bytes(), true)?;

    let listener = bind_tls("127.0.0.1:0", &tls, Config::default()).await?;
    let addr = listener.local_addr();
    println!("TLS listener on {addr}");
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        let handlers = Handlers::new().on(|_: Ping| async { Ok(Pong) });
        async move { handlers.serve_listener(listener, &stop).await }
    });

    let link = connect_tls(addr, &tls, Config::default()).await?;
    for _ in 0..3 {
        let _: Pong = link.call(&Ping).await?;
    }
    println!("3 pings answered over TLS; the link is {link:?}");
    link.close().await;
    stop.cancel();
    server.await??;
    Ok(())
}
