//! kcp-go's datagram encryption and kcptun's key derivation.
//!
//! Every UDP datagram a kcp-go session sends goes through one [`BlockCrypt`]-like transform
//! after FEC encoding and before the socket (and through its inverse on receive). This module
//! reproduces all of kcptun's `-crypt` choices byte for byte, as [`DatagramCrypto`].
//!
//! # Key
//!
//! kcptun turns its `-key` string into a 32-byte `pass` with [`derive_key`]:
//! PBKDF2-HMAC-SHA1(key, salt `"kcp-go"`, 4096 iterations, 32 bytes). Each cipher then takes
//! the slice of `pass` it needs (see [`CipherKind`]).
//!
//! # Datagram layout
//!
//! ```text
//! CFB family, salsa20, xor, none (header_len() = 20):
//!
//!   0              16        20
//!   | nonce (16)   | crc32   | [FEC header 8] | KCP segments ...          |
//!                    LE, over bytes [20..], computed before encryption
//!   \____________ encrypted as ONE buffer, the random nonce included ______/
//!
//! aes-128-gcm (header_len() = 12, trailer_len() = 16):
//!
//!   | nonce (12) | AES-128-GCM ciphertext of ([FEC header] KCP ...) | tag (16) |
//!   no CRC, no associated data
//!
//! null (header_len() = 0): | [FEC header] KCP ... |   (no integrity at all)
//! ```
//!
//! * **CFB family** (aes, aes-128, aes-192, blowfish, twofish, cast5, 3des, tea, xtea, sm4):
//!   standard full-block CFB over the whole datagram, final partial block included, always
//!   starting from the same fixed IV ([`CFB_IV`]; 8-byte-block ciphers use its first 8 bytes).
//!   The IV never changes; the random nonce at the front of the plaintext is what makes every
//!   ciphertext different (it is the first CFB block, so it perturbs all the ones after it).
//! * **salsa20**: Salsa20/20 keyed with `pass`, with bytes `[0..8]` of the datagram (the start
//!   of the random nonce) as the 8-byte Salsa20 nonce. Those 8 bytes stay in clear; bytes
//!   `[8..]` are XORed with the key stream from block counter 0.
//! * **xor**: bytes XORed with a fixed 1500-byte pad derived from `pass` (not a real cipher).
//! * **none**: the 20-byte nonce + CRC header is present but nothing is encrypted.
//! * **null**: no header at all: the datagram is the payload, nothing is checked.
//! * **aes-128-gcm** (upstream kcp-go): a real AEAD; the tag replaces the CRC.
//!
//! On receive, the datagram is decrypted, then the CRC-32/IEEE of bytes `[20..]` is compared
//! with the little-endian value at `[16..20]`; a mismatch means a wrong key or corruption and
//! the datagram is dropped ([`ErrorKind::Checksum`](crate::ErrorKind::Checksum)).
//!
//! # What the CRC does not protect
//!
//! The CRC covers bytes `[20..]`, not the nonce. A change to a nonce byte is only noticed when
//! the cipher carries it into later bytes: with CFB a changed ciphertext byte garbles the
//! *next* block, which for 16-byte ciphers holds the CRC (always noticed) but for the 8-byte
//! ciphers (blowfish, cast5, 3des, tea, xtea) is bytes `[8..16]`, still nonce: changes to
//! bytes `[0..8]` go unnoticed. Likewise salsa20 bytes `[8..16]`, and xor/none bytes `[0..16]`.
//! The payload itself is never affected in those cases. `null` checks nothing; `aes-128-gcm`
//! authenticates every byte. The CRC is an integrity check against corruption and wrong
//! keys, not authentication: only `aes-128-gcm` resists a deliberate forger.
//!
//! A [`DatagramCrypto`] holds only key material fixed at construction: every datagram starts
//! from a fresh cipher state, so one value can be shared by any number of sessions and
//! threads (Debian's patched kcp-go shared mutable scratch between sessions and corrupted
//! packets under concurrency; nothing of the sort is possible here).
//!
//! [`BlockCrypt`]: https://pkg.go.dev/github.com/xtaci/kcp-go/v5#BlockCrypt

