//! Unit tests of the FEC encoder and decoder.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// Builds a datagram `[headroom | 8 room | payload]`.
fn datagram(headroom: usize, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; headroom + FEC_DATA_HEADER_SIZE];
    d.extend_from_slice(payload);
    d
}

fn random_payload(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.random_range(1..=max);
    (0..n).map(|_| rng.random()).collect()
}

/// A packet in sending order (without headroom) and, for data, its payload's index.
type Packet = (Vec<u8>, Option<usize>);

/// Encodes `groups` groups of random payloads; returns the payloads and the packets.
fn encode_stream(ds: usize, ps: usize, groups: usize, seed: u64) -> (Vec<Vec<u8>>, Vec<Packet>) {
    let headroom = 20;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut enc = FecEncoder::new(ds, ps, headroom).unwrap();
    let mut payloads = Vec::new();
    let mut packets = Vec::new();
    for _ in 0..groups * ds {
        let p = random_payload(&mut rng, 1400);
        let mut d = datagram(headroom, &p);
        let parity = enc.encode(&mut d).unwrap();
        let parity: Vec<Vec<u8>> = parity.iter().map(|q| q[headroom..].to_vec()).collect();
        packets.push((d[headroom..].to_vec(), Some(payloads.len())));
        payloads.push(p);
        for q in parity {
            packets.push((q, None));
        }
    }
    (payloads, packets)
}

#[test]
fn is_fec_tells_types_apart() {
    let mut p = vec![0u8; 8];
    p[4] = 0xF1;
    assert!(is_fec(&p));
    p[4] = 0xF2;
    assert!(is_fec(&p));
    p[4] = 0xF3;
    assert!(!is_fec(&p));
    // Plain KCP: cmd 81..84, any frg.
    for cmd in 81u8..=84 {
        for frg in [0u8, 1, 0xF1, 255] {
            let mut k = vec![0u8; 24];
            k[4] = cmd;
            k[5] = frg;
            assert!(!is_fec(&k));
        }
    }
    assert!(!is_fec(&[0xF1; 5]));
}

#[test]
fn encoder_header_and_seqids() {
    let mut enc = FecEncoder::new(3, 2, 4).unwrap();
    let mut seqids = Vec::new();
    for i in 0..9u8 {
        let mut d = datagram(4, &vec![i; 10 + i as usize]);
        let parity = enc.encode(&mut d).unwrap();
        assert_eq!(&d[..4], &[0; 4]);
        let seq = u32::from_le_bytes(d[4..8].try_into().unwrap());
        assert_eq!(u16::from_le_bytes([d[8], d[9]]), TYPE_DATA);
        assert_eq!(
            u16::from_le_bytes([d[10], d[11]]) as usize,
            2 + 10 + i as usize
        );
        seqids.push(seq);
        if i % 3 == 2 {
            assert_eq!(parity.len(), 2);
            for q in parity.iter() {
                assert_eq!(&q[..4], &[0; 4]);
                assert_eq!(u16::from_le_bytes([q[8], q[9]]), TYPE_PARITY);
                // Longest data packet of the group: 2 + 10 + i bytes of shard.
                assert_eq!(q.len(), 4 + 6 + 2 + 10 + i as usize);
                seqids.push(u32::from_le_bytes(q[4..8].try_into().unwrap()));
            }
        } else {
            assert!(parity.is_empty());
        }
    }
    assert_eq!(seqids, (0..15).collect::<Vec<u32>>());
}

#[test]
fn encoder_rejects_bad_settings_and_datagrams() {
    assert!(FecEncoder::new(0, 1, 0).is_err());
    assert!(FecEncoder::new(1, 0, 0).is_err());
    assert!(FecEncoder::new(200, 57, 0).is_err());
    assert!(FecEncoder::new(200, 56, 0).is_ok());
    let mut enc = FecEncoder::new(2, 1, 20).unwrap();
    assert!(enc.encode(&mut [0u8; 27]).is_err());
    assert!(enc.encode(&mut vec![0u8; 20 + 6 + 65536]).is_err());
    assert_eq!(enc.next_seqid(), 0);
    assert!(enc
        .encode(&mut vec![0u8; 20 + 6 + 65535])
        .unwrap()
        .is_empty());
}

#[test]
fn seqid_wraps_after_last_parity() {
    let (ds, ps) = (10usize, 3usize);
    let total = (ds + ps) as u32;
    let paws = u32::MAX / total * total;
    let mut enc = FecEncoder::new(ds, ps, 0).unwrap();
    assert!(enc.set_next_seqid(5).is_err());
    enc.set_next_seqid(paws - total).unwrap();
    let mut last = 0;
    for i in 0..ds {
        let mut d = datagram(0, &[i as u8; 30]);
        let parity = enc.encode(&mut d).unwrap();
        if let Some(q) = parity.last() {
            last = u32::from_le_bytes(q[..4].try_into().unwrap());
        }
    }
    assert_eq!(last, paws - 1);
    assert_eq!(enc.next_seqid(), 0);

    // The decoder follows the wrap: lose one data packet in the group before and one
    // in the group after.
    let mut enc = FecEncoder::new(ds, ps, 0).unwrap();
    enc.set_next_seqid(paws - total).unwrap();
    let mut dec = FecDecoder::new(ds, ps).unwrap();
    let mut recovered = 0;
    for i in 0..2 * ds {
        let mut d = datagram(0, &[i as u8; 40]);
        let parity: Vec<Vec<u8>> = enc.encode(&mut d).unwrap().to_vec();
        if i != 3 && i != ds + 4 {
            recovered += dec.decode(&d).unwrap().recovered.len();
        }
        for q in &parity {
            recovered += dec.decode(q).unwrap().recovered.len();
        }
    }
    assert_eq!(recovered, 2);
}

