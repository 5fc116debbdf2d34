//! Tests of the datagram ciphers: round trips, tampering, fuzzed input, and vectors computed
//! independently in Python (see the comments on each constant).

use super::*;

/// `derive_key("it's a secrect")` computed with Python (also printed by `testdata/gen_vectors.py`):
/// `hashlib.pbkdf2_hmac('sha1', b"it's a secrect", b'kcp-go', 4096, 32).hex()`.
const DEFAULT_PASS_HEX: &str = "25d7d7bd51050742d8d791f2b653c6c8b2366b7e25a124cf7a2e12eaf4ffa444";
/// `derive_key("")`, same Python expression with an empty password.
const EMPTY_PASS_HEX: &str = "b23383c32eefa3753ab6db6e639a0ddc3b50ec6b6c623c9171a15ba0879945cd";
/// First 16 and last 16 bytes of the xor pad for the default pass, from Python's
/// `hashlib.pbkdf2_hmac('sha1', pass, b'sH3CIVoF#rWLtJo6', 32, 1500)`.
const XOR_PAD_HEAD_HEX: &str = "0ffe8987ad94757154791bc8fa01b62c";
const XOR_PAD_TAIL_HEX: &str = "df44607871b19a362f7640db6a160114";

/// Whole sealed datagrams for pass = `derive_key("it's a secrect")`, nonce = 10 11 .. 1f
/// (first 12 bytes for GCM, none for null) and payload byte i = (7 i + 3) mod 256, 45 bytes
/// (65-byte datagram: a final partial block for both block sizes).
///
/// Produced by `testdata/gen_vectors.py` (python3), independently of this crate: CRC with
/// `zlib.crc32`; CFB with pyca/cryptography (OpenSSL) `modes.CFB` for aes, aes-128, aes-192,
/// sm4, 3des, cast5 and blowfish; CFB-64 over a pure-Python TEA-16/XTEA for tea/xtea (the
/// same reference as the block vectors in `tea.rs`); a pure-Python Salsa20/20 (checked against
/// the eSTREAM set 1 vector 0, e3be8fdd...) for salsa20; `AESGCM` for aes-128-gcm. No
/// independent twofish implementation was at hand, so twofish has no vector here.
const GOLDEN: &[(&str, &str)] = &[
    ("aes", "96935353234b069cb901af485a15e980b501f73c010beb3e614a23424723a8e6646aa763277ee342782f22e6f68864387b414061b3d4ffe4249be8bf534a482929"),
    ("aes-128", "cdc7f0b7880bb3f2b7e6c50f3a36730860c051e3ae935e07a71b2cfdac33bb8feaa5298dee99e8daaa353dd9a9cd57116ae40a774bfa982e2e98efc66e27c741b4"),
    ("aes-192", "a9cb49e7cd0bde5932954fa7e8e8f271aabd22e604b2fca2dcd54deadf292edfdf4a32da89d132ed2894fa934a030efa1d1e44921b4540229fa987d64ca95c08c9"),
    ("sm4", "1350f45fc933ab3249f365b7bb7ef55d0d52f9f5cc24a3a5730b88ba8b7aa988b707452c2db2e17ad0b2abf3f350f28827a863d7306e13cb22c256524d7db61069"),
    ("3des", "4dda4d5fbc9f7adc6fb1455e928898e1a1b229513869ab7681bde274d87b7405dc35a665be9952a62d0ce630a900cb20e78806ff8d4dc144b2d82e2f74725e98b1"),
    ("cast5", "ab9f9d3219f0030c478e3167f43f23f015e4e1186d738f9b121ce04a0818c250ca7c433f631f8bd053d59216572650f454864c0014492a8b1b468f51964358f5f2"),
    ("blowfish", "087787204106154e235e57435d1f212fd72b7ab0986338fdb74b5f908c1fc14b3013f690b77de1f84732142047f6e51164449895d2dc3c91beab172e722165d94c"),
    ("tea", "ec8c5ea4b8f9403bb7e4ee3ea6609f848bae94aa5ea0ab5a4bfe5f9e37509dfcacb7d1a6780a08f4249dc2b92acf448414eda213897f8592c30062e71c62ceeac7"),
    ("xtea", "19357999539deb4a34c30c1fee5a4708c216bcbc9c9bd270e13c91d4ede7a53bf8d42daec37bd1edc9639545cc655aff8acefaaabbea13b94fab939064b5e9429d"),
    ("salsa20", "10111213141516174f33858fc8a7b9cabcb9ab59867e5e14c1028ec946894a164ede07a63803c0f99a79beb2d90847b2d824d1d0fcd466734ec63faa356f3c90e7"),
    ("xor", "1fef9b94b98163664c6001d3e61ca833253fda5ab19f510bd27412882438e5dca7f1035334e192c6aa364d53359d83c228710b9f10e4d158062551d2501f3d5f91"),
    ("none", "101112131415161718191a1b1c1d1e1f4ef1db5c030a11181f262d343b424950575e656c737a81888f969da4abb2b9c0c7ced5dce3eaf1f8ff060d141b22293037"),
    ("null", "030a11181f262d343b424950575e656c737a81888f969da4abb2b9c0c7ced5dce3eaf1f8ff060d141b22293037"),
    ("aes-128-gcm", "101112131415161718191a1b4a9191b9ece5a3c49a6b7052c7d5cc74e494e162c072f33ba2c9b7fc2dcb42bdd43402a16b432bec525f60b4478da9acb11e685d2ba6814e348ad728e9"),
];

