//! The two 64-bit block ciphers of the TEA family, exactly as Go's `golang.org/x/crypto/tea`
//! and `golang.org/x/crypto/xtea` compute them (which is what kcp-go runs in CFB-64).
//!
//! Both read the 128-bit key and the 64-bit block as **big-endian** 32-bit words. No crate
//! on crates.io matches: the RustCrypto `xtea` crate is little-endian, and kcp-go's TEA uses
//! 16 rounds (8 cycles) where standard TEA uses 64. Both are a few lines, so they live here
//! and plug into the RustCrypto `cipher` traits so `cfb-mode` can drive them like any other
//! block cipher.

use cipher::consts::U8;
use cipher::{BlockCipher, Key, KeyInit, KeySizeUser};

/// The TEA/XTEA key schedule constant (2^32 / golden ratio).
const DELTA: u32 = 0x9E37_79B9;

/// Reads a 16-byte key as four big-endian words.
fn key_words(key: &[u8]) -> [u32; 4] {
    let mut k = [0u32; 4];
    for (word, bytes) in k.iter_mut().zip(key.chunks_exact(4)) {
        *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    k
}

/// Reads an 8-byte block as two big-endian words.
fn block_words(block: &[u8]) -> (u32, u32) {
    (
        u32::from_be_bytes([block[0], block[1], block[2], block[3]]),
        u32::from_be_bytes([block[4], block[5], block[6], block[7]]),
    )
}

/// Writes two words back as an 8-byte big-endian block.
fn write_block(out: &mut [u8], v0: u32, v1: u32) {
    out[..4].copy_from_slice(&v0.to_be_bytes());
    out[4..8].copy_from_slice(&v1.to_be_bytes());
}

/// TEA with 16 rounds (8 cycles), big-endian: Go's `tea.NewCipherWithRounds(key, 16)`.
#[derive(Clone)]
pub(crate) struct Tea16 {
    k: [u32; 4],
}

impl Tea16 {
    /// Number of Feistel rounds; each loop iteration below is two of them (one cycle).
    const ROUNDS: u32 = 16;

    fn encrypt_words(&self, mut v0: u32, mut v1: u32) -> (u32, u32) {
        let [k0, k1, k2, k3] = self.k;
        let mut sum = 0u32;
        for _ in 0..Self::ROUNDS / 2 {
            sum = sum.wrapping_add(DELTA);
            v0 = v0.wrapping_add(
                (v1 << 4).wrapping_add(k0) ^ v1.wrapping_add(sum) ^ (v1 >> 5).wrapping_add(k1),
            );
            v1 = v1.wrapping_add(
                (v0 << 4).wrapping_add(k2) ^ v0.wrapping_add(sum) ^ (v0 >> 5).wrapping_add(k3),
            );
        }
        (v0, v1)
    }

    fn decrypt_words(&self, mut v0: u32, mut v1: u32) -> (u32, u32) {
        let [k0, k1, k2, k3] = self.k;
        let mut sum = DELTA.wrapping_mul(Self::ROUNDS / 2);
        for _ in 0..Self::ROUNDS / 2 {
            v1 = v1.wrapping_sub(
                (v0 << 4).wrapping_add(k2) ^ v0.wrapping_add(sum) ^ (v0 >> 5).wrapping_add(k3),
            );
            v0 = v0.wrapping_sub(
                (v1 << 4).wrapping_add(k0) ^ v1.wrapping_add(sum) ^ (v1 >> 5).wrapping_add(k1),
            );
            sum = sum.wrapping_sub(DELTA);
        }
        (v0, v1)
    }
}

impl KeySizeUser for Tea16 {
    type KeySize = cipher::consts::U16;
}

impl KeyInit for Tea16 {
    fn new(key: &Key<Self>) -> Self {
        Tea16 { k: key_words(key) }
    }
}

impl BlockCipher for Tea16 {}

cipher::impl_simple_block_encdec!(
    Tea16, U8, state, block,
    encrypt: {
        let (v0, v1) = block_words(block.get_in());
        let (v0, v1) = state.encrypt_words(v0, v1);
        write_block(block.get_out(), v0, v1);
    }
    decrypt: {
        let (v0, v1) = block_words(block.get_in());
        let (v0, v1) = state.decrypt_words(v0, v1);
        write_block(block.get_out(), v0, v1);
    }
);

/// XTEA with 64 rounds (32 cycles), big-endian: Go's `xtea.NewCipher(key)`.
///
/// The per-round `sum + k[..]` values are precomputed once, as Go does.
#[derive(Clone)]
pub(crate) struct XteaBe {
    table: [u32; 64],
}

impl XteaBe {
    fn encrypt_words(&self, mut v0: u32, mut v1: u32) -> (u32, u32) {
        for pair in self.table.chunks_exact(2) {
            v0 = v0.wrapping_add(((v1 << 4) ^ (v1 >> 5)).wrapping_add(v1) ^ pair[0]);
            v1 = v1.wrapping_add(((v0 << 4) ^ (v0 >> 5)).wrapping_add(v0) ^ pair[1]);
        }
        (v0, v1)
    }

    fn decrypt_words(&self, mut v0: u32, mut v1: u32) -> (u32, u32) {
        for pair in self.table.chunks_exact(2).rev() {
            v1 = v1.wrapping_sub(((v0 << 4) ^ (v0 >> 5)).wrapping_add(v0) ^ pair[1]);
            v0 = v0.wrapping_sub(((v1 << 4) ^ (v1 >> 5)).wrapping_add(v1) ^ pair[0]);
        }
        (v0, v1)
    }
}

impl KeySizeUser for XteaBe {
    type KeySize = cipher::consts::U16;
}

impl KeyInit for XteaBe {
    fn new(key: &Key<Self>) -> Self {
        let k = key_words(key);
        let mut table = [0u32; 64];
        let mut sum = 0u32;
        for pair in table.chunks_exact_mut(2) {
            pair[0] = sum.wrapping_add(k[(sum & 3) as usize]);
            sum = sum.wrapping_add(DELTA);
            pair[1] = sum.wrapping_add(k[((sum >> 11) & 3) as usize]);
        }
        XteaBe { table }
    }
}

impl BlockCipher for XteaBe {}

cipher::impl_simple_block_encdec!(
    XteaBe, U8, state, block,
    encrypt: {
        let (v0, v1) = block_words(block.get_in());
        let (v0, v1) = state.encrypt_words(v0, v1);
        write_block(block.get_out(), v0, v1);
    }
    decrypt: {
        let (v0, v1) = block_words(block.get_in());
        let (v0, v1) = state.decrypt_words(v0, v1);
        write_block(block.get_out(), v0, v1);
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::{BlockDecrypt, BlockEncrypt};

    /// Vectors produced by a small pure-Python reference of Go's x/crypto `tea` and `xtea`
    /// (big-endian words; TEA with a round-count parameter, XTEA with 64 rounds): the
    /// `tea_enc`/`xtea_enc` functions of `testdata/gen_vectors.py`, run with python3. The reference itself was checked against published vectors: XTEA with key
    /// 00..0f on "ABCDEFGH" gives 497df3d072612cb5 (Go's xtea_test.go), XTEA all-zero gives
    /// dee9d4d8f7131ed9, and standard 64-round TEA all-zero gives 41ea3a0a94baa940.
    /// Columns: key, plaintext, ciphertext.
    const TEA16_VECTORS: &[(&str, &str, &str)] = &[
        (
            "000102030405060708090a0b0c0d0e0f",
            "4142434445464748",
            "1c5f50d6f3d8edb9",
        ),
        (
            "25d7d7bd51050742d8d791f2b653c6c8",
            "a7734f9c12ac1b01",
            "fc9d4cb7acec562c",
        ),
        (
            "00000000000000000000000000000000",
            "0000000000000000",
            "ed285da1455b33c1",
        ),
    ];
    /// See [`TEA16_VECTORS`].
    const XTEA_VECTORS: &[(&str, &str, &str)] = &[
        (
            "000102030405060708090a0b0c0d0e0f",
            "4142434445464748",
            "497df3d072612cb5",
        ),
        (
            "25d7d7bd51050742d8d791f2b653c6c8",
            "a7734f9c12ac1b01",
            "09246b8a4788fd5d",
        ),
        (
            "00000000000000000000000000000000",
            "0000000000000000",
            "dee9d4d8f7131ed9",
        ),
    ];

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn check<C: KeyInit + BlockEncrypt + BlockDecrypt>(vectors: &[(&str, &str, &str)]) {
        for (key, pt, ct) in vectors {
            let c = C::new_from_slice(&hex(key)).unwrap();
            let mut block = cipher::Block::<C>::clone_from_slice(&hex(pt));
            c.encrypt_block(&mut block);
            assert_eq!(block.as_slice(), hex(ct).as_slice(), "encrypt {key} {pt}");
            c.decrypt_block(&mut block);
            assert_eq!(block.as_slice(), hex(pt).as_slice(), "decrypt {key} {ct}");
        }
    }

    #[test]
    fn tea16_matches_python_reference() {
        check::<Tea16>(TEA16_VECTORS);
    }

    #[test]
    fn xtea_matches_python_reference() {
        check::<XteaBe>(XTEA_VECTORS);
    }
}
