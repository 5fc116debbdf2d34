//! A kcptun-compatible tunnel set up from code: a server that forwards to a TCP service, a
//! client in front of it, and connections through both.
//!
//! Run it with `cargo run -p nodelink-tunnel --example tunnel_from_code`. The same two
//! ends work with Debian's `kcptun-server` / `kcptun-client` given the same settings; the
//! `nodelink tunnel` command builds exactly these `Config`s from kcptun's flags.

use nodelink_kcp::crypt::CipherKind;
use nodelink_kcp::Mode;
use nodelink_tunnel::{Client, Config, Profile, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The TCP service at the far end: uppercases what it reads, per connection.
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let service_addr = service.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = service.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });

    // Both ends must agree on the key, cipher and profile (kcptun's rules).
    let shared = |config: Config| {
        config
            .with_key("a long random secret shared by both ends")
            .with_crypt(CipherKind::Salsa20)
            .with_mode(Profile::Preset(Mode::Fast3))
    };
    let server = Server::bind(
        shared(Config::server())
            .with_listen("127.0.0.1:0")
            .with_target(service_addr.to_string()),
    )
    .await?;
    let client = Client::bind(
        shared(Config::default())
            .with_listen("127.0.0.1:0")
            .with_target(server.local_addr().to_string()),
    )
    .await?;
    let entry = client.local_addr();
    println!(
        "tunnel entry {entry} -> KCP {} -> {service_addr}",
        server.local_addr()
    );

    let stop = CancellationToken::new();
    let server_task = tokio::spawn(server.run(stop.clone()));
    let client_task = tokio::spawn(client.run(stop.clone()));

    // Three connections through the tunnel, each its own smux stream in one KCP session.
    for word in ["alpha", "beta", "gamma"] {
        let mut conn = tokio::net::TcpStream::connect(entry).await?;
        conn.write_all(word.as_bytes()).await?;
        let mut back = vec![0u8; word.len()];
        conn.read_exact(&mut back).await?;
        println!("{word} -> {}", String::from_utf8(back)?);
    }

    stop.cancel();
    client_task.await??;
    server_task.await??;
    Ok(())
}
