//! KCP over UDP sockets the application already owns: a client session on a socket that
//! was in use before (kcp-go's `NewConn`), a listener on one (`ServeConn`), and one socket
//! that both serves sessions and dials out.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use nodelink_kcp::{Config, ErrorKind, KcpListener, KcpStream, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::time::timeout;

/// Upper bound for each test's work.
const LIMIT: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config::default()
        .with_key("own-socket tests")
        .with_mode(Mode::Fast3)
}

/// Echoes every byte of every session `listener` accepts.
fn serve_echo(mut listener: KcpListener) -> tokio::task::JoinHandle<KcpListener> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
        listener
    })
}

async fn echo(mut s: KcpStream) {
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Writes `len` patterned bytes on `s` and checks they come back.
async fn round_trip(s: &mut KcpStream, len: usize, seed: u8) {
    let sent: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    s.write_all(&sent).await.unwrap();
    let mut got = vec![0u8; len];
    s.read_exact(&mut got).await.unwrap();
    assert!(got == sent, "echo differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_session_on_a_socket_used_before() {
    timeout(LIMIT, async {
        let listener = KcpListener::bind("127.0.0.1:0", config()).await.unwrap();
        let server = listener.local_addr();
        let _serving = serve_echo(listener);

        // The application's socket has talked to someone else first (a rendezvous
        // server, say): the KCP session keeps its port.
        let rendezvous = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = sock.local_addr().unwrap();
        sock.send_to(b"hello", rendezvous.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = rendezvous.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], port));

        let mut s = KcpStream::connect_on(sock, server, config()).await.unwrap();
        assert_eq!(s.local_addr(), port);
        assert_eq!(s.peer_addr(), server);
        round_trip(&mut s, 200_000, 1).await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_socket_serves_and_dials() {
    timeout(LIMIT, async {
        // Node A: a plain listener. Node B: one socket of its own that serves sessions and
        // also dials A.
        let a = KcpListener::bind("127.0.0.1:0", config()).await.unwrap();
        let a_addr = a.local_addr();
        let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut a = a;
        tokio::spawn(async move {
            while let Ok((stream, from)) = a.accept().await {
                let _ = accepted_tx.send(from);
                tokio::spawn(echo(stream));
            }
        });

        let b_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b_addr = b_sock.local_addr().unwrap();
        let b = KcpListener::from_socket(b_sock, config()).unwrap();
        assert_eq!(b.local_addr(), b_addr);

        // B dials A from its serving port.
        let mut out = b.connect(a_addr).await.unwrap();
        assert_eq!((out.local_addr(), out.peer_addr()), (b_addr, a_addr));
        round_trip(&mut out, 100_000, 2).await;
        assert_eq!(
            accepted_rx.recv().await,
            Some(b_addr),
            "A sees B's serving port"
        );

        // A second session to the same peer on this socket would steal its datagrams.
        let again = b.connect(a_addr).await.expect_err("one session per peer");
        assert_eq!(again.kind(), ErrorKind::Io, "{again}");
        let source = std::error::Error::source(&again)
            .and_then(|e| e.downcast_ref::<io::Error>())
            .map(io::Error::kind);
        assert_eq!(source, Some(io::ErrorKind::AddrInUse), "{again}");

        // Meanwhile B still serves: a client connects to B's port and is echoed, and the
        // outgoing session keeps working beside it.
        let serving = serve_echo(b);
        let mut client = KcpStream::connect(b_addr, config()).await.unwrap();
        round_trip(&mut client, 100_000, 3).await;
        round_trip(&mut out, 50_000, 4).await;

        client.close().await.unwrap();
        out.close().await.unwrap();
        serving.abort();
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialled_sessions_are_counted_and_give_their_place_back() {
    timeout(LIMIT, async {
        let b = KcpListener::from_socket(UdpSocket::bind("127.0.0.1:0").await.unwrap(), config())
            .unwrap();
        let a = KcpListener::bind("127.0.0.1:0", config()).await.unwrap();
        let a_addr: SocketAddr = a.local_addr();
        let _a = serve_echo(a);
        let mut out = b.connect(a_addr).await.unwrap();
        round_trip(&mut out, 10_000, 5).await;
        assert_eq!(b.sessions(), 1);
        let stats = b.stats();
        assert_eq!(
            (stats.active_opens, stats.passive_opens),
            (1, 0),
            "{stats:?}"
        );
        out.close().await.unwrap();
        drop(out);
        // The session's end frees its place: the same peer can be dialled again.
        let mut again = None;
        for _ in 0..200 {
            match b.connect(a_addr).await {
                Ok(s) => {
                    again = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let mut again = again.expect("the closed session's route is released");
        round_trip(&mut again, 10_000, 6).await;
    })
    .await
    .expect("within the limit");
}

/// A listener on a dual-stack IPv6 socket dials an IPv4 peer: the session is keyed by the
/// IPv4-mapped form the socket reports answers under, so the answers reach it (instead
/// of each one opening a new accepted session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_socket_dials_ipv4_peers() {
    timeout(LIMIT, async {
        let Ok(sock) = UdpSocket::bind("[::]:0").await else {
            eprintln!("skipped: this machine has no IPv6");
            return;
        };
        let a = KcpListener::bind("127.0.0.1:0", config()).await.unwrap();
        let a_addr = a.local_addr();
        let _serving = serve_echo(a);
        let b = KcpListener::from_socket(sock, config()).unwrap();
        let mut out = b.connect(a_addr).await.unwrap();
        let SocketAddr::V4(v4) = a_addr else {
            unreachable!()
        };
        let mapped = SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port());
        assert_eq!(out.peer_addr(), mapped);
        round_trip(&mut out, 50_000, 5).await;
        assert_eq!(
            b.sessions(),
            1,
            "the answers opened no session of their own"
        );
        // The mapped form names the same peer: one session each.
        let again = b.connect(mapped).await.expect_err("one session per peer");
        assert_eq!(again.kind(), ErrorKind::Io, "{again}");
    })
    .await
    .expect("within the limit");
}

/// An IPv4 socket cannot dial an IPv6 peer: a clear error, not a session that never
/// hears back.
#[tokio::test]
async fn an_ipv4_socket_refuses_ipv6_peers() {
    let b = KcpListener::bind("127.0.0.1:0", config()).await.unwrap();
    let e = b.connect("[::1]:9").await.expect_err("IPv6 from IPv4");
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    let source = std::error::Error::source(&e)
        .and_then(|e| e.downcast_ref::<io::Error>())
        .map(io::Error::kind);
    assert_eq!(source, Some(io::ErrorKind::InvalidInput), "{e}");
}

/// One plain KCP PUSH segment (cipher `null`: no crypto header; no FEC), as in
/// docs/kcp.md.
fn push_segment(conv: u32, sn: u32, data: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(24 + data.len());
    d.extend_from_slice(&conv.to_le_bytes());
    d.push(81); // PUSH
    d.push(0); // frg
    d.extend_from_slice(&128u16.to_le_bytes()); // wnd
    d.extend_from_slice(&0u32.to_le_bytes()); // ts
    d.extend_from_slice(&sn.to_le_bytes());
    d.extend_from_slice(&0u32.to_le_bytes()); // una
    d.extend_from_slice(&(data.len() as u32).to_le_bytes());
    d.extend_from_slice(data);
    d
}

/// A session we dialled is ours: a datagram from its address that starts another
/// conversation (sn 0, a new conv), which for an accepted session means "the peer
/// restarted", is dropped instead of replacing it. Anyone can forge a source address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialled_session_is_not_replaced_by_another_conversation() {
    timeout(LIMIT, async {
        let cfg = Config::default()
            .with_crypt(nodelink_kcp::CipherKind::Null)
            .with_fec(0, 0);
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = KcpListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
        let mut out = b.connect(peer.local_addr().unwrap()).await.unwrap();
        out.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        assert!(n >= 24, "a KCP segment");
        let conv = u32::from_le_bytes(buf[..4].try_into().unwrap());
        assert_eq!(conv, out.conv());

        let dropped_before = b.stats().in_errs;
        peer.send_to(&push_segment(conv.wrapping_add(1), 0, b"evil"), from)
            .await
            .unwrap();
        peer.send_to(&push_segment(conv, 0, b"good"), from)
            .await
            .unwrap();
        let mut got = [0u8; 4];
        out.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"good");
        assert_eq!(b.stats().in_errs, dropped_before + 1);
        assert_eq!(b.sessions(), 1);
    })
    .await
    .expect("within the limit");
}

/// The caller's socket keeps the larger buffers it was given: `sockbuf` only raises.
#[tokio::test]
async fn a_callers_larger_buffers_are_kept() {
    let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // A second descriptor of the same socket, to read its options once it is handed over.
    let observer = std_sock.try_clone().unwrap();
    let s2 = socket2::SockRef::from(&std_sock);
    // Linux may cap this at net.core.rmem_max: whatever it granted must stay.
    s2.set_recv_buffer_size(16 << 20).unwrap();
    let granted = s2.recv_buffer_size().unwrap();
    std_sock.set_nonblocking(true).unwrap();
    let sock = UdpSocket::from_std(std_sock).unwrap();
    let cfg = config().with_sockbuf(16 << 10);
    let _listener = KcpListener::from_socket(sock, cfg).unwrap();
    let now = socket2::SockRef::from(&observer)
        .recv_buffer_size()
        .unwrap();
    assert_eq!(now, granted, "the caller's buffer was lowered");
}