const ROUND_TRIP_LENS: [usize; 9] = [0, 1, 7, 8, 15, 16, 17, 1000, 1400];

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn default_pass() -> [u8; 32] {
    derive_key("it's a secrect")
}

/// A deterministic, non-trivial payload.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// `header_len()` zero bytes then the payload: what the session layer hands to `seal`.
fn framed(crypto: &DatagramCrypto, payload: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0u8; crypto.header_len()];
    datagram.extend_from_slice(payload);
    datagram
}

fn all_cryptos(pass: &[u8; 32]) -> Vec<DatagramCrypto> {
    CipherKind::ALL
        .iter()
        .map(|&kind| DatagramCrypto::new(kind, pass).unwrap())
        .collect()
}

/// Bytes of a sealed datagram whose modification `open` cannot notice: the CRC covers bytes
/// `[20..]` only, so the nonce is protected only where the cipher carries a change in it into
/// later bytes. With CFB a flipped ciphertext byte garbles the *next* block: for 16-byte blocks
/// that block holds the CRC, for 8-byte blocks the second half of the nonce. Salsa20's bytes
/// `[0..8]` are its nonce (changing it changes the whole key stream) but `[8..16]` are a plain
/// XOR; xor and none do not propagate at all. GCM authenticates everything; null nothing.
fn unprotected(kind: CipherKind, len: usize) -> std::ops::Range<usize> {
    match kind {
        CipherKind::Blowfish
        | CipherKind::Cast5
        | CipherKind::TripleDes
        | CipherKind::Tea
        | CipherKind::Xtea => 0..8,
        CipherKind::Salsa20 => 8..16,
        CipherKind::Xor | CipherKind::None => 0..16,
        CipherKind::Null => 0..len,
        _ => 0..0,
    }
}

#[test]
fn derive_key_matches_python_and_pbkdf2() {
    let pass = default_pass();
    assert_eq!(pass.as_slice(), hex(DEFAULT_PASS_HEX).as_slice());
    let direct = pbkdf2::pbkdf2_hmac_array::<sha1::Sha1, 32>(b"it's a secrect", b"kcp-go", 4096);
    assert_eq!(pass, direct);
    assert_eq!(derive_key("").as_slice(), hex(EMPTY_PASS_HEX).as_slice());
}

#[test]
fn xor_pad_matches_python() {
    let pad = xor_pad(&default_pass());
    assert_eq!(&pad[..16], hex(XOR_PAD_HEAD_HEX).as_slice());
    assert_eq!(&pad[XOR_PAD_LEN - 16..], hex(XOR_PAD_TAIL_HEX).as_slice());
}

#[test]
fn names_parse_and_display() {
    let names = [
        "aes",
        "aes-128",
        "aes-192",
        "salsa20",
        "blowfish",
        "twofish",
        "cast5",
        "3des",
        "tea",
        "xtea",
        "sm4",
        "xor",
        "none",
        "null",
        "aes-128-gcm",
    ];
    assert_eq!(names.len(), CipherKind::ALL.len());
    for (kind, name) in CipherKind::ALL.iter().zip(names) {
        assert_eq!(kind.to_string(), name);
        assert_eq!(name.parse::<CipherKind>().unwrap(), *kind);
    }
    assert_eq!(CipherKind::default(), CipherKind::Aes);
    for bad in ["", "AES", "aes256", "chacha20", "aes-128-gcm "] {
        match bad.parse::<CipherKind>() {
            Err(e) if e.kind() == crate::ErrorKind::Config => {
                let msg = e.to_string();
                for name in names {
                    assert!(msg.contains(name), "{msg:?} lacks {name}");
                }
            }
            other => panic!("{bad:?} parsed as {other:?}"),
        }
    }
}

#[test]
fn header_and_trailer_lengths() {
    for crypto in all_cryptos(&default_pass()) {
        let (h, t) = match crypto.kind() {
            CipherKind::Null => (0, 0),
            CipherKind::Aes128Gcm => (12, 16),
            _ => (20, 0),
        };
        assert_eq!(
            (crypto.header_len(), crypto.trailer_len()),
            (h, t),
            "{}",
            crypto.kind()
        );
        assert_eq!(crypto.overhead(), h + t);
    }
}