fn round_trip(ds: usize, ps: usize, seed: u64) {
    let (payloads, packets) = encode_stream(ds, ps, 40, seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let total = ds + ps;
    let mut dec = FecDecoder::new(ds, ps).unwrap();
    let mut got: Vec<Option<Vec<u8>>> = vec![None; payloads.len()];
    let mut lost_data = 0;
    for group in packets.chunks(total) {
        // Lose up to ps packets at random positions.
        let nlost = rng.random_range(0..=ps);
        let mut lost = Vec::new();
        while lost.len() < nlost {
            let k = rng.random_range(0..total);
            if !lost.contains(&k) {
                lost.push(k);
            }
        }
        for (k, (pkt, idx)) in group.iter().enumerate() {
            if lost.contains(&k) {
                if idx.is_some() {
                    lost_data += 1;
                }
                continue;
            }
            let out = dec.decode(pkt).unwrap();
            if let Some(i) = idx {
                assert_eq!(out.regular.unwrap(), &payloads[*i][..]);
                assert!(got[*i].is_none());
                got[*i] = Some(out.regular.unwrap().to_vec());
            }
            for r in out.recovered {
                let i = payloads
                    .iter()
                    .position(|p| *p == r)
                    .expect("recovered payload");
                assert!(got[i].is_none(), "recovered twice");
                got[i] = Some(r);
            }
        }
        assert!(dec.queued() <= 3 * total);
    }
    for (i, p) in payloads.iter().enumerate() {
        assert_eq!(got[i].as_ref(), Some(p), "payload {i} ({ds}/{ps})");
    }
    assert_eq!(dec.stats().recovered, lost_data);
    assert_eq!(dec.stats().errs, 0);
}

#[test]
fn round_trip_with_losses() {
    for (i, (ds, ps)) in [(10, 3), (5, 2), (1, 1), (3, 1), (20, 10), (1, 3), (4, 4)]
        .into_iter()
        .enumerate()
    {
        round_trip(ds, ps, 1000 + i as u64);
    }
}

#[test]
fn reordered_packets_still_recover() {
    let (ds, ps) = (5, 2);
    let (payloads, packets) = encode_stream(ds, ps, 10, 7);
    let mut rng = StdRng::seed_from_u64(8);
    // Drop one data packet per group, shuffle within windows of 4.
    let mut kept = Vec::new();
    for (g, group) in packets.chunks(ds + ps).enumerate() {
        for (k, p) in group.iter().enumerate() {
            if k != g % ds {
                kept.push(p.clone());
            }
        }
    }
    for w in kept.chunks_mut(4) {
        for i in (1..w.len()).rev() {
            let j = rng.random_range(0..=i);
            w.swap(i, j);
        }
    }
    let mut dec = FecDecoder::new(ds, ps).unwrap();
    let mut got = Vec::new();
    for (pkt, _) in &kept {
        let out = dec.decode(pkt).unwrap();
        got.extend(out.regular.map(<[u8]>::to_vec));
        got.extend(out.recovered);
    }
    // A data packet still on its way when its group became decodable is rebuilt and
    // then arrives too (KCP drops the duplicate): compare without duplicates.
    got.sort();
    got.dedup();
    let mut want = payloads.clone();
    want.sort();
    assert!(
        got == want,
        "{} distinct payloads, want {}",
        got.len(),
        want.len()
    );
    assert!(dec.stats().recovered >= 10);
    assert_eq!(dec.stats().errs, 0);
}

#[test]
fn no_loss_no_recovery() {
    let (payloads, packets) = encode_stream(10, 3, 20, 3);
    let mut dec = FecDecoder::new(10, 3).unwrap();
    let mut regular = 0;
    for (pkt, _) in &packets {
        let out = dec.decode(pkt).unwrap();
        assert!(out.recovered.is_empty());
        regular += out.regular.is_some() as usize;
    }
    assert_eq!(regular, payloads.len());
    let s = dec.stats();
    assert_eq!((s.recovered, s.errs, s.short_shards), (0, 0, 0));
    assert_eq!(s.parity_shards, 20 * 3);
    // Duplicates are still delivered as regular, never recovered.
    let out = dec.decode(&packets[0].0).unwrap();
    assert!(out.regular.is_some() && out.recovered.is_empty());
}

#[test]
fn too_many_losses_give_nothing() {
    let (ds, ps) = (10, 3);
    let (payloads, packets) = encode_stream(ds, ps, 20, 4);
    let mut dec = FecDecoder::new(ds, ps).unwrap();
    let mut delivered = 0;
    for group in packets.chunks(ds + ps) {
        // Lose ps + 1 data packets.
        for (k, (pkt, _)) in group.iter().enumerate() {
            if k <= ps {
                continue;
            }
            let out = dec.decode(pkt).unwrap();
            assert!(out.recovered.is_empty());
            if let Some(r) = out.regular {
                assert!(payloads.iter().any(|p| p == r));
                delivered += 1;
            }
        }
        assert!(dec.queued() <= 3 * (ds + ps));
    }
    assert_eq!(delivered, 20 * (ds - ps - 1));
    let s = dec.stats();
    assert_eq!((s.recovered, s.errs), (0, 0));
    assert!(s.short_shards > 0);
}

#[test]
fn auto_tune_learns_parameters() {
    let (ds, ps) = (10, 3);
    let (payloads, packets) = encode_stream(ds, ps, 60, 5);
    let mut dec = FecDecoder::auto();
    let mut got = 0;
    let mut recovered_late = 0;
    for (g, group) in packets.chunks(ds + ps).enumerate() {
        for (k, (pkt, _)) in group.iter().enumerate() {
            // From group 40 on, lose one data packet per group.
            if g >= 40 && k == g % ds {
                continue;
            }
            let out = dec.decode(pkt).unwrap();
            got += out.regular.is_some() as usize;
            if g >= 40 {
                recovered_late += out.recovered.len();
            }
        }
    }
    assert_eq!(dec.params(), (ds, ps));
    assert_eq!(recovered_late, 20);
    assert_eq!(got + 20, payloads.len());
}

#[test]
fn inconsistent_parity_lengths_are_rejected() {
    let (ds, ps) = (3, 2);
    let (_, mut packets) = encode_stream(ds, ps, 1, 6);
    // Truncate one parity packet; lose two data packets.
    packets[4].0.pop();
    let mut dec = FecDecoder::new(ds, ps).unwrap();
    for (k, (pkt, _)) in packets.iter().enumerate() {
        if k < 2 {
            continue;
        }
        let out = dec.decode(pkt).unwrap();
        assert!(out.recovered.is_empty());
    }
    assert_eq!(dec.stats().errs, 1);
    assert_eq!(dec.stats().recovered, 0);
}

#[test]
fn hostile_headers_are_errors() {
    let mut dec = FecDecoder::new(10, 3).unwrap();
    assert!(dec.decode(&[]).is_err());
    assert!(dec.decode(&[0, 0, 0, 0, 0xF1, 0, 2]).is_err());
    assert!(dec.decode(&[0, 0, 0, 0, 0x51, 0, 2, 0]).is_err());
    assert!(dec.decode(&vec![0xF1; MAX_FEC_PACKET + 1]).is_err());
    // Absurd size fields in a regular data packet do not matter (kcp-go ignores them).
    let out = dec.decode(&[1, 0, 0, 0, 0xF1, 0, 0xFF, 0xFF, 9]).unwrap();
    assert_eq!(out.regular, Some(&[9u8][..]));
    assert!(FecDecoder::new(0, 3).is_err());
    assert!(FecDecoder::new(250, 7).is_err());
}

#[test]
fn fuzz_never_panics() {
    let mut rng = StdRng::seed_from_u64(99);
    for (ds, ps) in [(1usize, 1usize), (10, 3), (2, 5), (128, 128)] {
        let mut dec = FecDecoder::new(ds, ps).unwrap();
        let mut auto = FecDecoder::auto();
        let base: u32 = rng.random();
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let mut p: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if len >= 8 && rng.random_bool(0.9) {
                // Mostly well-typed packets with nearby or far seqids.
                let seq = if rng.random_bool(0.8) {
                    base.wrapping_add(rng.random_range(0..200))
                } else {
                    rng.random()
                };
                p[..4].copy_from_slice(&seq.to_le_bytes());
                p[4] = if rng.random_bool(0.7) { 0xF1 } else { 0xF2 };
                p[5] = 0;
            }
            for d in [&mut dec, &mut auto] {
                if let Ok(out) = d.decode(&p) {
                    for r in out.recovered {
                        assert!(r.len() <= 64);
                        d.recycle(r);
                    }
                }
                let (ds, ps) = d.params();
                assert!(ds + ps <= MAX_TOTAL_SHARDS);
                assert!(d.queued() <= RX_FEC_MULTI * (ds + ps));
            }
        }
    }
}

#[test]
fn sessions_share_one_code_per_setting_while_any_uses_it() {
    let a = FecDecoder::new(7, 5).unwrap();
    let b = FecEncoder::new(7, 5, 0).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&a.codec, &b.codec),
        "one code for 7/5"
    );
    let other = FecDecoder::new(7, 4).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a.codec, &other.codec));
    let weak = std::sync::Arc::downgrade(&a.codec);
    drop((a, b));
    assert!(weak.upgrade().is_none(), "dropped with its last user");
}
