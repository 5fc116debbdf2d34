//! Helpers shared by the integration tests: transports on loopback, bounded waits, and
//! the conformance suite's echo server.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use nodelink_transport::{
    Config, Connection, ConnectionId, EndPoint, EndPointAddress, Event, Transport,
};
use tokio::task::JoinHandle;

/// Bound on any single wait in a test; generous for a loaded 2-core CI machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// Awaits `f`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    nodelink_testkit::within_for(WAIT, what, f).await
}

/// A transport on 127.0.0.1, port picked by the kernel, default config.
pub async fn transport() -> Transport {
    transport_with(Config::default()).await
}

/// A transport on 127.0.0.1 with `config`.
pub async fn transport_with(config: Config) -> Transport {
    Transport::bind("127.0.0.1", 0, config)
        .await
        .expect("bind 127.0.0.1:0")
}

/// A transport and one endpoint on it.
pub async fn endpoint() -> (Transport, EndPoint) {
    let t = transport().await;
    let ep = t.open_endpoint().await.expect("new endpoint");
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

/// How many ESTABLISHED TCP sockets on this machine have `a`'s or `b`'s listening port at
/// either end (read from /proc/net/tcp and /proc/net/tcp6; ephemeral ports never equal a
/// listening port on loopback, so these are exactly the sockets between the two).
pub fn established_between(a: &EndPointAddress, b: &EndPointAddress) -> usize {
    let ports: Vec<u16> = [a, b]
        .iter()
        .map(|x| x.parse().expect("a host:port:id address").1)
        .collect();
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[3] != "01" {
                continue;
            }
            let port = |s: &str| {
                s.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if [f[1], f[2]]
                .iter()
                .any(|e| port(e).is_some_and(|p| ports.contains(&p)))
            {
                n += 1;
            }
        }
    }
    n
}

/// Waits (bounded by [`WAIT`]) until no socket joins `a` and `b`; returns how many were
/// left if some remain. Polls: the kernel's table offers nothing to wait on.
pub async fn no_socket_between(a: &EndPointAddress, b: &EndPointAddress) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = established_between(a, b);
        if n == 0 || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
