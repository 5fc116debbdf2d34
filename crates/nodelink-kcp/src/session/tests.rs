//! Rust-to-Rust session tests over loopback UDP.

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::time::timeout;

use super::{snmp, KcpListener, KcpStream};
use crate::crypt::CipherKind;
use crate::pipeline::{Config, Mode};
use crate::{Error, ErrorKind};

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x1234_5678u32;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}

/// A stream echo server; returns its address.
async fn echo_server(cfg: Config) -> String {
    let mut l = KcpListener::bind("127.0.0.1:0", cfg).await.unwrap();
    let addr = l.local_addr().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_echo_1mb() {
    for cfg in [
        Config::default(),
        Config::default()
            .with_fec(0, 0)
            .with_crypt(CipherKind::Salsa20)
            .with_mode(Mode::Fast3),
    ] {
        let addr = echo_server(cfg.clone()).await;
        let s = KcpStream::connect(&addr, cfg).await.unwrap();
        let sent = data(1 << 20);
        let (mut rd, mut wr) = tokio::io::split(s);
        let out = sent.clone();
        let w = tokio::spawn(async move {
            wr.write_all(&out).await.unwrap();
            wr
        });
        let mut got = vec![0u8; sent.len()];
        timeout(Duration::from_secs(20), rd.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(got == sent);
        let s = rd.unsplit(w.await.unwrap());
        let st = s.stats();
        assert_eq!(st.in_csum_errors, 0);
        assert_eq!(st.bytes_sent, 1 << 20);
        assert!(st.out_pkts > 0 && st.in_segs > 0);
    }
    let g = snmp();
    assert!(g.active_opens >= 2 && g.passive_opens >= 2 && g.out_bytes > 0);
}

#[tokio::test]
async fn message_mode_keeps_boundaries() {
    let cfg = Config::default().with_stream(false);
    let mut l = KcpListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
    let addr = l.local_addr();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                while let Ok(m) = s.recv_message().await {
                    if s.send_message(&m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut c = KcpStream::connect(addr, cfg).await.unwrap();
    let all = data(40_000);
    let sizes = [1usize, 1298, 1299, 5000, 17, 20_000, 3];
    let mut off = 0;
    for n in sizes {
        c.send_message(&all[off..off + n]).await.unwrap();
        off += n;
    }
    let mut off = 0;
    for n in sizes {
        let m = timeout(Duration::from_secs(10), c.recv_message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m, &all[off..off + n]);
        off += n;
    }
}

#[test]
fn dead_peer_is_detected() {
    // The peer runs in its own runtime, which is shut down (socket closed) mid-session.
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = Config::default()
        .with_dead_timeout(Duration::from_millis(1500))
        .with_fec(0, 0);
    let addr = server_rt.block_on(echo_server(cfg.clone()));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let s = KcpStream::connect(&addr, cfg).await.unwrap();
        let (mut rd, mut wr) = tokio::io::split(s);
        wr.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        rd.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        // A read is pending when the peer disappears.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            rd.read(&mut buf).await
        });
        server_rt.shutdown_background();
        let started = Instant::now();
        wr.write_all(&data(10_000)).await.unwrap();
        let err = timeout(Duration::from_secs(10), reader)
            .await
            .expect("the pending read must fail")
            .unwrap()
            .unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
        assert_eq!(inner.map(Error::kind), Some(ErrorKind::DeadLink), "{err:?}");
        // Later writes fail too.
        let err = wr.write_all(b"more").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    });
}

/// With write delay on, data waits for the next interval's flush but still arrives, and
/// small writes spread over time go out in far fewer datagrams than without it (where the
/// driver flushes after every write it sees).
#[tokio::test]
async fn write_delay_batches_small_writes() {
    let addr = echo_server(Config::default().with_fec(0, 0)).await;
    let mut datagrams = Vec::new();
    for delay in [false, true] {
        let cfg = Config::default().with_fec(0, 0).with_write_delay(delay);
        let mut s = KcpStream::connect(addr.clone(), cfg).await.unwrap();
        for _ in 0..50 {
            s.write_all(b"0123456789").await.unwrap();
            // Let the driver run between writes, as a real application would.
            tokio::task::yield_now().await;
        }
        let mut back = vec![0u8; 500];
        timeout(Duration::from_secs(10), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back[490..], b"0123456789");
        datagrams.push(s.stats().out_pkts);
    }
    assert!(
        datagrams[1] * 2 < datagrams[0],
        "datagrams without / with write delay: {datagrams:?}"
    );
}