#[test]
fn golden_datagrams_match_python() {
    let pass = default_pass();
    let nonce: Vec<u8> = (0x10..0x20).collect();
    let payload: Vec<u8> = (0..45u32).map(|i| ((i * 7 + 3) & 0xff) as u8).collect();
    assert_eq!(GOLDEN.len(), CipherKind::ALL.len() - 1, "all but twofish");
    for (name, expected) in GOLDEN {
        let crypto = DatagramCrypto::new(name.parse().unwrap(), &pass).unwrap();
        let mut datagram = framed(&crypto, &payload);
        crypto.seal_with_nonce(&mut datagram, &nonce[..crypto.kind().nonce_len()]);
        assert_eq!(datagram, hex(expected), "{name}");
        assert_eq!(
            crypto.open(&mut datagram).unwrap(),
            payload.as_slice(),
            "{name}"
        );
    }
}

#[test]
fn round_trip_every_cipher_and_length() {
    let pass = default_pass();
    for crypto in all_cryptos(&pass) {
        for len in ROUND_TRIP_LENS {
            let payload = pattern(len, len as u8);
            let plain = framed(&crypto, &payload);
            let mut datagram = plain.clone();
            crypto.seal(&mut datagram);
            assert_eq!(datagram.len(), crypto.overhead() + len);
            if crypto.kind() != CipherKind::Null {
                // A random nonce was written, and (except for none) everything after it encrypted.
                assert_ne!(datagram, plain, "{} {len}", crypto.kind());
            }
            if !matches!(crypto.kind(), CipherKind::None | CipherKind::Null) && len >= 8 {
                let h = crypto.header_len();
                assert_ne!(
                    &datagram[h..h + len],
                    payload.as_slice(),
                    "{}",
                    crypto.kind()
                );
            }
            let opened = crypto.open(&mut datagram).unwrap();
            assert_eq!(opened, payload.as_slice(), "{} {len}", crypto.kind());
        }
    }
}

#[test]
fn seal_uses_a_fresh_random_nonce_and_no_carried_state() {
    let pass = default_pass();
    for crypto in all_cryptos(&pass) {
        let payload = pattern(100, 7);
        let mut a = framed(&crypto, &payload);
        let mut b = a.clone();
        crypto.seal(&mut a);
        crypto.seal(&mut b);
        if crypto.kind() != CipherKind::Null {
            assert_ne!(a, b, "{}: two seals gave the same datagram", crypto.kind());
        }
        // Same nonce twice: identical output, so nothing leaks from one datagram to the next.
        let nonce = vec![0xA5; crypto.kind().nonce_len()];
        let mut c = framed(&crypto, &payload);
        let mut d = c.clone();
        crypto.seal_with_nonce(&mut c, &nonce);
        crypto.seal_with_nonce(&mut d, &nonce);
        assert_eq!(c, d, "{}", crypto.kind());
    }
}

