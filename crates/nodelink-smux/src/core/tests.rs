//! Unit tests of the core's bookkeeping, driven by hand (no simulator, no runtime).

use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::*;
use crate::frame::{FrameDecoder, Header};

fn server(config: &Config) -> SessionCore {
    SessionCore::new(config, false, Instant::now())
}

fn feed(core: &mut SessionCore, cmd: Cmd, sid: u32, payload: &[u8]) {
    let header = Header {
        version: core.version,
        cmd,
        len: payload.len(),
        sid,
    };
    core.on_frame(header, payload, Instant::now()).unwrap();
}

/// The frames of one batch.
fn batch(core: &mut SessionCore) -> Vec<Frame> {
    let mut out = BytesMut::new();
    core.write_transmit(&mut out);
    let mut dec = FrameDecoder::new(core.version);
    let mut frames = Vec::new();
    while let Some(frame) = dec.decode(&mut out).unwrap() {
        frames.push(frame);
    }
    frames
}

/// The FINs of one batch, by stream id.
fn batch_fins(core: &mut SessionCore) -> Vec<u32> {
    batch(core)
        .into_iter()
        .filter(|f| f.cmd == Cmd::Fin)
        .map(|f| f.sid)
        .collect()
}

fn encoded(frame: Frame) -> BytesMut {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    out
}

fn events(core: &mut SessionCore) -> Vec<Event> {
    std::iter::from_fn(|| core.poll_event()).collect()
}
#[test]
fn only_refusals_count_against_the_refusal_cap() {
    let config = Config {
        accept_backlog: 1,
        ..Config::default()
    };
    let mut core = server(&config);
    feed(&mut core, Cmd::Syn, 1, &[]);
    feed(&mut core, Cmd::Syn, 3, &[]);
    assert_eq!(core.refusals, 1);
    // A reset's FIN is not a refusal: queuing and sending it leaves the count alone.
    core.reset_stream(1, "test");
    assert_eq!(core.refusals, 1);
    // The reset stream left the accept queue: the next SYN fills it again.
    feed(&mut core, Cmd::Syn, 5, &[]);
    let refused: Vec<u32> = (0..REFUSAL_QUEUE_LIMIT as u32 + 10)
        .map(|i| 7 + 2 * i)
        .collect();
    for &sid in &refused {
        feed(&mut core, Cmd::Syn, sid, &[]);
    }
    assert_eq!(core.refusals, REFUSAL_QUEUE_LIMIT);
    let fins = batch_fins(&mut core);
    // The first refusal, the reset, then refusals up to the cap.
    assert_eq!(fins.len(), 1 + REFUSAL_QUEUE_LIMIT);
    assert_eq!(&fins[..2], &[3, 1]);
    assert_eq!(core.refusals, 0);
    assert_eq!(core.stats.syns_refused, 1 + refused.len() as u64);
}

#[test]
fn over_limit_count_follows_every_change() {
    let config = Config {
        max_stream_buffer: 16,
        max_receive_buffer: 1024,
        ..Config::default()
    };
    let mut core = server(&config);
    let now = Instant::now();
    for sid in [1, 3, 5] {
        feed(&mut core, Cmd::Syn, sid, &[]);
        assert_eq!(core.accept().unwrap(), Some(sid));
    }
    // Exactly at the bound is not over it.
    feed(&mut core, Cmd::Psh, 1, &[0; 16]);
    assert_eq!(core.over_limit, 0);
    assert_eq!(core.relieve(now), None);
    feed(&mut core, Cmd::Psh, 1, &[0; 4]);
    feed(&mut core, Cmd::Psh, 3, &[0; 30]);
    feed(&mut core, Cmd::Psh, 5, &[0; 40]);
    assert_eq!(core.over_limit, 3);
    assert!(core.relieve(now).is_some());

    // Reading below the bound, a reset and a drop each take one stream off.
    let mut buf = [0u8; 8];
    assert!(matches!(core.read(1, &mut buf, now), Poll::Ready(Ok(8))));
    assert_eq!(core.over_limit, 2);
    core.reset_stream(3, "test");
    assert_eq!(core.over_limit, 1);
    assert!(core.relieve(now).is_some());
    core.drop_stream(5);
    assert_eq!(core.over_limit, 0);
    assert_eq!(core.relieve(now), None);
    assert_eq!(core.buffered, 12);
}

