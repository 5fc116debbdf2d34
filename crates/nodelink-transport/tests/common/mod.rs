//! Helpers shared by the integration tests: transports on loopback, bounded waits, and
//! the conformance suite's echo server.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use nodelink_transport::{
    Connection, ConnectionId, EndPoint, EndPointAddress, Event, Transport, TransportConfig,
};
use tokio::task::JoinHandle;

/// Bound on any single wait in a test; generous for a loaded 2-core CI machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// Awaits `f`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A transport on 127.0.0.1, port picked by the kernel, default config.
pub async fn transport() -> Transport {
    transport_with(TransportConfig::default()).await
}

/// A transport on 127.0.0.1 with `config`.
pub async fn transport_with(config: TransportConfig) -> Transport {
    Transport::bind("127.0.0.1", 0, config)
        .await
        .expect("bind 127.0.0.1:0")
}

/// A transport and one endpoint on it.
pub async fn endpoint() -> (Transport, EndPoint) {
    let t = transport().await;
    let ep = t.new_endpoint().await.expect("new endpoint");
    (t, ep)
}

/// The next event, bounded by [`WAIT`].
pub async fn recv(ep: &EndPoint) -> Event {
    within("an event", ep.receive()).await.expect("receive")
}

/// Expects `ConnectionOpened`; returns its id and the opener's address.
pub async fn expect_opened(ep: &EndPoint) -> (ConnectionId, EndPointAddress) {
    match recv(ep).await {
        Event::ConnectionOpened { id, address, .. } => (id, address),
        other => panic!("expected ConnectionOpened, got {other:?}"),
    }
}

/// Expects `Received`; returns its id and the concatenated payload.
pub async fn expect_received(ep: &EndPoint) -> (ConnectionId, Vec<u8>) {
    match recv(ep).await {
        Event::Received { id, data } => (id, data.concat()),
        other => panic!("expected Received, got {other:?}"),
    }
}

/// Expects `ConnectionClosed`; returns its id.
pub async fn expect_closed(ep: &EndPoint) -> ConnectionId {
    match recv(ep).await {
        Event::ConnectionClosed { id } => id,
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
}

/// A running echo server (the conformance suite's): on every `ConnectionOpened` it
/// connects back to the opener and echoes every `Received` on that reverse connection,
/// which it closes on `ConnectionClosed`.
pub struct EchoServer {
    pub transport: Transport,
    pub address: EndPointAddress,
    pub endpoint: EndPoint,
    pub task: JoinHandle<()>,
}

impl EchoServer {
    /// Closes the server's transport and waits for its loop to end.
    pub async fn stop(self) {
        self.transport.close().await;
        let _ = within("the echo server to stop", self.task).await;
    }
}

/// Starts an echo server on its own transport.
pub async fn spawn_echo_server() -> EchoServer {
    let (transport, endpoint) = endpoint().await;
    spawn_echo_on(transport, endpoint)
}

/// Runs the echo loop on an existing endpoint.
pub fn spawn_echo_on(transport: Transport, endpoint: EndPoint) -> EchoServer {
    let address = endpoint.address().clone();
    let ep = endpoint.clone();
    let task = tokio::spawn(async move { echo_loop(ep).await });
    EchoServer {
        transport,
        address,
        endpoint,
        task,
    }
}

/// The echo loop itself; returns when the endpoint is closed.
pub async fn echo_loop(ep: EndPoint) {
    let mut back: HashMap<ConnectionId, Connection> = HashMap::new();
    loop {
        let Ok(ev) = ep.receive().await else { return };
        match ev {
            Event::ConnectionOpened { id, address, .. } => match ep.connect(&address).await {
                Ok(c) => {
                    back.insert(id, c);
                }
                Err(e) => eprintln!("echo server: connect back to {address} failed: {e}"),
            },
            Event::Received { id, data } => {
                if let Some(c) = back.get(&id) {
                    let _ = c.send(&data).await;
                }
            }
            Event::ConnectionClosed { id } => {
                if let Some(c) = back.remove(&id) {
                    c.close().await;
                }
            }
            Event::EndPointClosed => return,
            Event::Error { .. } => {}
        }
    }
}

/// Connects to an echo server and waits for its reverse connection: returns the forward
/// connection and the id the echoes arrive on.
pub async fn connect_echo(
    client: &EndPoint,
    server: &EndPointAddress,
) -> (Connection, ConnectionId) {
    let conn = within("connect", client.connect(server))
        .await
        .expect("connect to echo server");
    let (back, from) = expect_opened(client).await;
    assert_eq!(&from, server);
    (conn, back)
}

/// Sends `n` pings on `conn` and checks each echo arrives on `back`, in order.
pub async fn ping_pong(client: &EndPoint, conn: &Connection, back: ConnectionId, n: usize) {
    for i in 0..n {
        let msg = Bytes::from(format!("ping {i}"));
        conn.send(&[&msg]).await.expect("send ping");
        let (id, data) = expect_received(client).await;
        assert_eq!(id, back);
        assert_eq!(data, msg);
    }
}