mod tea;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use aes::{Aes128, Aes192, Aes256};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::Aes128Gcm;
use blowfish::Blowfish;
use cast5::Cast5;
use cipher::generic_array::GenericArray;
use cipher::typenum::Unsigned;
use cipher::{
    AsyncStreamCipher, BlockCipher, BlockEncrypt, BlockSizeUser, InnerIvInit, KeyInit, KeyIvInit,
    StreamCipher,
};
use des::TdesEde3;
use sm4::Sm4;
use twofish::Twofish;

use self::tea::{Tea16, XteaBe};
use crate::{Error, Result};

/// Length of the random nonce at the front of a datagram (CFB family, salsa20, xor, none).
pub const NONCE_LEN: usize = 16;
/// Length of the CRC-32 that follows the nonce.
pub const CRC_LEN: usize = 4;
/// Nonce + CRC: the crypto header of every cipher except `null` and `aes-128-gcm`.
pub const CRYPT_HEADER_LEN: usize = NONCE_LEN + CRC_LEN;
/// Nonce length of `aes-128-gcm`.
pub const GCM_NONCE_LEN: usize = 12;
/// Authentication tag length of `aes-128-gcm`.
pub const GCM_TAG_LEN: usize = 16;
/// Length of the `xor` pad: kcp-go's hard MTU limit. Longer datagrams keep their tail in clear,
/// as in kcp-go (which never sends more than this).
pub const XOR_PAD_LEN: usize = 1500;

/// The fixed IV every CFB datagram starts from (kcp-go's `initialVector`).
pub const CFB_IV: [u8; 16] = [
    167, 115, 79, 156, 18, 172, 27, 1, 164, 21, 242, 193, 252, 120, 230, 107,
];

/// Salt of kcptun's key derivation.
const KDF_SALT: &[u8] = b"kcp-go";
/// Iterations of kcptun's key derivation.
const KDF_ITERATIONS: u32 = 4096;
/// Salt of the `xor` pad derivation (kcp-go's `saltxor`).
const XOR_SALT: &[u8] = b"sH3CIVoF#rWLtJo6";
/// Iterations of the `xor` pad derivation.
const XOR_ITERATIONS: u32 = 32;

/// kcptun's key derivation: PBKDF2-HMAC-SHA1(key, salt "kcp-go", 4096 iterations, 32 bytes).
///
/// The result is the `pass` given to [`DatagramCrypto::new`]. kcptun's default key is
/// `"it's a secrect"` (sic).
pub fn derive_key(key: &str) -> [u8; 32] {
    let mut pass = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(key.as_bytes(), KDF_SALT, KDF_ITERATIONS, &mut pass);
    pass
}

/// The `xor` cipher's pad: PBKDF2-HMAC-SHA1(pass, salt "sH3CIVoF#rWLtJo6", 32 iterations,
/// 1500 bytes).
fn xor_pad(pass: &[u8; 32]) -> Box<[u8; XOR_PAD_LEN]> {
    let mut pad = Box::new([0u8; XOR_PAD_LEN]);
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(pass, XOR_SALT, XOR_ITERATIONS, &mut pad[..]);
    pad
}