#[test]
fn keepalive_pings_on_the_interval_and_silence_kills() {
    let config = Config::default()
        .with_keep_alive_interval(Duration::from_secs(10))
        .with_keep_alive_timeout(Duration::from_secs(30));
    let t0 = Instant::now();
    let mut core = SessionCore::new(&config, true, t0);
    assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    core.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(
        batch(&mut core).iter().map(|f| f.cmd).collect::<Vec<_>>(),
        [Cmd::Nop]
    );
    // A frame at 25 s moves the silence deadline to 55 s; pings go on every 10 s.
    assert_eq!(
        core.handle_input(&encoded(Frame::nop(1)), t0 + Duration::from_secs(25)),
        8
    );
    for s in [20, 30, 40, 50] {
        core.handle_timeout(t0 + Duration::from_secs(s));
        assert!(core.death().is_none(), "alive at {s} s");
    }
    assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_secs(55)));
    core.handle_timeout(t0 + Duration::from_secs(55));
    assert_eq!(core.death().map(Error::kind), Some(ErrorKind::Timeout));
    assert!(events(&mut core).contains(&Event::Closed));
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn a_paused_reader_suspends_the_silence_timeout() {
    let config = Config::default()
        .with_max_stream_buffer(16)
        .with_max_receive_buffer(1024);
    let t0 = Instant::now();
    let mut core = SessionCore::new(&config, false, t0);
    feed(&mut core, Cmd::Syn, 1, &[]);
    feed(&mut core, Cmd::Psh, 1, &[0; 17]);
    assert!(!core.may_read(t0));
    assert!(events(&mut core).contains(&Event::Rearm));
    // Stalled past the verdict: the stream is reset and reading resumes.
    let stall = config.stall_timeout;
    assert_eq!(core.poll_timeout(), Some(t0 + stall));
    // Long silences while paused do not kill the session.
    core.handle_timeout(t0 + Duration::from_secs(60));
    assert!(core.death().is_none());
    assert_eq!(core.stats().streams_reset, 1);
    assert!(events(&mut core).contains(&Event::Resume));
    assert!(core.may_read(t0 + Duration::from_secs(60)));
    // The silence is measured from when reading resumed.
    core.handle_timeout(t0 + Duration::from_secs(89));
    assert!(core.death().is_none());
    core.handle_timeout(t0 + Duration::from_secs(90));
    assert_eq!(core.death().map(Error::kind), Some(ErrorKind::Timeout));
}

#[test]
fn held_back_by_the_shared_budget_one_stalled_stream_is_reset_per_verdict() {
    let config = Config::default();
    let t0 = Instant::now();
    let mut core = SessionCore::new(&config, false, t0);
    for sid in [1, 3, 5] {
        feed(&mut core, Cmd::Syn, sid, &[]);
        feed(&mut core, Cmd::Psh, sid, &[0; 100]);
    }
    core.set_over_budget(true, t0);
    assert!(!core.may_read(t0), "held back by the budget");
    let verdict = t0 + config.stall_timeout;
    core.set_over_budget(true, verdict);
    assert!(
        core.may_read(verdict),
        "one reset, then the driver judges afresh"
    );
    assert_eq!(core.stats().streams_reset, 1, "not every stalled stream");
    core.set_over_budget(true, verdict);
    assert!(!core.may_read(verdict), "still over: a new pause");
    assert_eq!(core.stats().streams_reset, 1);
    let next = verdict + config.stall_timeout;
    core.set_over_budget(true, next);
    assert!(core.may_read(next));
    assert_eq!(
        core.stats().streams_reset,
        2,
        "the next verdict, the next stream"
    );
}

