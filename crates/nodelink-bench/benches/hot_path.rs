//! Micro-benchmarks of nodelink's hot path, through its public API only:
//!
//! * the packet codec: [`Header`] to and from bytes, [`decode_packet`] over a buffer of 64
//!   back-to-back packets, [`ErrorMessage`] encode/decode;
//! * in memory, over `tokio::io::duplex` on a current-thread runtime: one lightweight
//!   `ask1_packet` answered by a `recv1` + `reply_packet` server, and one `send_packet` +
//!   `recv` round trip on a full connection.
//!
//! The async benches time whole batches of iterations inside one `block_on` (criterion's
//! `iter_custom`), so no per-iteration runtime entry is measured.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nodelink::{
    decode_packet, Config, ErrorCode, ErrorMessage, Header, Link, Message, Role, HEADER_LEN,
};
use tokio::runtime::Runtime;

const REQUEST_CODE: u16 = 0x0100;
const ANSWER_CODE: u16 = 0x8100;
const PACKETS: usize = 64;
const PACKET_LEN: usize = 64;

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");

    let header = Header {
        conn_id: 0x0102_0305,
        code: REQUEST_CODE,
        len: 54,
    };
    g.bench_function("header_roundtrip", |b| {
        b.iter(|| {
            let raw = black_box(&header).to_bytes();
            Header::parse(black_box(&raw)).expect("valid header")
        })
    });

    // 64 packets of 64 bytes on the wire (10-byte header + 54-byte payload).
    let mut template = BytesMut::with_capacity(PACKETS * PACKET_LEN);
    for i in 0..PACKETS {
        let payload_len = PACKET_LEN - HEADER_LEN;
        Header {
            conn_id: 2 * i as u32 + 1,
            code: REQUEST_CODE,
            len: payload_len as u32,
        }
        .put(&mut template);
        template.extend_from_slice(&[i as u8; PACKET_LEN - HEADER_LEN]);
    }
    let template = template.freeze();
    g.throughput(Throughput::Elements(PACKETS as u64));
    g.bench_function("decode_64_packets", |b| {
        let mut buf = BytesMut::with_capacity(template.len());
        b.iter(|| {
            buf.extend_from_slice(&template);
            let mut n = 0;
            while let Some(packet) = decode_packet(&mut buf).expect("valid stream") {
                black_box(&packet);
                n += 1;
            }
            assert_eq!(n, PACKETS);
        })
    });
    g.throughput(Throughput::Elements(1));

    let error = ErrorMessage::new(ErrorCode::OID_NOT_FOUND, "oid 0x00000000000004d2 not found");
    g.bench_function("error_message_encode", |b| {
        let mut buf = BytesMut::with_capacity(128);
        b.iter(|| {
            buf.clear();
            black_box(&error).encode(&mut buf);
            black_box(buf.len())
        })
    });
    let mut encoded = BytesMut::new();
    error.encode(&mut encoded);
    let encoded = encoded.freeze();
    g.bench_function("error_message_decode", |b| {
        b.iter(|| ErrorMessage::decode(black_box(encoded.clone())).expect("valid message"))
    });
    g.finish();
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A client/server link pair over an in-memory pipe.
async fn link_pair() -> (Link, Link) {
    let (a, b) = tokio::io::duplex(256 << 10);
    tokio::try_join!(
        Link::handshake(a, Role::Client, Config::default()),
        Link::handshake(b, Role::Server, Config::default()),
    )
    .expect("handshake")
}

fn in_memory(c: &mut Criterion) {
    let rt = runtime();
    let payload = Bytes::from(vec![0xa5; 64]);
    let mut g = c.benchmark_group("in_memory");

    // Lightweight mode: routing of a fresh connection id both ways, answer recycled.
    let light = rt.block_on(async {
        let (client, server) = link_pair().await;
        tokio::spawn(async move {
            while let Ok(request) = server.recv1().await {
                let payload = request.payload().clone();
                if request.reply_packet(ANSWER_CODE, payload).await.is_err() {
                    break;
                }
            }
        });
        client
    });
    g.bench_function("ask1_packet_64B", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let answer = light
                        .ask1_packet(REQUEST_CODE, payload.clone())
                        .await
                        .expect("ask1");
                    black_box(answer);
                }
                start.elapsed()
            })
        })
    });

    // Full connection: one long-lived Conn, echo served by an accepted Conn.
    let conn = rt.block_on(async {
        let (client, server) = link_pair().await;
        tokio::spawn(async move {
            while let Ok(conn) = server.accept().await {
                tokio::spawn(async move {
                    while let Ok(packet) = conn.recv().await {
                        if conn.send_packet(ANSWER_CODE, packet.payload).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        client.open().expect("new_conn")
    });
    g.bench_function("conn_send_recv_64B", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    conn.send_packet(REQUEST_CODE, payload.clone())
                        .await
                        .expect("send");
                    black_box(conn.recv().await.expect("recv"));
                }
                start.elapsed()
            })
        })
    });
    g.finish();

    rt.block_on(async {
        light.close().await;
        let link = conn.link().clone();
        drop(conn);
        link.close().await;
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = codec, in_memory
}
criterion_main!(benches);
