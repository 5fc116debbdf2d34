//! The tour's TLS step: the same link inside TLS with certificates on both sides, as a NEO
//! cluster runs it. The certificate authority and the node certificate are made at run
//! time (rcgen) and live in memory only; `nodelink serve --tls-*` takes PEM files instead.

use std::time::{Duration, Instant};

use anyhow::Context;
use nodelink::tls::{bind_tls, connect_tls, TlsSettings};
use nodelink::{Config, Ping, Pong};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::out::say;
use crate::stats::{grouped, per_second, Summary};

/// Serial lightweight round trips inside TLS.
const ROUND_TRIPS: usize = 2_000;
/// Bound on the whole step.
const LIMIT: Duration = Duration::from_secs(60);

/// A CA, and one node certificate signed by it that both ends use (it carries both the
/// server and the client purpose, for 127.0.0.1).
fn credentials() -> anyhow::Result<TlsSettings> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "nodelink tour CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut node = CertificateParams::new(vec!["127.0.0.1".to_string()])?;
    node.distinguished_name
        .push(DnType::CommonName, "nodelink tour node");
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let node_key = KeyPair::generate()?;
    let node_cert = node.signed_by(&node_key, &ca_cert, &ca_key)?;
    let settings = TlsSettings::from_pem(
        ca_cert.pem().as_bytes(),
        node_cert.pem().as_bytes(),
        node_key.serialize_pem().as_bytes(),
        true,
    )?;
    Ok(settings)
}

/// 8. The link over TLS, client certificates required.
pub async fn tls() -> anyhow::Result<()> {
    say!("");
    say!(
        "8. Link over TLS: certificates on both sides, as NEO requires (`nodelink serve --tls-*`)"
    );
    let tls = credentials().context("cannot make the tour's certificates")?;
    say!("   a CA and a node certificate made just now, in memory (ECDSA P-256)");
    let mut listener = bind_tls("127.0.0.1:0", &tls, Config::default())
        .await
        .context("cannot start the TLS server")?;
    let addr = listener.local_addr();
    let start = Instant::now();
    let (client, server) = tokio::time::timeout(LIMIT, async {
        tokio::try_join!(
            connect_tls(addr, &tls, Config::default()),
            listener.accept()
        )
    })
    .await
    .context("the TLS handshake took too long")?
    .context("cannot set up the TLS link")?;
    let handshake = start.elapsed();
    drop(listener);
    let answering = tokio::spawn(async move {
        while let Ok(request) = server.recv1().await {
            let _ = request.reply(&Pong).await;
        }
    });
    let result = async {
        let mut samples = Vec::with_capacity(ROUND_TRIPS);
        let start = Instant::now();
        for _ in 0..ROUND_TRIPS {
            let t = Instant::now();
            let _: Pong = client.ask1(&Ping).await.context("ask1 over TLS")?;
            samples.push(t.elapsed());
        }
        Ok::<_, anyhow::Error>((samples, start.elapsed()))
    };
    let result = tokio::time::timeout(LIMIT, crate::out::progress("TLS round trips", result))
        .await
        .context("the TLS round trips took too long")?;
    client.close().await;
    answering.abort();
    let (mut samples, elapsed) = result?;
    let handshake_ms = handshake.as_secs_f64() * 1e3;
    say!("   TLS and version handshakes, mutual certificates checked: {handshake_ms:.1} ms");
    if let Some(s) = Summary::of(&mut samples) {
        crate::out::json(&serde_json::json!({
            "step": "link_tls",
            "handshake_ms": handshake_ms,
            "requests": ROUND_TRIPS,
            "requests_per_s": per_second(ROUND_TRIPS as u64, elapsed),
            "rtt_us": s.to_json(),
        }))?;
        say!(
            "   {} serial round trips inside TLS: p50 {:.1} µs, p99 {:.1} µs  ->  {} req/s",
            grouped(ROUND_TRIPS as f64),
            s.p50_us,
            s.p99_us,
            grouped(per_second(ROUND_TRIPS as u64, elapsed))
        );
    }
    Ok(())
}