#[test]
fn a_wait_ends_with_exactly_one_event() {
    let config = Config::default();
    let now = Instant::now();
    let mut core = server(&config);
    feed(&mut core, Cmd::Syn, 1, &[]);
    assert_eq!(core.accept().unwrap(), Some(1));
    let _ = events(&mut core);
    let mut buf = [0u8; 4];
    assert!(core.read(1, &mut buf, now).is_pending());
    assert!(core.read(1, &mut buf, now).is_pending());
    feed(&mut core, Cmd::Psh, 1, b"ab");
    feed(&mut core, Cmd::Psh, 1, b"cd");
    assert_eq!(events(&mut core), [Event::Readable(1)]);
    assert!(matches!(core.read(1, &mut buf, now), Poll::Ready(Ok(4))));
    // Nobody waits now: data arriving emits nothing for the stream.
    feed(&mut core, Cmd::Psh, 1, b"e");
    assert_eq!(events(&mut core), []);
}

#[test]
fn v2_writes_after_the_peers_fin_give_up_without_window() {
    let config = Config::default().with_version(2);
    let t0 = Instant::now();
    let mut core = server(&config);
    feed(&mut core, Cmd::Syn, 1, &[]);
    assert_eq!(core.accept().unwrap(), Some(1));
    // The peer grants no window at all, then closes.
    let mut upd = Vec::new();
    upd.extend_from_slice(&0u32.to_le_bytes());
    upd.extend_from_slice(&0u32.to_le_bytes());
    feed(&mut core, Cmd::Upd, 1, &upd);
    feed(&mut core, Cmd::Fin, 1, &[]);
    assert!(matches!(core.write(1, b"data", t0), Poll::Ready(Ok(4))));
    let _ = batch(&mut core);
    assert!(core.flush(1, t0).is_pending());
    let _ = events(&mut core);
    assert_eq!(core.poll_timeout(), Some(t0 + config.stall_timeout));
    core.handle_timeout(t0 + config.stall_timeout);
    assert_eq!(events(&mut core), [Event::Transmit, Event::Writable(1)]);
    match core.flush(1, t0 + config.stall_timeout) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), ErrorKind::StreamReset),
        other => panic!("flush after giving up: {other:?}"),
    }
}

#[test]
fn a_graceful_close_refuses_new_work_sends_fins_and_is_then_done() {
    let config = Config::default().with_linger(Duration::MAX);
    let now = Instant::now();
    let mut core = SessionCore::new(&config, false, now);
    feed(&mut core, Cmd::Syn, 1, &[]);
    feed(&mut core, Cmd::Syn, 3, &[]);
    assert_eq!(core.accept().unwrap(), Some(1));
    assert!(matches!(core.write(1, b"queued", now), Poll::Ready(Ok(6))));
    core.close(now);
    // No deadline for a linger too long to count, and no panic either.
    assert_eq!(core.poll_timeout(), Some(now + Duration::from_secs(10)));
    assert!(events(&mut core).contains(&Event::Incoming));
    assert_eq!(core.accept().unwrap_err().kind(), ErrorKind::SessionClosed);
    assert_eq!(core.open().unwrap_err().kind(), ErrorKind::SessionClosed);
    match core.write(1, b"late", now) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), ErrorKind::SessionClosed),
        other => panic!("write while closing: {other:?}"),
    }
    assert!(!core.close_done());
    let frames = batch(&mut core);
    let summary: Vec<(Cmd, u32)> = frames.iter().map(|f| (f.cmd, f.sid)).collect();
    // The unaccepted stream is refused; the accepted one sends its data, then its FIN.
    assert_eq!(summary, [(Cmd::Fin, 3), (Cmd::Psh, 1), (Cmd::Fin, 1)]);
    assert!(core.close_done());
    // A refusal is not a reset.
    assert_eq!(core.stats().streams_reset, 0);
    // A peer opening a stream while we close is refused the same way.
    feed(&mut core, Cmd::Syn, 5, &[]);
    assert_eq!(batch_fins(&mut core), [5]);
    assert_eq!(core.accept().unwrap_err().kind(), ErrorKind::SessionClosed);
    assert_eq!(core.stats().syns_refused, 1);
    assert!(core.close_done());
}
