//! Runs a real link (server role, in-memory stream) against a peer that completes the
//! version handshake and then sends arbitrary bytes. The link must route or reject every
//! packet without panicking, keep its bookkeeping consistent, and end cleanly at EOF.
//!
//! Input layout: byte 0 selects options (flow control, whether the application accepts and
//! reads connections or closes accept, the dialect; a tiny budget and backlog always); the
//! rest is the byte stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodelink::{Config, Dialect, Link, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    let Some((&options, stream)) = data.split_first() else { return };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(options, stream));
});

async fn run(options: u8, stream: &[u8]) {
    let dialect = if options & 4 != 0 {
        Dialect::NeoPy
    } else {
        Dialect::NeoGo
    };
    let config = Config::default()
        .with_dialect(dialect)
        .with_flow_control(options & 1 != 0)
        .with_conn_recv_budget(0) // raised to the minimum: overflows are reachable
        .with_accept_backlog(4)
        .with_max_keep_closed(8);
    let accept = options & 2 != 0;
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let link = tokio::spawn(Link::handshake(theirs, Role::Server, config));
    let (mut rd, mut wr) = tokio::io::split(ours);
    // Drain whatever the link sends back so it never blocks on a full pipe.
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 1 << 16];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    wr.write_all(&6u32.to_be_bytes()).await.expect("write version");
    let link = link.await.expect("join").expect("handshake with the right version");
    if !accept {
        // A full backlog pauses reading until the application accepts; an application that
        // never accepts says so, and new connections are refused instead.
        link.close_accept();
    }
    let app = accept.then(|| {
        let link = link.clone();
        tokio::spawn(async move {
            if dialect == Dialect::NeoPy {
                // One request, one answer: no full connections in this dialect.
                while let Ok(req) = link.recv1().await {
                    let (code, payload) = (req.code() | 0x8000, req.payload().clone());
                    let _ = req.reply_packet(code, payload).await;
                }
                return;
            }
            while let Ok(conn) = link.accept().await {
                // Read one packet, answer it, then close: exercises close records.
                if let Ok(p) = conn.recv().await {
                    let _ = conn.send_packet(p.code | 0x8000, p.payload).await;
                }
            }
        })
    });
    let _ = wr.write_all(stream).await;
    let _ = wr.shutdown().await;
    link.closed().await;
    assert!(link.is_closed());
    let open = link.stats().open_conns;
    assert_eq!(open, 0, "connections left open after the link ended");
    if let Some(app) = app {
        let _ = app.await;
    }
    drop(link);
    let _ = drain.await;
}
