//! A Cloud-Haskell-compatible echo endpoint, and a client that talks to it.
//!
//! Run it with `cargo run -p nodelink-transport --example echo_endpoint`. The echo
//! endpoint does what `nodelink nt echo` and the conformance suite's echo server do: for
//! every connection opened to it, it opens a connection back to the sender and echoes each
//! message there. A Haskell `network-transport-tcp` node can be the client just as well
//! (pass it the printed address).
//!
//! What to look at: one `Transport` per process, endpoints on it, unidirectional
//! connections, and events (`ConnectionOpened`, `Received`, `ConnectionClosed`) read from
//! the endpoint.

use std::collections::HashMap;

use nodelink_transport::{Config, EndPoint, Event, Transport};

/// Echoes every message on a connection opened back to its sender, until the endpoint
/// closes.
async fn echo(endpoint: EndPoint) -> Result<(), nodelink_transport::Error> {
    let mut back = HashMap::new();
    loop {
        match endpoint.receive().await? {
            Event::ConnectionOpened { id, address, .. } => {
                back.insert(id, endpoint.connect(&address).await?);
            }
            Event::Received { id, data } => {
                if let Some(conn) = back.get(&id) {
                    let parts: Vec<&[u8]> = data.iter().map(|b| &b[..]).collect();
                    conn.send(&parts).await?;
                }
            }
            Event::ConnectionClosed { id } => {
                if let Some(conn) = back.remove(&id) {
                    conn.close().await;
                }
            }
            Event::EndPointClosed => return Ok(()),
            other => println!("echo: {other:?}"),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Transport::bind("127.0.0.1", 0, Config::default()).await?;
    let echo_endpoint = server.open_endpoint().await?;
    println!("ADDRESS {}", echo_endpoint.address());
    let echo_address = echo_endpoint.address().clone();
    let echoing = tokio::spawn(echo(echo_endpoint));

    let client = Transport::bind("127.0.0.1", 0, Config::default()).await?;
    let me = client.open_endpoint().await?;
    let conn = me.connect(&echo_address).await?;
    for text in ["hello", "from", "rust"] {
        conn.send(&[text.as_bytes()]).await?;
    }
    // The echo comes back on a connection the echo endpoint opened to us.
    let mut echoed = Vec::new();
    while echoed.len() < 3 {
        match me.receive().await? {
            Event::Received { data, .. } => {
                echoed.push(String::from_utf8(data.concat())?);
            }
            Event::ConnectionOpened { address, .. } => {
                println!("the echo endpoint connected back from {address}")
            }
            other => println!("client: {other:?}"),
        }
    }
    println!("echoed: {}", echoed.join(" "));
    assert_eq!(echoed, ["hello", "from", "rust"]);
    conn.close().await;
    client.close().await;
    server.close().await;
    let _ = echoing.await?;
    Ok(())
}
