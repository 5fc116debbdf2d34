//! The accept loop's ordering guarantee towards the scavenger, checked step by step on a
//! single-threaded runtime so the order of tasks is under the test's control.

use super::*;

/// A client's shared state dialling `remote` (nothing needs to answer: KCP has no
/// handshake and smux does not wait for the peer to open a stream).
fn shared(remote: SocketAddr) -> Arc<Shared> {
    let config = Config::default()
        .with_target(remote.to_string())
        .with_conn(1)
        .with_autoexpire(Duration::from_secs(60))
        .with_scavengettl(Duration::from_secs(600))
        .with_quiet(true);
    let checked = config.validate().unwrap();
    Arc::new(Shared {
        stats: StatsHandle::default(),
        remote: normalize_addr(&checked.target, false),
        config,
        checked,
        stop: CancellationToken::new(),
        tasks: TaskTracker::new(),
        warn_limit: WarnLimiter::new(),
    })
}

/// Connection N takes session S, connection N+1 finds S expired and hands it to the
/// scavenger. However the runtime orders the scavenger and N's task, S must not be closed
/// under N: N's stream is counted by S before the loop moves on. (When the stream was
/// opened inside N's task, the scavenger could run first, count 0 streams and close S,
/// and N failed with "cannot open a stream".)
#[tokio::test(flavor = "current_thread")]
async fn expired_session_keeps_the_stream_the_loop_gave_it() {
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let shared = shared(peer.local_addr().unwrap());
    // Sessions expire as soon as they are made: the second connection finds the first
    // one's session expired.
    let mut pool = Pool::new(1, Some(Duration::ZERO), Duration::from_secs(600));
    let who: SocketAddr = "127.0.0.1:1".parse().unwrap();

    // Connection N: the loop opens its stream on S. Its task is not spawned (the worst
    // case: it has not run at all yet).
    let Opened::Stream(first) = open(&shared, &mut pool, 0, who).await else {
        panic!("no stream on a fresh session");
    };
    let s = pool.peek(0).unwrap().clone();
    assert_eq!(s.num_streams(), 1, "the stream was not opened by the loop");

    // S expires; connection N+1 hands it to the scavenger and gets a new session.
    let Opened::Stream(second) = open(&shared, &mut pool, 0, who).await else {
        panic!("no stream on the new session");
    };
    assert!(!pool.peek(0).unwrap().is_closed());

    // Let the scavenger run (it checks at once, then every second).
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !s.is_closed(),
        "the scavenger closed a session with a live stream"
    );

    // Once N's stream is gone, the scavenger does close S.
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), s.closed())
        .await
        .expect("the scavenger did not close the idle expired session");
    assert_eq!(shared.stats.stats().streams_failed, 0);

    drop(second);
    shared.stop.cancel();
    shared.tasks.close();
    tokio::time::timeout(Duration::from_secs(10), shared.tasks.wait())
        .await
        .unwrap();
}
