//! KCP over a UDP socket the program already owns.
//!
//! Peers behind NATs usually learn their public address through a rendezvous server and
//! must then talk to each other from that very socket, since the NAT mapped its port.
//! Here node B uses its socket for a rendezvous exchange first, then hands it to a
//! [`KcpListener`], which both serves B's own sessions and dials node A, all on one port.
//!
//! Run it with `cargo run -p nodelink-kcp --example own_socket`.

use nodelink_kcp::{CipherKind, Config, KcpListener, KcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Both ends must agree on cipher and key; aes-128-gcm authenticates every datagram.
    let config = Config::default()
        .with_crypt(CipherKind::Aes128Gcm)
        .with_key("a long random secret shared by A and B");

    // Node A: an ordinary listener that answers every message in upper case.
    let mut a = KcpListener::bind("127.0.0.1:0", config.clone()).await?;
    let a_addr = a.local_addr();
    tokio::spawn(async move {
        while let Ok((mut session, from)) = a.accept().await {
            println!("A: session from {from}");
            tokio::spawn(async move {
                while let Ok(message) = session.recv_message().await {
                    let answer = message.to_ascii_uppercase();
                    if session.send_message(&answer).await.is_err() {
                        break;
                    }
                }
            });
        }
    });

    // Node B's socket does something else first: a stand-in for a rendezvous server
    // that tells B its public address.
    let rendezvous = UdpSocket::bind("127.0.0.1:0").await?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket
        .send_to(b"where am I?", rendezvous.local_addr()?)
        .await?;
    let mut buf = [0u8; 64];
    let (_, seen) = rendezvous.recv_from(&mut buf).await?;
    println!("B: the rendezvous server sees B at {seen}");

    // The same socket now carries KCP: B serves on it and dials A from it.
    let b = KcpListener::from_socket(socket, config.clone())?;
    assert_eq!(b.local_addr(), seen, "one port for everything");
    let mut to_a = b.connect(a_addr).await?;
    to_a.send_message(b"hello from b").await?;
    let answer = to_a.recv_message().await?;
    println!("B: A answered {:?}", String::from_utf8_lossy(&answer));

    // Someone else dials B at that same port while B's session to A stays up.
    let mut b = b;
    let served = tokio::spawn(async move {
        let (mut session, from) = b.accept().await?;
        let mut hello = [0u8; 5];
        session.read_exact(&mut hello).await?;
        session.write_all(b"hi, ").await?;
        session.write_all(&hello).await?;
        session.close().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(from)
    });
    let mut client = KcpStream::connect(seen, config).await?;
    client.write_all(b"carol").await?;
    let mut reply = [0u8; 9];
    client.read_exact(&mut reply).await?;
    println!("C: B answered {:?}", String::from_utf8_lossy(&reply));
    let from = served.await??;
    assert_eq!(from, client.local_addr());

    to_a.send_message(b"still there?").await?;
    println!(
        "B: A answered {:?}",
        String::from_utf8_lossy(&to_a.recv_message().await?)
    );
    to_a.close().await?;
    client.close().await?;
    Ok(())
}