#[test]
fn tampering_is_detected_except_in_the_unprotected_nonce_bytes() {
    let pass = default_pass();
    for (k, crypto) in all_cryptos(&pass).iter().enumerate() {
        let kind = crypto.kind();
        for len in [0usize, 1, 17, 61] {
            let payload = pattern(len, 99);
            let nonce: Vec<u8> = (0..kind.nonce_len())
                .map(|i| (i * 13 + k * 5 + len) as u8)
                .collect();
            let mut sealed = framed(crypto, &payload);
            crypto.seal_with_nonce(&mut sealed, &nonce);
            let free = unprotected(kind, sealed.len());
            for pos in 0..sealed.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = sealed.clone();
                    bad[pos] ^= flip;
                    let result = crypto.open(&mut bad);
                    if free.contains(&pos) {
                        if kind == CipherKind::Null {
                            // No integrity at all: the corrupted bytes pass through.
                            assert_eq!(result.unwrap()[pos], payload[pos] ^ flip);
                        } else {
                            assert_eq!(result.unwrap(), payload.as_slice(), "{kind} {pos}");
                        }
                    } else {
                        assert!(
                            matches!(&result, Err(e) if e.kind() == crate::ErrorKind::Checksum),
                            "{kind}: len {len}, byte {pos} ^ {flip:#x} not detected"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn wrong_key_fails() {
    let good = default_pass();
    let other = derive_key("another key");
    for kind in CipherKind::ALL {
        let sender = DatagramCrypto::new(kind, &good).unwrap();
        let receiver = DatagramCrypto::new(kind, &other).unwrap();
        let payload = pattern(200, 3);
        let mut datagram = framed(&sender, &payload);
        sender.seal(&mut datagram);
        let result = receiver.open(&mut datagram);
        if matches!(kind, CipherKind::None | CipherKind::Null) {
            assert_eq!(result.unwrap(), payload.as_slice(), "{kind} has no key");
        } else {
            assert!(
                matches!(&result, Err(e) if e.kind() == crate::ErrorKind::Checksum),
                "{kind}"
            );
        }
    }
}

#[test]
fn short_datagrams_are_malformed() {
    for crypto in all_cryptos(&default_pass()) {
        for len in 0..crypto.overhead() {
            let mut datagram = vec![0u8; len];
            assert!(
                matches!(crypto.open(&mut datagram), Err(e) if e.kind() == crate::ErrorKind::Malformed),
                "{} {len}",
                crypto.kind()
            );
        }
    }
    let null = DatagramCrypto::new(CipherKind::Null, &default_pass()).unwrap();
    assert_eq!(null.open(&mut []).unwrap(), &[] as &[u8]);
}

#[test]
fn open_never_panics_on_random_input() {
    use rand::Rng;
    let mut rng = rand::rng();
    for crypto in all_cryptos(&default_pass()) {
        for _ in 0..300 {
            let len = rng.random_range(0..2000);
            let mut datagram = vec![0u8; len];
            rng.fill(&mut datagram[..]);
            let result = crypto.open(&mut datagram);
            match crypto.kind() {
                CipherKind::Null => assert_eq!(result.unwrap().len(), len),
                // Random bytes pass a CRC-32 with probability 2^-32; the rest must fail.
                _ if len < crypto.overhead() => {
                    assert!(matches!(&result, Err(e) if e.kind() == crate::ErrorKind::Malformed))
                }
                _ => {
                    let _ = result;
                }
            }
        }
    }
}

#[test]
fn salsa20_keeps_the_first_eight_nonce_bytes_in_clear() {
    let crypto = DatagramCrypto::new(CipherKind::Salsa20, &default_pass()).unwrap();
    let nonce: Vec<u8> = (0..16).map(|i| 0xC0 + i).collect();
    let payload = pattern(64, 1);
    let mut datagram = framed(&crypto, &payload);
    crypto.seal_with_nonce(&mut datagram, &nonce);
    assert_eq!(&datagram[..8], &nonce[..8]);
    assert_ne!(&datagram[8..16], &nonce[8..16]);
    // Bytes [8..] are the plaintext XOR the Salsa20 key stream (nonce = bytes [0..8], counter 0).
    let mut stream = vec![0u8; datagram.len() - 8];
    let mut cipher = salsa20::Salsa20::new(
        (&default_pass()).into(),
        GenericArray::from_slice(&nonce[..8]),
    );
    cipher.apply_keystream(&mut stream);
    let mut plain = nonce.clone();
    plain.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    plain.extend_from_slice(&payload);
    for i in 8..datagram.len() {
        assert_eq!(datagram[i], plain[i] ^ stream[i - 8], "byte {i}");
    }
}

#[test]
fn cfb_family_encrypts_the_nonce_and_stores_a_little_endian_crc() {
    let pass = default_pass();
    let crypto = DatagramCrypto::new(CipherKind::None, &pass).unwrap();
    let payload = pattern(33, 5);
    let nonce = [0x42u8; 16];
    let mut datagram = framed(&crypto, &payload);
    crypto.seal_with_nonce(&mut datagram, &nonce);
    assert_eq!(&datagram[..16], &nonce);
    assert_eq!(&datagram[16..20], &crc32fast::hash(&payload).to_le_bytes());
    assert_eq!(&datagram[20..], payload.as_slice());

    let aes = DatagramCrypto::new(CipherKind::Aes, &pass).unwrap();
    let mut sealed = framed(&aes, &payload);
    aes.seal_with_nonce(&mut sealed, &nonce);
    assert_ne!(&sealed[..16], &nonce, "the nonce is encrypted too");
}

#[test]
fn xor_leaves_bytes_past_the_pad_in_clear() {
    let crypto = DatagramCrypto::new(CipherKind::Xor, &default_pass()).unwrap();
    let payload = pattern(1600, 9);
    let mut datagram = framed(&crypto, &payload);
    crypto.seal(&mut datagram);
    assert_eq!(&datagram[XOR_PAD_LEN..], &payload[XOR_PAD_LEN - 20..]);
    assert_eq!(crypto.open(&mut datagram).unwrap(), payload.as_slice());
}

#[test]
fn crypto_is_send_sync_and_debug_hides_keys() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<DatagramCrypto>();
    let crypto = DatagramCrypto::new(CipherKind::Aes, &default_pass()).unwrap();
    let shown = format!("{crypto:?}");
    assert!(shown.contains("Aes") && !shown.contains("25"), "{shown}");
}
