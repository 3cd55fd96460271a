/**
 * XXH64 (seed 0), the checksum XAPI writes beside every 1 MiB chunk of an XVA (`Ref:<n>/<chunk>.xxhash`,
 * 16 upper-case hex digits) and checks on import. Node has no xxHash and no package is needed for one
 * function: this is the reference algorithm on 32-bit halves (`Math.imul` and 16-bit limbs for the
 * 64-bit products), allocation-free per call, a few hundred MiB/s — enough to verify an XVA while it
 * streams. BigInt would be ~100× slower.
 */

// the five 64-bit primes of XXH64 as [high, low] 32-bit halves
const P1H = 0x9e3779b1, P1L = 0x85ebca87
const P2H = 0xc2b2ae3d, P2L = 0x27d4eb4f
const P3H = 0x165667b1, P3L = 0x9e3779f9
const P4H = 0x85ebca77, P4L = 0xc2b2ae63
const P5H = 0x27d4eb2f, P5L = 0x165667c5

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1

// results of the 64-bit helpers (no allocation in the hot loop)
let rh = 0
let rl = 0

function mul(ah: number, al: number, bh: number, bl: number): void {
  const a0 = al & 0xffff, a1 = al >>> 16, b0 = bl & 0xffff, b1 = bl >>> 16
  const p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1
  const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff)
  rl = (((mid & 0xffff) << 16) | (p00 & 0xffff)) >>> 0
  rh = (p11 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16) + Math.imul(ah, bl) + Math.imul(al, bh)) >>> 0
}

function add(ah: number, al: number, bh: number, bl: number): void {
  const l = al + bl
  rl = l >>> 0
  rh = (ah + bh + (l > 0xffffffff ? 1 : 0)) >>> 0
}

function rotl(h: number, l: number, r: number): void {
  if (r >= 32) {
    const t = h
    h = l
    l = t
    r -= 32
  }
  if (r === 0) {
    rh = h >>> 0
    rl = l >>> 0
    return
  }
  rh = ((h << r) | (l >>> (32 - r))) >>> 0
  rl = ((l << r) | (h >>> (32 - r))) >>> 0
}

/** acc = rotl(acc + input * P2, 31) * P1, result in rh/rl */
function round(acch: number, accl: number, ih: number, il: number): void {
  mul(ih, il, P2H, P2L)
  add(acch, accl, rh, rl)
  rotl(rh, rl, 31)
  mul(rh, rl, P1H, P1L)
}

/** acc = (acc ^ round(0, v)) * P1 + P4 */
function mergeRound(acch: number, accl: number, vh: number, vl: number): void {
  round(0, 0, vh, vl)
  mul((acch ^ rh) >>> 0, (accl ^ rl) >>> 0, P1H, P1L)
  add(rh, rl, P4H, P4L)
}

/**
 * The 32-byte stripes (the hot loop): each of the 4 lanes (hi/lo in `s`) = rotl(lane + input * P2, 31) * P1,
 * written out with locals only. Returns the offset after the last whole stripe.
 */
function stripes(view: DataView, len: number, s: Uint32Array): number {
  // aligned data (most buffers; the machine is little-endian as XXH64 reads) is read as 32-bit words
  const words = view.byteOffset % 4 === 0 && LITTLE_ENDIAN ? new Uint32Array(view.buffer, view.byteOffset, len >>> 2) : undefined
  let p = 0
  const P2_0 = P2L & 0xffff, P2_1 = P2L >>> 16
  const P1_0 = P1L & 0xffff, P1_1 = P1L >>> 16
  for (; p + 32 <= len; p += 32) {
    for (let k = 0; k < 8; k += 2) {
      const il = words === undefined ? view.getUint32(p + k * 4, true) : words[(p >>> 2) + k]!
      const ih = words === undefined ? view.getUint32(p + k * 4 + 4, true) : words[(p >>> 2) + k + 1]!
      // m = input * P2
      let a0 = il & 0xffff, a1 = il >>> 16
      let p00 = a0 * P2_0, p01 = a0 * P2_1, p10 = a1 * P2_0
      let mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff)
      let ml = (((mid & 0xffff) << 16) | (p00 & 0xffff)) >>> 0
      let mh = (a1 * P2_1 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16) + Math.imul(ih, P2L) + Math.imul(il, P2H)) >>> 0
      // acc + m
      const sum = s[k + 1]! + ml
      const al = sum >>> 0
      const ah = (s[k]! + mh + (sum > 0xffffffff ? 1 : 0)) >>> 0
      // rotl 31
      const xl = ((al << 31) | (ah >>> 1)) >>> 0
      const xh = ((ah << 31) | (al >>> 1)) >>> 0
      // * P1
      a0 = xl & 0xffff
      a1 = xl >>> 16
      p00 = a0 * P1_0
      p01 = a0 * P1_1
      p10 = a1 * P1_0
      mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff)
      ml = (((mid & 0xffff) << 16) | (p00 & 0xffff)) >>> 0
      mh = (a1 * P1_1 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16) + Math.imul(xh, P1L) + Math.imul(xl, P1H)) >>> 0
      s[k] = mh
      s[k + 1] = ml
    }
  }
  return p
}