/// A datagram cipher, named exactly as kcptun's `-crypt` flag names it.
///
/// | name | cipher | key |
/// |---|---|---|
/// | `aes` (kcptun's default) | AES-256-CFB | `pass` |
/// | `aes-128` / `aes-192` | AES-CFB | `pass[..16]` / `pass[..24]` |
/// | `salsa20` | Salsa20/20, nonce = datagram `[0..8]` in clear | `pass` |
/// | `blowfish` | Blowfish-CFB-64 | `pass` (32 bytes) |
/// | `twofish` | Twofish-CFB | `pass` |
/// | `cast5` | CAST5-CFB-64 | `pass[..16]` |
/// | `3des` | 3DES-EDE3-CFB-64 | `pass[..24]` |
/// | `tea` | TEA (16 rounds, big-endian)-CFB-64 | `pass[..16]` |
/// | `xtea` | XTEA (64 rounds, big-endian)-CFB-64 | `pass[..16]` |
/// | `sm4` | SM4-CFB | `pass[..16]` |
/// | `xor` | XOR with a 1500-byte pad derived from `pass` | `pass` |
/// | `none` | nonce + CRC header, no encryption | — |
/// | `null` | no header, no encryption, no integrity | — |
/// | `aes-128-gcm` | AES-128-GCM, 12-byte nonce, 16-byte tag | `pass[..16]` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CipherKind {
    /// `aes`: AES-256-CFB (kcptun's default).
    #[default]
    Aes,
    /// `aes-128`: AES-128-CFB.
    Aes128,
    /// `aes-192`: AES-192-CFB.
    Aes192,
    /// `salsa20`: Salsa20/20 stream cipher.
    Salsa20,
    /// `blowfish`: Blowfish-CFB-64 with a 32-byte key.
    Blowfish,
    /// `twofish`: Twofish-CFB with a 32-byte key.
    Twofish,
    /// `cast5`: CAST5-CFB-64.
    Cast5,
    /// `3des`: triple DES (EDE3)-CFB-64.
    TripleDes,
    /// `tea`: TEA with 16 rounds, big-endian, CFB-64.
    Tea,
    /// `xtea`: XTEA, big-endian, CFB-64.
    Xtea,
    /// `sm4`: SM4-CFB.
    Sm4,
    /// `xor`: XOR with a derived pad (obfuscation only).
    Xor,
    /// `none`: header present, no encryption.
    None,
    /// `null`: no crypto header at all (upstream kcptun).
    Null,
    /// `aes-128-gcm`: AES-128-GCM AEAD (upstream kcp-go).
    Aes128Gcm,
}

impl CipherKind {
    /// Every cipher, in kcptun's documentation order.
    pub const ALL: [CipherKind; 15] = [
        CipherKind::Aes,
        CipherKind::Aes128,
        CipherKind::Aes192,
        CipherKind::Salsa20,
        CipherKind::Blowfish,
        CipherKind::Twofish,
        CipherKind::Cast5,
        CipherKind::TripleDes,
        CipherKind::Tea,
        CipherKind::Xtea,
        CipherKind::Sm4,
        CipherKind::Xor,
        CipherKind::None,
        CipherKind::Null,
        CipherKind::Aes128Gcm,
    ];

    /// The kcptun `-crypt` name.
    pub const fn name(self) -> &'static str {
        match self {
            CipherKind::Aes => "aes",
            CipherKind::Aes128 => "aes-128",
            CipherKind::Aes192 => "aes-192",
            CipherKind::Salsa20 => "salsa20",
            CipherKind::Blowfish => "blowfish",
            CipherKind::Twofish => "twofish",
            CipherKind::Cast5 => "cast5",
            CipherKind::TripleDes => "3des",
            CipherKind::Tea => "tea",
            CipherKind::Xtea => "xtea",
            CipherKind::Sm4 => "sm4",
            CipherKind::Xor => "xor",
            CipherKind::None => "none",
            CipherKind::Null => "null",
            CipherKind::Aes128Gcm => "aes-128-gcm",
        }
    }

    /// Bytes reserved at the front of a datagram (see [`DatagramCrypto::header_len`]).
    pub const fn header_len(self) -> usize {
        match self {
            CipherKind::Null => 0,
            CipherKind::Aes128Gcm => GCM_NONCE_LEN,
            _ => CRYPT_HEADER_LEN,
        }
    }

    /// Bytes appended at the end of a datagram (see [`DatagramCrypto::trailer_len`]).
    pub const fn trailer_len(self) -> usize {
        match self {
            CipherKind::Aes128Gcm => GCM_TAG_LEN,
            _ => 0,
        }
    }

    /// Length of the nonce [`DatagramCrypto::seal_with_nonce`] expects: 16, 12 for
    /// `aes-128-gcm`, 0 for `null`.
    pub const fn nonce_len(self) -> usize {
        match self {
            CipherKind::Null => 0,
            CipherKind::Aes128Gcm => GCM_NONCE_LEN,
            _ => NONCE_LEN,
        }
    }
}

impl fmt::Display for CipherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CipherKind {
    type Err = Error;

