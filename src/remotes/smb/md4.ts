/**
 * MD4 (RFC 1320), used only for NTLM's NT hash: NTOWF = MD4(UTF-16LE(password)).
 *
 * Written by hand because Node 20 ships OpenSSL 3, whose default provider no longer offers MD4
 * (`createHash('md4')` throws ERR_OSSL_EVP_UNSUPPORTED unless the process runs with
 * --openssl-legacy-provider, which we will not require of operators). The input is a password, so
 * speed does not matter; clarity does.
 */

function rotl(x: number, n: number): number {
  return ((x << n) | (x >>> (32 - n))) >>> 0
}

export function md4(input: Uint8Array): Buffer {
  const bitLength = input.length * 8
  // pad: 0x80, zeros to 56 mod 64, then the bit length as 64-bit little endian
  const paddedLength = (((input.length + 8) >> 6) + 1) << 6
  const msg = Buffer.alloc(paddedLength)
  msg.set(input)
  msg[input.length] = 0x80
  msg.writeUInt32LE(bitLength >>> 0, paddedLength - 8)
  msg.writeUInt32LE(Math.floor(bitLength / 0x100000000) >>> 0, paddedLength - 4)

  let a = 0x67452301
  let b = 0xefcdab89
  let c = 0x98badcfe
  let d = 0x10325476
  const x = new Array<number>(16)
  const F = (p: number, q: number, r: number) => (p & q) | (~p & r)
  const G = (p: number, q: number, r: number) => (p & q) | (p & r) | (q & r)
  const H = (p: number, q: number, r: number) => p ^ q ^ r

  for (let off = 0; off < paddedLength; off += 64) {
    for (let i = 0; i < 16; i++) x[i] = msg.readUInt32LE(off + i * 4)
    const w = (i: number) => x[i] ?? 0
    const [aa, bb, cc, dd] = [a, b, c, d]
    // round 1
    for (const i of [0, 4, 8, 12]) {
      a = rotl((a + F(b, c, d) + w(i)) >>> 0, 3)
      d = rotl((d + F(a, b, c) + w(i + 1)) >>> 0, 7)
      c = rotl((c + F(d, a, b) + w(i + 2)) >>> 0, 11)
      b = rotl((b + F(c, d, a) + w(i + 3)) >>> 0, 19)
    }
    // round 2
    for (const i of [0, 1, 2, 3]) {
      a = rotl((a + G(b, c, d) + w(i) + 0x5a827999) >>> 0, 3)
      d = rotl((d + G(a, b, c) + w(i + 4) + 0x5a827999) >>> 0, 5)
      c = rotl((c + G(d, a, b) + w(i + 8) + 0x5a827999) >>> 0, 9)
      b = rotl((b + G(c, d, a) + w(i + 12) + 0x5a827999) >>> 0, 13)
    }
    // round 3
    for (const i of [0, 2, 1, 3]) {
      a = rotl((a + H(b, c, d) + w(i) + 0x6ed9eba1) >>> 0, 3)
      d = rotl((d + H(a, b, c) + w(i + 8) + 0x6ed9eba1) >>> 0, 9)
      c = rotl((c + H(d, a, b) + w(i + 4) + 0x6ed9eba1) >>> 0, 11)
      b = rotl((b + H(c, d, a) + w(i + 12) + 0x6ed9eba1) >>> 0, 15)
    }
    a = (a + aa) >>> 0
    b = (b + bb) >>> 0
    c = (c + cc) >>> 0
    d = (d + dd) >>> 0
  }
  const out = Buffer.alloc(16)
  out.writeUInt32LE(a, 0)
  out.writeUInt32LE(b, 4)
  out.writeUInt32LE(c, 8)
  out.writeUInt32LE(d, 12)
  return out
}