/** XXH64 of `data` with seed 0, as XAPI writes it: 16 upper-case hex digits. */
export function xxh64Hex(data: Uint8Array): string {
  const len = data.length
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  let p = 0
  let hh: number, hl: number
  if (len >= 32) {
    // v1 = P1 + P2, v2 = P2, v3 = 0, v4 = -P1 (seed 0)
    add(P1H, P1L, P2H, P2L)
    let v1h = rh, v1l = rl
    let v2h = P2H, v2l = P2L
    let v3h = 0, v3l = 0
    add(~P1H >>> 0, ~P1L >>> 0, 0, 1)
    let v4h = rh, v4l = rl
    const lanes = new Uint32Array([v1h, v1l, v2h, v2l, v3h, v3l, v4h, v4l])
    p = stripes(view, len, lanes)
    v1h = lanes[0]!
    v1l = lanes[1]!
    v2h = lanes[2]!
    v2l = lanes[3]!
    v3h = lanes[4]!
    v3l = lanes[5]!
    v4h = lanes[6]!
    v4l = lanes[7]!
    rotl(v1h, v1l, 1)
    let sh = rh, sl = rl
    rotl(v2h, v2l, 7)
    add(sh, sl, rh, rl)
    sh = rh
    sl = rl
    rotl(v3h, v3l, 12)
    add(sh, sl, rh, rl)
    sh = rh
    sl = rl
    rotl(v4h, v4l, 18)
    add(sh, sl, rh, rl)
    mergeRound(rh, rl, v1h, v1l)
    mergeRound(rh, rl, v2h, v2l)
    mergeRound(rh, rl, v3h, v3l)
    mergeRound(rh, rl, v4h, v4l)
    hh = rh
    hl = rl
  } else {
    hh = P5H
    hl = P5L
  }
  return finish(hh, hl, view, data, p)
}

/** XXH64's end: the length, the bytes after the last stripe, the avalanche; 16 upper-case hex digits. */
function finish(hh: number, hl: number, view: DataView, data: Uint8Array, p: number): string {
  const len = data.length
  // h += len (len < 2^53: split into halves)
  add(hh, hl, Math.floor(len / 0x1_0000_0000) >>> 0, len >>> 0)
  hh = rh
  hl = rl
  while (p + 8 <= len) {
    round(0, 0, view.getUint32(p + 4, true), view.getUint32(p, true))
    rotl((hh ^ rh) >>> 0, (hl ^ rl) >>> 0, 27)
    mul(rh, rl, P1H, P1L)
    add(rh, rl, P4H, P4L)
    hh = rh
    hl = rl
    p += 8
  }
  if (p + 4 <= len) {
    mul(0, view.getUint32(p, true), P1H, P1L)
    rotl((hh ^ rh) >>> 0, (hl ^ rl) >>> 0, 23)
    mul(rh, rl, P2H, P2L)
    add(rh, rl, P3H, P3L)
    hh = rh
    hl = rl
    p += 4
  }
  while (p < len) {
    mul(0, data[p]!, P5H, P5L)
    rotl((hh ^ rh) >>> 0, (hl ^ rl) >>> 0, 11)
    mul(rh, rl, P1H, P1L)
    hh = rh
    hl = rl
    p++
  }
  // avalanche: h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32
  hl = (hl ^ (hh >>> 1)) >>> 0
  mul(hh, hl, P2H, P2L)
  const l29 = (rl ^ ((rl >>> 29) | (rh << 3))) >>> 0
  const h29 = (rh ^ (rh >>> 29)) >>> 0
  mul(h29, l29, P3H, P3L)
  hh = rh
  hl = (rl ^ rh) >>> 0
  return hh.toString(16).toUpperCase().padStart(8, '0') + hl.toString(16).toUpperCase().padStart(8, '0')
}
