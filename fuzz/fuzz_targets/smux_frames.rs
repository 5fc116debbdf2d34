//! Feeds arbitrary bytes to the smux frame decoder in arbitrary pieces, as reads would
//! deliver them, and checks that it never panics, that every accepted frame obeys the
//! layout rules and re-encodes to exactly the bytes it was decoded from. The same bytes are
//! then played into a live server session (with an accepting, reading application) to
//! check that the session's state machine survives them too.
#![no_main]

use nodelink_smux::Role;
use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nodelink_smux::frame::{Cmd, FrameDecoder, HEADER_LEN, MAX_PAYLOAD_LEN, UPD_PAYLOAD_LEN};
use nodelink_smux::{Config, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte: read size and protocol version.
    let Some((&control, stream)) = data.split_first() else { return };
    let step = usize::from(control >> 1).max(1);
    let version = 1 + (control & 1);

    let mut decoder = FrameDecoder::new(version);
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    'feed: for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= MAX_PAYLOAD_LEN);
                    assert_eq!(frame.version, version);
                    match frame.cmd {
                        Cmd::Syn | Cmd::Fin | Cmd::Nop => assert!(frame.payload.is_empty()),
                        Cmd::Upd => {
                            assert_eq!(frame.payload.len(), UPD_PAYLOAD_LEN);
                            assert!(frame.upd_fields().is_some());
                        }
                        Cmd::Psh => {}
                    }
                    let mut wire = BytesMut::new();
                    frame.encode(&mut wire);
                    assert_eq!(&wire[..], &before[..wire.len()]);
                    consumed += HEADER_LEN + frame.payload.len();
                }
                Ok(None) => {
                    assert_eq!(buf, before);
                    break;
                }
                Err(_) => break 'feed,
            }
        }
    }
    assert!(consumed <= stream.len());

    let bytes = stream.to_vec();
    runtime().block_on(async move {
        let (a, mut raw) = tokio::io::duplex(1 << 16);
        let config = Config::default()
            .with_version(version)
            .with_keep_alive_disabled(true)
            .with_accept_backlog(8)
            .with_max_stream_buffer(4096)
            .with_max_receive_buffer(16384)
            .with_stall_timeout(std::time::Duration::from_millis(1));
        let server = Session::start(a, Role::Server, config).expect("valid config");
        let app = {
            let server = server.clone();
            tokio::spawn(async move {
                while let Ok(mut s) = server.accept().await {
                    let mut buf = [0u8; 512];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(b"reply").await;
                }
            })
        };
        let _ = raw.write_all(&bytes).await;
        drop(raw);
        server.closed().await;
        let _ = app.await;
        assert_eq!(server.num_streams(), 0);
    });
});
