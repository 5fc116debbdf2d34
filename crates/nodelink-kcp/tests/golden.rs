//! Golden vectors from the real kcp-go (Debian's golang-github-xtaci-kcp-dev 5.6.1):
//! `target/kcp-go-peer golden`, built by `scripts/install-kcp-deps.sh`, prints JSON lines
//! made by kcp-go's own ciphers and klauspost/reedsolomon; our FEC and crypt layers must
//! reproduce them byte for byte.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use nodelink_kcp::crypt::{derive_key, CipherKind, DatagramCrypto};
use nodelink_kcp::fec::{FecDecoder, FecEncoder};
use reed_solomon_erasure::galois_8::ReedSolomon;
use serde_json::Value;

fn peer_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kcp-go-peer")
}

/// The vectors, run once per test binary. Fails (does not skip) without the Go peer.
fn vectors() -> &'static [Value] {
    static V: OnceLock<Vec<Value>> = OnceLock::new();
    V.get_or_init(|| {
        let path = peer_path();
        assert!(
            path.exists(),
            "the kcp-go peer {} is missing: run scripts/install-kcp-deps.sh \
             (installs Debian's kcp-go and builds it)",
            path.display()
        );
        let out = Command::new(&path)
            .arg("golden")
            .output()
            .unwrap_or_else(|e| panic!("running {} golden: {e}", path.display()));
        assert!(
            out.status.success(),
            "{} golden failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8 output")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    })
}

fn of_kind(kind: &str) -> Vec<&'static Value> {
    let v: Vec<_> = vectors().iter().filter(|v| v["kind"] == kind).collect();
    assert!(!v.is_empty(), "no {kind} vectors from the Go peer");
    v
}

fn unhex(s: &Value) -> Vec<u8> {
    let s = s.as_str().expect("a hex string");
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn unhex_list(v: &Value) -> Vec<Vec<u8>> {
    v.as_array().expect("an array").iter().map(unhex).collect()
}

fn num(v: &Value) -> usize {
    v.as_u64().expect("a number") as usize
}

#[test]
fn reed_solomon_parity_matches_klauspost() {
    for v in of_kind("rs") {
        let (ds, ps) = (num(&v["ds"]), num(&v["ps"]));
        let data = unhex_list(&v["data"]);
        let want = unhex_list(&v["parity"]);
        let rs = ReedSolomon::new(ds, ps).unwrap();
        let mut parity = vec![vec![0u8; data[0].len()]; ps];
        rs.encode_sep(&data, &mut parity).unwrap();
        assert_eq!(parity, want, "RS parity {ds}/{ps}, shard {}", data[0].len());
    }
}

#[test]
fn fec_encoder_matches_kcp_go_groups() {
    for v in of_kind("fec") {
        let (ds, ps) = (num(&v["ds"]), num(&v["ps"]));
        let first = v["first_seqid"].as_u64().unwrap() as u32;
        let payloads = unhex_list(&v["payloads"]);
        let want = unhex_list(&v["packets"]);
        assert_eq!(want.len(), ds + ps);
        for headroom in [0usize, 20] {
            let mut enc = FecEncoder::new(ds, ps, headroom).unwrap();
            enc.set_next_seqid(first).unwrap();
            let mut got = Vec::new();
            for p in &payloads {
                let mut d = vec![0xEE; headroom + 8];
                d.extend_from_slice(p);
                let parity: Vec<Vec<u8>> = enc.encode(&mut d).unwrap().to_vec();
                got.push(d[headroom..].to_vec());
                for q in parity {
                    assert!(q[..headroom].iter().all(|&b| b == 0));
                    got.push(q[headroom..].to_vec());
                }
            }
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "FEC {ds}/{ps} from seqid {first}: packet {k}");
            }
            assert_eq!(got.len(), want.len());
        }
    }
}

#[test]
fn fec_decoder_rebuilds_kcp_go_groups() {
    for v in of_kind("fec") {
        let (ds, ps) = (num(&v["ds"]), num(&v["ps"]));
        let payloads = unhex_list(&v["payloads"]);
        let packets = unhex_list(&v["packets"]);
        // Lose the first min(ps, ds) data packets.
        let lost = ps.min(ds);
        let mut dec = FecDecoder::new(ds, ps).unwrap();
        let mut recovered = Vec::new();
        for p in &packets[lost..] {
            recovered.extend(dec.decode(p).unwrap().recovered);
        }
        assert_eq!(recovered, payloads[..lost], "FEC {ds}/{ps}");
    }
}

#[test]
fn ciphers_match_kcp_go() {
    let mut seen = std::collections::BTreeSet::new();
    for v in of_kind("cipher") {
        let name = v["cipher"].as_str().unwrap();
        let pass = derive_key(v["passphrase"].as_str().unwrap());
        assert_eq!(pass.to_vec(), unhex(&v["key"]), "PBKDF2 key");
        let kind: CipherKind = name
            .parse()
            .unwrap_or_else(|_| panic!("cipher {name} unknown to nodelink_kcp::crypt"));
        let crypto = DatagramCrypto::new(kind, &pass).unwrap();
        assert_eq!(crypto.header_len(), 20, "{name}: header length");
        let nonce = unhex(&v["nonce"]);
        let payload = unhex(&v["payload"]);
        let plain = unhex(&v["plain"]);
        let want = unhex(&v["encrypted"]);

        let mut d = vec![0u8; crypto.header_len()];
        d.extend_from_slice(&payload);
        crypto.seal_with_nonce(&mut d, &nonce);
        assert_eq!(d, want, "{name}: seal of {} payload bytes", payload.len());

        let mut from_go = want.clone();
        let opened = crypto
            .open(&mut from_go)
            .unwrap_or_else(|e| panic!("{name}: open of kcp-go's datagram: {e}"));
        assert_eq!(opened, &payload[..], "{name}: open");
        assert_eq!(&from_go[..], &plain[..], "{name}: decrypted in place");
        seen.insert(name.to_string());
    }
    let all = [
        "aes", "aes-128", "aes-192", "salsa20", "blowfish", "twofish", "cast5", "3des", "tea",
        "xtea", "sm4", "xor", "none",
    ];
    for n in all {
        assert!(seen.contains(n), "no vector for {n}");
    }
}