    /// Parses a kcptun `-crypt` name (exact, lower case).
    fn from_str(s: &str) -> Result<Self> {
        CipherKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = CipherKind::ALL.iter().map(|k| k.name()).collect();
                Error::config(format!(
                    "unknown cipher {s:?}; valid names: {}",
                    names.join(", ")
                ))
            })
    }
}

/// The keyed transform behind a [`DatagramCrypto`]. Large states are boxed so the enum stays
/// small.
enum Engine {
    Aes128(Box<Aes128>),
    Aes192(Box<Aes192>),
    Aes256(Box<Aes256>),
    Blowfish(Box<Blowfish>),
    Twofish(Box<Twofish>),
    Cast5(Box<Cast5>),
    TripleDes(Box<TdesEde3>),
    Tea(Box<Tea16>),
    Xtea(Box<XteaBe>),
    Sm4(Box<Sm4>),
    Salsa20(Box<[u8; 32]>),
    Xor(Box<[u8; XOR_PAD_LEN]>),
    None,
    Null,
    Aes128Gcm(Box<Aes128Gcm>),
}

/// Builds a block cipher from a key slice whose length is fixed by construction.
fn block_cipher<C: KeyInit>(key: &[u8]) -> Result<Box<C>> {
    C::new_from_slice(key)
        .map(Box::new)
        .map_err(|_| Error::config(format!("bad key length {} for cipher", key.len())))
}

/// kcp-go's CFB encryption of a whole datagram: fresh state from [`CFB_IV`] every call.
fn cfb_encrypt<C: BlockEncrypt + BlockCipher>(cipher: &C, buf: &mut [u8]) {
    let iv = GenericArray::from_slice(&CFB_IV[..<C as BlockSizeUser>::BlockSize::USIZE]);
    cfb_mode::Encryptor::<&C>::inner_iv_init(cipher, iv).encrypt(buf);
}

/// The inverse of [`cfb_encrypt`].
fn cfb_decrypt<C: BlockEncrypt + BlockCipher>(cipher: &C, buf: &mut [u8]) {
    let iv = GenericArray::from_slice(&CFB_IV[..<C as BlockSizeUser>::BlockSize::USIZE]);
    cfb_mode::Decryptor::<&C>::inner_iv_init(cipher, iv).decrypt(buf);
}

/// Salsa20 as kcp-go applies it: bytes `[0..8]` are the nonce and stay in clear.
/// The caller guarantees `buf.len() >= 8`.
fn salsa20_apply(key: &[u8; 32], buf: &mut [u8]) {
    let (nonce, rest) = buf.split_at_mut(8);
    let mut stream = salsa20::Salsa20::new(key.into(), GenericArray::from_slice(nonce));
    stream.apply_keystream(rest);
}

/// XOR with the pad, over at most the pad's length.
fn xor_apply(pad: &[u8; XOR_PAD_LEN], buf: &mut [u8]) {
    for (byte, key) in buf.iter_mut().zip(pad.iter()) {
        *byte ^= key;
    }
}

/// One kcptun cipher with its key: seals and opens whole UDP datagrams in place.
///
/// Immutable after construction (`&self` methods only, `Send + Sync`): share one value
/// between every session using the same key. See the [module docs](self) for the layout.
pub struct DatagramCrypto {
    kind: CipherKind,
    engine: Engine,
}

impl fmt::Debug for DatagramCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("DatagramCrypto")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl DatagramCrypto {
    /// Keys `kind` with `pass` (the output of [`derive_key`]), taking the slice of `pass`
    /// the cipher uses (see [`CipherKind`]).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) if a cipher rejects its key (cannot happen with the fixed slices used
    /// here; kept so that a future cipher with key constraints fits the signature).
    pub fn new(kind: CipherKind, pass: &[u8; 32]) -> Result<DatagramCrypto> {
        let engine = match kind {
            CipherKind::Aes => Engine::Aes256(block_cipher(pass)?),
            CipherKind::Aes128 => Engine::Aes128(block_cipher(&pass[..16])?),
            CipherKind::Aes192 => Engine::Aes192(block_cipher(&pass[..24])?),
            CipherKind::Salsa20 => Engine::Salsa20(Box::new(*pass)),
            CipherKind::Blowfish => Engine::Blowfish(block_cipher(pass)?),
            CipherKind::Twofish => Engine::Twofish(block_cipher(pass)?),
            CipherKind::Cast5 => Engine::Cast5(block_cipher(&pass[..16])?),
            CipherKind::TripleDes => Engine::TripleDes(block_cipher(&pass[..24])?),
            CipherKind::Tea => Engine::Tea(block_cipher(&pass[..16])?),
            CipherKind::Xtea => Engine::Xtea(block_cipher(&pass[..16])?),
            CipherKind::Sm4 => Engine::Sm4(block_cipher(&pass[..16])?),
            CipherKind::Xor => Engine::Xor(xor_pad(pass)),
            CipherKind::None => Engine::None,
            CipherKind::Null => Engine::Null,
            CipherKind::Aes128Gcm => Engine::Aes128Gcm(block_cipher(&pass[..16])?),
        };
        Ok(DatagramCrypto { kind, engine })
    }