#[tokio::test]
async fn read_timeout_fires() {
    let cfg = Config::default().with_read_timeout(Some(Duration::from_millis(200)));
    let addr = echo_server(cfg.clone()).await;
    let mut s = KcpStream::connect(&addr, cfg).await.unwrap();
    let mut buf = [0u8; 8];
    let err = s.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn listener_backlog_is_bounded() {
    let cfg = Config::default().with_backlog(2);
    let mut l = KcpListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
    let addr = l.local_addr();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = KcpStream::connect(addr, cfg.clone()).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = l.stats();
    assert_eq!(st.passive_opens, 2, "{st:?}");
    assert!(st.in_errs >= 2, "refused datagrams are counted: {st:?}");
    for _ in 0..2 {
        let (mut s, _) = timeout(Duration::from_secs(1), l.accept())
            .await
            .unwrap()
            .unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }
    // With room again, the refused clients get in on their retransmissions.
    for _ in 0..2 {
        timeout(Duration::from_secs(5), l.accept())
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn garbage_is_counted_and_dropped() {
    for (crypt, fec) in [(CipherKind::Aes, (10, 3)), (CipherKind::Null, (0, 0))] {
        let cfg = Config::default().with_crypt(crypt).with_fec(fec.0, fec.1);
        let mut l = KcpListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
        let addr = l.local_addr();
        let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut x = 99u32;
        let sizes = [0usize, 1, 5, 19, 20, 24, 30, 100, 1400];
        for (i, &n) in sizes.iter().enumerate() {
            let mut d: Vec<u8> = (0..n)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (x >> 16) as u8
                })
                .collect();
            if i == 8 && n >= 8 {
                // Looks like an FEC parity packet: never creates a session.
                d[4] = 0xF2;
                d[5] = 0;
            }
            raw.send_to(&d, addr).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let st = l.stats();
        assert_eq!(st.passive_opens, 0, "{crypt}: {st:?}");
        assert_eq!(st.in_pkts, sizes.len() as u64, "{crypt}: {st:?}");
        assert_eq!(
            st.in_errs + st.in_csum_errors,
            sizes.len() as u64,
            "{crypt}: {st:?}"
        );
        assert!(timeout(Duration::from_millis(100), l.accept())
            .await
            .is_err());

        // The listener still works.
        let mut c = KcpStream::connect(addr, cfg).await.unwrap();
        c.write_all(b"ok").await.unwrap();
        let (mut s, _) = timeout(Duration::from_secs(2), l.accept())
            .await
            .unwrap()
            .unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok");
    }
}

#[tokio::test]
async fn wrong_key_is_dropped_as_checksum_error() {
    let cfg = Config::default();
    let mut l = KcpListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
    let addr = l.local_addr();
    let mut c = KcpStream::connect(addr, cfg.with_key("not the key"))
        .await
        .unwrap();
    c.write_all(b"secret").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = l.stats();
    assert!(st.in_csum_errors >= 1, "{st:?}");
    assert_eq!(st.passive_opens, 0);
    assert!(timeout(Duration::from_millis(100), l.accept())
        .await
        .is_err());
}

#[tokio::test]
async fn same_address_new_conv_replaces_session() {
    use crate::pipeline::Pipeline;
    // Two pipelines with different convs sharing one UDP socket: the second starts at
    // sn 0, so it replaces the first session.
    let cfg = Config::default().with_fec(0, 0);
    let mut l = KcpListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
    let addr = l.local_addr();
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for conv in [11u32, 22] {
        let mut p = Pipeline::new(conv, &cfg).unwrap();
        p.send(b"x").unwrap();
        let mut wire = Vec::new();
        p.flush(0, |d| wire.push(d.to_vec()));
        for d in wire {
            raw.send_to(&d, addr).await.unwrap();
        }
        let (s, _) = timeout(Duration::from_secs(2), l.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.conv(), conv);
    }
}

/// One forged datagram per source port (a flood of one-shot sessions) cannot grow the
/// listener past its limits (total, or per IP address), and cannot push out a session
/// that proved itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_one_shot_sessions_are_evicted_first() {
    use crate::pipeline::Pipeline;
    let base = Config::default().with_fec(0, 0);
    for cfg in [
        base.clone()
            .with_max_sessions(4)
            .with_max_sessions_per_ip(1000),
        base.clone()
            .with_max_sessions(1000)
            .with_max_sessions_per_ip(4),
    ] {
        let mut l = KcpListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
        let addr = l.local_addr();
        let flood = |first_conv: u32| {
            let cfg = cfg.clone();
            async move {
                let mut sockets = Vec::new();
                for conv in first_conv..first_conv + 20 {
                    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    let mut p = Pipeline::new(conv, &cfg).unwrap();
                    p.send(b"forged").unwrap();
                    let mut wire = Vec::new();
                    p.flush(0, |d| wire.push(d.to_vec()));
                    raw.send_to(&wire[0], addr).await.unwrap();
                    sockets.push(raw);
                }
                sockets
            }
        };
        // Every forged datagram makes a session that reaches accept (evicted ones are
        // already reset), but no more than the limit stay.
        let _first = flood(1000).await;
        for _ in 0..20 {
            timeout(Duration::from_secs(5), l.accept())
                .await
                .unwrap()
                .unwrap();
        }
        assert!(l.sessions() <= 4, "{} sessions", l.sessions());

        // A real client proves itself (a second datagram) and is served.
        let mut c = KcpStream::connect(addr, cfg.clone()).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let (mut s, peer) = timeout(Duration::from_secs(5), l.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(peer.port(), c.local_addr().port());
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        c.write_all(b"proof").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"proof");

        // Another flood: the real session stays, the limit holds.
        let _second = flood(2000).await;
        for _ in 0..20 {
            timeout(Duration::from_secs(5), l.accept())
                .await
                .unwrap()
                .unwrap();
        }
        assert!(l.sessions() <= 4, "{} sessions", l.sessions());
        c.write_all(b"again").await.unwrap();
        timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"again");
        s.write_all(b"reply").await.unwrap();
        timeout(Duration::from_secs(5), c.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"reply");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_creation_is_rate_limited() {
    use crate::pipeline::Pipeline;
    let cfg = Config::default().with_fec(0, 0).with_session_rate(5);
    let mut l = KcpListener::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
    let addr = l.local_addr();
    // Twenty forged first datagrams at once: the burst of five becomes sessions, the rest
    // are refused and counted.
    let mut sockets = Vec::new();
    for conv in 100..120u32 {
        let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut p = Pipeline::new(conv, &cfg).unwrap();
        p.send(b"forged").unwrap();
        let mut wire = Vec::new();
        p.flush(0, |d| wire.push(d.to_vec()));
        raw.send_to(&wire[0], addr).await.unwrap();
        sockets.push(raw);
    }
    for _ in 0..5 {
        timeout(Duration::from_secs(5), l.accept())
            .await
            .unwrap()
            .unwrap();
    }
    // Each datagram is either a session or a refusal; wait until all twenty are counted.
    let counted = async {
        while l.stats().in_errs + l.stats().passive_opens < 20 {
            tokio::task::yield_now().await;
        }
    };
    timeout(Duration::from_secs(5), counted).await.unwrap();
    let st = l.stats();
    assert!(st.passive_opens <= 6, "{st:?}");
    assert!(st.in_errs >= 14, "{st:?}");

    // A real client still gets in: its retransmissions find tokens again.
    let mut c = KcpStream::connect(addr, cfg).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    let (mut s, _) = timeout(Duration::from_secs(10), l.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 5];
    timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hello");
}

/// A KCP segment as the wire carries it: conv, cmd, frg, wnd, ts, sn, una, len (little
/// endian), then the payload.
fn raw_segment(cmd: u8, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&7u32.to_le_bytes());
    s.extend_from_slice(&[cmd, 0]);
    s.extend_from_slice(&128u16.to_le_bytes());
    for w in [0u32, 3, 3, payload.len() as u32] {
        s.extend_from_slice(&w.to_le_bytes());
    }
    s.extend_from_slice(payload);
    s
}

#[test]
fn over_its_share_a_session_is_refused_data_but_not_acknowledgements() {
    use super::listener::carries_data;
    let (push, ack, wask) = (
        raw_segment(81, b"data"),
        raw_segment(82, b""),
        raw_segment(83, b""),
    );
    assert!(carries_data(&push));
    assert!(
        !carries_data(&ack),
        "an ACK drains what the session holds to send"
    );
    assert!(!carries_data(&[ack.clone(), wask].concat()));
    assert!(
        carries_data(&[ack.clone(), push].concat()),
        "data rides along"
    );
    assert!(
        carries_data(&[ack, vec![0xff; 24]].concat()),
        "malformed counts as data"
    );
}
