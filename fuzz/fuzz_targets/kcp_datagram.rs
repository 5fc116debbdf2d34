//! The KCP datagram input path fed arbitrary datagrams: decryption and checksum, FEC
//! decoding (with recovery), KCP input, then reading and flushing. Nothing may panic, and
//! every bad datagram must come back as an error.
//!
//! Input layout: byte 0 selects the cipher (most inputs use "null", which has no checksum,
//! so the fuzzer reaches the FEC and KCP parsers) and whether FEC is configured; the rest
//! is a sequence of `u16 LE length | datagram` records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodelink_kcp::core::Kcp;
use nodelink_kcp::crypt::{derive_key, CipherKind, DatagramCrypto};
use nodelink_kcp::fec::{is_fec, FecDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&options, mut rest)) = data.split_first() else { return };
    let kind = if options & 0x80 == 0 {
        CipherKind::Null
    } else {
        CipherKind::ALL[usize::from(options & 0x0f) % CipherKind::ALL.len()]
    };
    let crypto = DatagramCrypto::new(kind, &derive_key_once()).expect("every cipher builds");
    let mut fec = if options & 0x40 != 0 {
        FecDecoder::new(3, 2).expect("valid shards")
    } else {
        FecDecoder::auto()
    };
    let conv = 0x0102_0304;
    let mut kcp = Kcp::new(conv);
    kcp.set_stream(options & 0x20 != 0);
    let mut now = 0u32;
    let mut buf = [0u8; 4096];
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let mut datagram = rest[2..2 + len].to_vec();
        rest = &rest[2 + len..];
        now = now.wrapping_add(17);
        let Ok(payload) = crypto.open(&mut datagram) else { continue };
        if is_fec(payload) {
            if let Ok(decoded) = fec.decode(payload) {
                if let Some(regular) = decoded.regular {
                    let _ = kcp.input(regular, now, true);
                }
                for recovered in &decoded.recovered {
                    let _ = kcp.input(recovered, now, false);
                }
            }
        } else {
            let _ = kcp.input(payload, now, true);
        }
        while let Ok(Some(_)) = kcp.recv(&mut buf) {}
        kcp.update(now, |out| assert!(out.len() <= kcp_mtu_bound()));
    }
});

fn derive_key_once() -> [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| derive_key("it's a secrect"))
}

/// kcp-go's default MTU: no datagram KCP emits may exceed it.
fn kcp_mtu_bound() -> usize {
    1400
}