    /// The cipher this value was built with.
    pub fn kind(&self) -> CipherKind {
        self.kind
    }

    /// Bytes the session layer reserves at the front of a datagram: 20 (nonce 16 + CRC 4)
    /// for the CFB family, salsa20, xor and `none`; 12 for `aes-128-gcm`; 0 for `null`.
    pub fn header_len(&self) -> usize {
        self.kind.header_len()
    }

    /// Extra bytes appended at the end of a sealed datagram (16 for the GCM tag, else 0).
    pub fn trailer_len(&self) -> usize {
        self.kind.trailer_len()
    }

    /// [`header_len`](Self::header_len) + [`trailer_len`](Self::trailer_len): what the
    /// crypto layer takes out of the MTU.
    pub fn overhead(&self) -> usize {
        self.header_len() + self.trailer_len()
    }

    /// Seals a datagram in place with a fresh random nonce.
    ///
    /// `datagram` is [`header_len`](Self::header_len) bytes of room (any content) followed by
    /// the plaintext payload (FEC header + KCP segments). Afterwards it is the wire datagram:
    /// for the CFB family, salsa20, xor and `none` the nonce is written at `[0..16]`, the
    /// CRC-32/IEEE of `[20..]` little-endian at `[16..20]`, then the whole datagram is
    /// encrypted; for `aes-128-gcm` the nonce is written at `[0..12]`, the payload encrypted
    /// and the 16-byte tag appended; `null` leaves it untouched.
    ///
    /// # Panics
    ///
    /// If `datagram` is shorter than `header_len()` (a caller bug: the room was not reserved).
    pub fn seal(&self, datagram: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::Rng::fill(&mut rand::rng(), &mut nonce[..]);
        self.seal_with_nonce(datagram, &nonce[..self.kind.nonce_len()]);
    }

