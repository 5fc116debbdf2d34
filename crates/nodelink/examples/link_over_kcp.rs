//! A link over KCP (reliable UDP, wire-compatible with kcp-go) instead of TCP: the same
//! link, the same calls, a different `connect` and `bind`.
//!
//! Run it with `cargo run -p nodelink --example link_over_kcp`. Both ends must agree on
//! the KCP settings (cipher, key, FEC). The kcptun-compatible ciphers do not authenticate
//! datagrams and the default key is public: use a key of your own, and read the security
//! section of the `nodelink-kcp` docs before relying on the cipher.

use nodelink::kcp::{bind_kcp, connect_kcp, CipherKind, KcpConfig, Mode};
use nodelink::{Config, Handlers, Ping, Pong};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let session = KcpConfig::default()
        .with_crypt(CipherKind::Aes128Gcm)
        .with_key("a long random secret shared by both ends")
        .with_mode(Mode::Fast3);

    let listener = bind_kcp("127.0.0.1:0", session.clone(), Config::default()).await?;
    let addr = listener.local_addr();
    println!("KCP listener on {addr} (UDP)");
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        let handlers = Handlers::new().on(|_: Ping| async { Ok(Pong) });
        async move { handlers.serve_listener(listener, &stop).await }
    });

    let link = connect_kcp(addr, session, Config::default()).await?;
    let started = std::time::Instant::now();
    for _ in 0..100 {
        let _: Pong = link.call(&Ping).await?;
    }
    println!("100 pings over KCP in {:?}", started.elapsed());
    // KCP has no FIN: closing sends the link's BYE, so the server learns of it at once.
    link.close().await;
    stop.cancel();
    server.await??;
    Ok(())
}
