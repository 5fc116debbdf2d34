//! A listener's memory budget: sessions whose applications never read hold at most
//! about their share of `max_memory`, their further datagrams dropped (and counted) at
//! the demultiplexer, while a session that is read keeps working.

use std::time::Duration;

use nodelink_kcp::{CipherKind, Config, KcpListener, KcpStream, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);
const BUDGET: usize = 512 << 10;
const HOGS: usize = 3;

fn config() -> Config {
    Config::default()
        .with_crypt(CipherKind::Null)
        .with_fec(0, 0)
        .with_mode(Mode::Fast3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_nobody_reads_are_held_to_their_share() {
    timeout(LIMIT, async {
        // A large receive window: without the budget each hog session would hold 2.6 MB.
        let server = config().with_window(1024, 2048).with_max_memory(BUDGET);
        let mut listener = KcpListener::bind("127.0.0.1:0", server).await.unwrap();
        let addr = listener.local_addr();
        // Hogs: clients writing 4 MiB each to sessions whose application never reads.
        let mut writers = Vec::new();
        let mut held = Vec::new();
        for _ in 0..HOGS {
            let mut client = KcpStream::connect(addr, config()).await.unwrap();
            writers.push(tokio::spawn(async move {
                let _ = client.write_all(&vec![0x42; 4 << 20]).await;
                client
            }));
            let (session, _) = listener.accept().await.unwrap();
            held.push(session); // accepted, never read
        }
        // The budget fills, and from then on their datagrams are dropped (the second
        // condition ends the wait when nothing is dropped: the assertions below fail then).
        while listener.stats().in_errs == 0 && listener.memory_held() < 2 * BUDGET {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A session that is read still works: an echo round trip (KCP has no handshake:
        // the session is accepted once the client's first data arrives).
        let mut good = KcpStream::connect(addr, config()).await.unwrap();
        let first = vec![7u8; 20_000];
        let (accepted, written) = tokio::join!(listener.accept(), good.write_all(&first));
        written.unwrap();
        let (mut served, _) = accepted.unwrap();
        let echo = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n) = served.read(&mut buf).await {
                if n == 0 || served.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let mut back = vec![0u8; first.len()];
        good.read_exact(&mut back).await.unwrap();
        assert!(back == first);
        let mut most = listener.memory_held();
        for round in 0..20u8 {
            let msg = vec![round; 20_000];
            good.write_all(&msg).await.unwrap();
            let mut back = vec![0u8; msg.len()];
            good.read_exact(&mut back).await.unwrap();
            assert!(back == msg);
            most = most.max(listener.memory_held());
        }
        // A session under its share when the budget filled may still grow to it, and each
        // may overshoot by what its peer had in flight when it passed its share (the
        // client's send window, 128 segments).
        assert!(
            most <= 2 * BUDGET + HOGS * 128 * 1400,
            "the sessions hold {most} bytes unread for a {BUDGET}-byte budget"
        );
        assert!(listener.stats().in_errs > 0, "nothing was dropped");
        echo.abort();
        for w in writers {
            w.abort();
        }
    })
    .await
    .expect("within the limit");
}

/// What an application writes and its peer never takes counts too: echo sessions whose
/// clients never read hold their echoes unacknowledged, and past the budget such a
/// session's datagrams are dropped, so its echo stops growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_nobody_reads_count_against_the_budget() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    timeout(LIMIT, async {
        // Without the budget each echo session could queue 2 x 1024 segments (2.8 MB).
        let server = config().with_window(1024, 2048).with_max_memory(BUDGET);
        let mut listener = KcpListener::bind("127.0.0.1:0", server).await.unwrap();
        let addr = listener.local_addr();
        let echoed = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..HOGS {
            // A small receive window: what the client holds unread is small beside
            // what the server would queue.
            let mut client = KcpStream::connect(addr, config().with_window(128, 64))
                .await
                .unwrap();
            tasks.push(tokio::spawn(async move {
                let _ = client.write_all(&vec![0x42; 8 << 20]).await;
                client
            }));
            let (mut session, _) = listener.accept().await.unwrap();
            let echoed = Arc::clone(&echoed);
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = session.read(&mut buf).await {
                    if n == 0 || session.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    echoed.fetch_add(n, Ordering::Relaxed);
                }
                session
            }));
        }
        // The second condition ends the wait when nothing is dropped: the assertions
        // below fail then.
        while listener.stats().in_errs == 0 && echoed.load(Ordering::Relaxed) < 16 * BUDGET {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(listener.stats().in_errs > 0, "nothing was dropped");
        // Meanwhile a session that is read keeps working.
        let mut good = KcpStream::connect(addr, config()).await.unwrap();
        let (accepted, written) = tokio::join!(listener.accept(), good.write_all(b"hello"));
        written.unwrap();
        let (mut served, _) = accepted.unwrap();
        let mut most = echoed.load(Ordering::Relaxed);
        for round in 0..20u8 {
            served.write_all(&[round; 1000]).await.unwrap();
            let mut back = [0u8; 1000];
            good.read_exact(&mut back).await.unwrap();
            assert!(back.iter().all(|&b| b == round));
            most = most.max(echoed.load(Ordering::Relaxed));
        }
        // And later: the echoes stopped growing, they did not only lag.
        tokio::time::sleep(Duration::from_millis(500)).await;
        most = most.max(echoed.load(Ordering::Relaxed));
        // Each session may pass its share by what its client had in flight (128
        // segments) and one echo buffer; the clients hold up to twice their window.
        let bound = 2 * BUDGET + HOGS * (2 * 64 * 1400 + 128 * 1400 + (64 << 10));
        assert!(
            most <= bound,
            "{most} bytes echoed to clients that read nothing, for a {BUDGET}-byte budget"
        );
        for t in tasks {
            t.abort();
        }
    })
    .await
    .expect("within the limit");
}