    /// [`seal`](Self::seal) with a caller-chosen nonce, for golden-vector tests.
    ///
    /// # Panics
    ///
    /// If `nonce.len()` is not [`CipherKind::nonce_len`] (16; 12 for `aes-128-gcm`; 0 for
    /// `null`), or if `datagram` is shorter than `header_len()`.
    pub fn seal_with_nonce(&self, datagram: &mut Vec<u8>, nonce: &[u8]) {
        assert_eq!(
            nonce.len(),
            self.kind.nonce_len(),
            "nonce length for cipher {}",
            self.kind
        );
        assert!(
            datagram.len() >= self.header_len(),
            "datagram of {} bytes has no room for the {}-byte {} header",
            datagram.len(),
            self.header_len(),
            self.kind
        );
        if let Engine::Null = self.engine {
            return;
        }
        if let Engine::Aes128Gcm(gcm) = &self.engine {
            datagram[..GCM_NONCE_LEN].copy_from_slice(nonce);
            let (head, payload) = datagram.split_at_mut(GCM_NONCE_LEN);
            let tag = gcm
                .encrypt_in_place_detached(GenericArray::from_slice(head), &[], payload)
                .expect("AES-GCM accepts any payload below 64 GiB");
            datagram.extend_from_slice(&tag);
            return;
        }
        datagram[..NONCE_LEN].copy_from_slice(nonce);
        let crc = crc32fast::hash(&datagram[CRYPT_HEADER_LEN..]);
        datagram[NONCE_LEN..CRYPT_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        self.encrypt_whole(datagram);
    }

    /// Encrypts a whole datagram (header included) for the nonce + CRC ciphers.
    fn encrypt_whole(&self, buf: &mut [u8]) {
        match &self.engine {
            Engine::Aes128(c) => cfb_encrypt(&**c, buf),
            Engine::Aes192(c) => cfb_encrypt(&**c, buf),
            Engine::Aes256(c) => cfb_encrypt(&**c, buf),
            Engine::Blowfish(c) => cfb_encrypt(&**c, buf),
            Engine::Twofish(c) => cfb_encrypt(&**c, buf),
            Engine::Cast5(c) => cfb_encrypt(&**c, buf),
            Engine::TripleDes(c) => cfb_encrypt(&**c, buf),
            Engine::Tea(c) => cfb_encrypt(&**c, buf),
            Engine::Xtea(c) => cfb_encrypt(&**c, buf),
            Engine::Sm4(c) => cfb_encrypt(&**c, buf),
            Engine::Salsa20(key) => salsa20_apply(key, buf),
            Engine::Xor(pad) => xor_apply(pad, buf),
            Engine::None | Engine::Null | Engine::Aes128Gcm(_) => {}
        }
    }

    /// Decrypts a whole datagram (header included) for the nonce + CRC ciphers.
    fn decrypt_whole(&self, buf: &mut [u8]) {
        match &self.engine {
            Engine::Aes128(c) => cfb_decrypt(&**c, buf),
            Engine::Aes192(c) => cfb_decrypt(&**c, buf),
            Engine::Aes256(c) => cfb_decrypt(&**c, buf),
            Engine::Blowfish(c) => cfb_decrypt(&**c, buf),
            Engine::Twofish(c) => cfb_decrypt(&**c, buf),
            Engine::Cast5(c) => cfb_decrypt(&**c, buf),
            Engine::TripleDes(c) => cfb_decrypt(&**c, buf),
            Engine::Tea(c) => cfb_decrypt(&**c, buf),
            Engine::Xtea(c) => cfb_decrypt(&**c, buf),
            Engine::Sm4(c) => cfb_decrypt(&**c, buf),
            Engine::Salsa20(key) => salsa20_apply(key, buf),
            Engine::Xor(pad) => xor_apply(pad, buf),
            Engine::None | Engine::Null | Engine::Aes128Gcm(_) => {}
        }
    }

    /// Opens a received datagram in place: decrypts it and verifies its CRC (or GCM tag).
    ///
    /// Returns the payload: the bytes after the header and before any trailer (FEC header +
    /// KCP segments). `null` returns the whole datagram unchecked: it has no integrity
    /// protection, so corruption goes unnoticed at this layer.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Malformed`](crate::ErrorKind::Malformed) if the datagram is shorter than header + trailer;
    /// [`ErrorKind::Checksum`](crate::ErrorKind::Checksum) if the CRC or the tag does not match (wrong key or corruption).
    /// Never panics, whatever the input.
    pub fn open<'a>(&self, datagram: &'a mut [u8]) -> Result<&'a [u8]> {
        if datagram.len() < self.overhead() {
            return Err(Error::malformed("datagram shorter than its crypto header"));
        }
        match &self.engine {
            Engine::Null => Ok(datagram),
            Engine::Aes128Gcm(gcm) => {
                let body_end = datagram.len() - GCM_TAG_LEN;
                let (rest, tag) = datagram.split_at_mut(body_end);
                let (nonce, body) = rest.split_at_mut(GCM_NONCE_LEN);
                gcm.decrypt_in_place_detached(
                    GenericArray::from_slice(nonce),
                    &[],
                    body,
                    GenericArray::from_slice(tag),
                )
                .map_err(|_| Error::checksum())?;
                Ok(&datagram[GCM_NONCE_LEN..body_end])
            }
            _ => {
                self.decrypt_whole(datagram);
                let (header, payload) = datagram.split_at(CRYPT_HEADER_LEN);
                let stored = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
                if crc32fast::hash(payload) != stored {
                    return Err(Error::checksum());
                }
                Ok(payload)
            }
        }
    }
}
