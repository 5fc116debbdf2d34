//! Rust-to-Rust sessions: many parallel streams moving megabytes, verified byte for byte,
//! over an in-memory pipe and over TCP loopback, for both protocol versions; FIN semantics.

mod common;

use common::*;
use nodelink_smux::Role;
use nodelink_smux::{ErrorKind, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn many_streams(client: Session, server: Session, streams: u64, bytes: usize) {
    let echo = spawn_echo_server(server.clone());
    let mut tasks = Vec::new();
    for n in 0..streams {
        let stream = within(client.open()).await.unwrap();
        assert_eq!(stream.id(), 3 + 2 * n as u32);
        tasks.push(tokio::spawn(echo_and_verify(stream, payload(n, bytes))));
    }
    for t in tasks {
        within(t).await.unwrap();
    }
    client.close().await;
    within(echo).await.unwrap();
    within(server.closed()).await;
}

#[tokio::test]
async fn v1_duplex_parallel_streams() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client = Session::start(a, Role::Client, config(1)).unwrap();
    let server = Session::start(b, Role::Server, config(1)).unwrap();
    many_streams(client, server, 8, 1 << 20).await;
}

#[tokio::test]
async fn v2_duplex_parallel_streams() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client = Session::start(a, Role::Client, config(2)).unwrap();
    let server = Session::start(b, Role::Server, config(2)).unwrap();
    many_streams(client, server, 8, 1 << 20).await;
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (c.unwrap(), s.unwrap().0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_tcp_parallel_streams() {
    let (c, s) = tcp_pair().await;
    let client = Session::start(c, Role::Client, config(1)).unwrap();
    let server = Session::start(s, Role::Server, config(1)).unwrap();
    many_streams(client, server, 8, 2 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_tcp_parallel_streams() {
    let (c, s) = tcp_pair().await;
    let cfg = config(2).with_max_stream_buffer(256 * 1024);
    let client = Session::start(c, Role::Client, cfg.clone()).unwrap();
    let server = Session::start(s, Role::Server, cfg).unwrap();
    many_streams(client, server, 8, 2 << 20).await;
}

#[tokio::test]
async fn half_close_works_both_ways() {
    for version in [1, 2] {
        let (a, b) = tokio::io::duplex(4096);
        let client = Session::start(a, Role::Client, config(version)).unwrap();
        let server = Session::start(b, Role::Server, config(version)).unwrap();
        let mut c = within(client.open()).await.unwrap();
        c.write_all(b"request").await.unwrap();
        within(c.shutdown()).await.unwrap();
        let err = c.write_all(b"more").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);

        let mut s = within(server.accept()).await.unwrap();
        assert_eq!(s.id(), 3);
        let mut got = Vec::new();
        within(s.read_to_end(&mut got)).await.unwrap();
        assert_eq!(got, b"request");
        // The client's FIN closed only its half: the server still answers.
        s.write_all(b"response").await.unwrap();
        within(s.shutdown()).await.unwrap();

        let mut got = Vec::new();
        within(c.read_to_end(&mut got)).await.unwrap();
        assert_eq!(got, b"response");
        // Both halves closed and both handles dropped: the streams are forgotten.
        drop(c);
        drop(s);
        within(async {
            while client.num_streams() + server.num_streams() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
}

#[tokio::test]
async fn dropping_a_stream_sends_fin_after_its_data() {
    let (a, b) = tokio::io::duplex(4096);
    let client = Session::start(a, Role::Client, config(1)).unwrap();
    let server = Session::start(b, Role::Server, config(1)).unwrap();
    let mut s_out = within(server.open()).await.unwrap();
    assert_eq!(s_out.id(), 2);
    s_out.write_all(&payload(9, 100_000)).await.unwrap();
    drop(s_out);
    let mut c_in = within(client.accept()).await.unwrap();
    let mut got = Vec::new();
    within(c_in.read_to_end(&mut got)).await.unwrap();
    assert!(got == payload(9, 100_000));
}

#[tokio::test]
async fn closing_the_session_ends_streams_and_fails_acceptors() {
    let (a, b) = tokio::io::duplex(4096);
    let client = Session::start(a, Role::Client, config(2)).unwrap();
    let server = Session::start(b, Role::Server, config(2)).unwrap();
    let mut c = within(client.open()).await.unwrap();
    let _s = within(server.accept()).await.unwrap();
    let acceptor = {
        let server = server.clone();
        tokio::spawn(async move { server.accept().await })
    };
    within(server.close()).await;
    let err = within(acceptor).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionClosed);
    // The client sees its stream end (the server's graceful close sent a FIN), then the
    // connection.
    within(client.closed()).await;
    assert_eq!(within(c.read(&mut [0u8; 8])).await.unwrap(), 0);
    let err = within(c.write(b"late")).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    let err = within(client.open()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionClosed);
    assert_eq!(client.num_streams(), 0);
}

#[tokio::test]
async fn dropping_every_handle_closes_the_session() {
    let (a, mut raw) = tokio::io::duplex(4096);
    let client = Session::start(a, Role::Client, config(1)).unwrap();
    drop(client);
    // The connection is released: the raw end reads EOF.
    let n = within(raw.read(&mut [0u8; 8])).await.unwrap();
    assert_eq!(n, 0);
}

#[test]
fn handles_are_send_sync_and_static() {
    fn send_static<T: Send + 'static>() {}
    fn sync<T: Sync>() {}
    send_static::<Session>();
    sync::<Session>();
    send_static::<nodelink_smux::Stream>();
    sync::<nodelink_smux::Stream>();
    send_static::<nodelink_smux::Error>();
    sync::<nodelink_smux::Error>();
}
