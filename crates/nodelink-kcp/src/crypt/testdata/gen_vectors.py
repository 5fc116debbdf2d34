#!/usr/bin/env python3
# Independent reference for nodelink-kcp's crypt module (src/crypt/tests.rs, src/crypt/tea.rs).
# Run: python3 gen_vectors.py   (needs pyca/cryptography for the OpenSSL-backed ciphers)
# Prints the TEA-16 / XTEA block vectors, then the GOLDEN sealed datagrams.
import struct
M = 0xFFFFFFFF
DELTA = 0x9E3779B9

def tea_enc(key, block, rounds=16):
    k = struct.unpack('>4I', key)
    v0, v1 = struct.unpack('>2I', block)
    s = 0
    for _ in range(rounds // 2):
        s = (s + DELTA) & M
        v0 = (v0 + ((((v1 << 4) & M) + k[0]) ^ (v1 + s) ^ ((v1 >> 5) + k[1]))) & M
        v1 = (v1 + ((((v0 << 4) & M) + k[2]) ^ (v0 + s) ^ ((v0 >> 5) + k[3]))) & M
    return struct.pack('>2I', v0, v1)

def xtea_enc(key, block, rounds=64):
    k = struct.unpack('>4I', key)
    v0, v1 = struct.unpack('>2I', block)
    s = 0
    for _ in range(rounds // 2):
        v0 = (v0 + (((((v1 << 4) & M) ^ (v1 >> 5)) + v1) ^ ((s + k[s & 3]) & M))) & M
        s = (s + DELTA) & M
        v1 = (v1 + (((((v0 << 4) & M) ^ (v0 >> 5)) + v0) ^ ((s + k[(s >> 11) & 3]) & M))) & M
    return struct.pack('>2I', v0, v1)

def print_block_vectors():
    k1 = bytes(range(16))
    p1 = b'ABCDEFGH'
    k2 = bytes.fromhex('25d7d7bd51050742d8d791f2b653c6c8')  # derive_key("it's a secrect")[..16]
    p2 = bytes([167, 115, 79, 156, 18, 172, 27, 1])       # kcp-go's fixed IV, first 8 bytes
    for name, f in (('tea16', tea_enc), ('xtea', xtea_enc)):
        for k, p in ((k1, p1), (k2, p2), (bytes(16), bytes(8))):
            print(name, k.hex(), p.hex(), f(k, p).hex())
    print('tea64 zero', tea_enc(bytes(16), bytes(8), 64).hex())
import hashlib, struct, zlib, warnings, sys
warnings.filterwarnings('ignore')
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms as A, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
try:
    from cryptography.hazmat.decrepit.ciphers import algorithms as OLD
except ImportError:
    OLD = A

IV = bytes([167,115,79,156,18,172,27,1,164,21,242,193,252,120,230,107])
PASS = hashlib.pbkdf2_hmac('sha1', b"it's a secrect", b'kcp-go', 4096, 32)
NONCE = bytes(range(0x10, 0x20))
PAYLOAD = bytes((i * 7 + 3) & 0xff for i in range(45))

def plain():
    return NONCE + struct.pack('<I', zlib.crc32(PAYLOAD)) + PAYLOAD

def ossl_cfb(alg, bs):
    e = Cipher(alg, modes.CFB(IV[:bs])).encryptor()
    return e.update(plain()) + e.finalize()

def own_cfb(enc, key):
    src, out, reg = plain(), bytearray(), IV[:8]
    for i in range(0, len(src), 8):
        ks = enc(key, reg)
        chunk = bytes(a ^ b for a, b in zip(src[i:i+8], ks))
        out += chunk
        reg = chunk  # only full blocks feed back; the final partial one is the last
    return bytes(out)

def rotl(v, c): return ((v << c) & 0xffffffff) | (v >> (32 - c))
def salsa_block(key, nonce, ctr):
    c = b'expand 32-byte k'
    k = struct.unpack('<8I', key); n = struct.unpack('<2I', nonce); s = struct.unpack('<4I', c)
    x = [s[0], k[0], k[1], k[2], k[3], s[1], n[0], n[1], ctr & 0xffffffff, ctr >> 32, s[2], k[4], k[5], k[6], k[7], s[3]]
    y = list(x)
    def qr(a, b, cc, d):
        y[b] ^= rotl((y[a] + y[d]) & 0xffffffff, 7); y[cc] ^= rotl((y[b] + y[a]) & 0xffffffff, 9)
        y[d] ^= rotl((y[cc] + y[b]) & 0xffffffff, 13); y[a] ^= rotl((y[d] + y[cc]) & 0xffffffff, 18)
    for _ in range(10):
        qr(0,4,8,12); qr(5,9,13,1); qr(10,14,2,6); qr(15,3,7,11)
        qr(0,1,2,3); qr(5,6,7,4); qr(10,11,8,9); qr(15,12,13,14)
    return struct.pack('<16I', *[(a + b) & 0xffffffff for a, b in zip(x, y)])
def salsa():
    p = plain(); rest = p[8:]; ks = b''
    ctr = 0
    while len(ks) < len(rest):
        ks += salsa_block(PASS, p[:8], ctr); ctr += 1
    return p[:8] + bytes(a ^ b for a, b in zip(rest, ks))

def xor():
    pad = hashlib.pbkdf2_hmac('sha1', PASS, b'sH3CIVoF#rWLtJo6', 32, 1500)
    return bytes(a ^ b for a, b in zip(plain(), pad))

out = {}
out['aes'] = ossl_cfb(A.AES(PASS), 16)
out['aes-128'] = ossl_cfb(A.AES(PASS[:16]), 16)
out['aes-192'] = ossl_cfb(A.AES(PASS[:24]), 16)
out['sm4'] = ossl_cfb(A.SM4(PASS[:16]), 16)
for name, mk in (('3des', lambda: OLD.TripleDES(PASS[:24])), ('cast5', lambda: OLD.CAST5(PASS[:16])), ('blowfish', lambda: OLD.Blowfish(PASS))):
    try:
        out[name] = ossl_cfb(mk(), 8)
    except Exception as e:
        print('# skipped', name, e, file=sys.stderr)
out['tea'] = own_cfb(tea_enc, PASS[:16])
out['xtea'] = own_cfb(xtea_enc, PASS[:16])
out['salsa20'] = salsa()
out['xor'] = xor()
out['none'] = plain()
out['null'] = PAYLOAD
out['aes-128-gcm'] = NONCE[:12] + AESGCM(PASS[:16]).encrypt(NONCE[:12], PAYLOAD, None)
# Salsa20 self-check against the eSTREAM/DJB test: key 0x80,0..., nonce 0 -> block starts e3be8fdd
k = bytes([0x80]) + bytes(31)
print('# salsa20 self-check', salsa_block(k, bytes(8), 0)[:4].hex(), file=sys.stderr)
for name, v in out.items():
    print(f'    ("{name}", "{v.hex()}"),')
print_block_vectors()
print('derive_key("it\'s a secrect")', PASS.hex())
print('derive_key("")', hashlib.pbkdf2_hmac('sha1', b'', b'kcp-go', 4096, 32).hex())
PAD = hashlib.pbkdf2_hmac('sha1', PASS, b'sH3CIVoF#rWLtJo6', 32, 1500)
print('xor pad head', PAD[:16].hex(), 'tail', PAD[-16:].hex())
