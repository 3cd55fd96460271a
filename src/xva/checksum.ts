/**
 * The checksum file beside a full backup's XVA (`<ts>.xva.checksum`), in Xen Orchestra's format:
 * `$<algorithm id>$$<hex digest>` of the whole file, where the id is crypt(3)'s — `1` MD5, `5` SHA-256,
 * `6` SHA-512. XO's file layer writes MD5 and verifies any of the three (it reads the id first); its
 * backups never verify the file on restore, and only its file layer reads it.
 *
 * We write SHA-256 where the CPU computes it in hardware (x86 SHA extensions, `sha_ni`; the ARMv8 `sha2`
 * instructions), because there it is more than twice as fast as MD5 (OpenSSL on the AMD EPYC of our
 * bench: MD5 ~620 MB/s, SHA-256 ~1570 MB/s) and the hash is the largest CPU cost of a full backup on
 * the proxy (every byte of the XVA goes through it, on the 2 vCPUs a proxy runs with). Elsewhere MD5,
 * XO's own choice, is the faster one and is written. `backup.xvaChecksum` forces either.
 */
import { createHash, type Hash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { arch } from 'node:os'

export type ChecksumAlgorithm = 'md5' | 'sha256' | 'sha512'
/** what `backup.xvaChecksum` may say: an algorithm we write, or `auto` (see resolveChecksumAlgorithm) */
export type ChecksumSetting = 'auto' | 'md5' | 'sha256'

const ID_OF: Record<ChecksumAlgorithm, string> = { md5: '1', sha256: '5', sha512: '6' }
const ALGORITHM_OF = new Map(Object.entries(ID_OF).map(([algorithm, id]) => [id, algorithm as ChecksumAlgorithm]))
const HEX_LENGTH: Record<ChecksumAlgorithm, number> = { md5: 32, sha256: 64, sha512: 128 }

/** XO's checksum string of a digest. */
export function formatChecksum(algorithm: ChecksumAlgorithm, hex: string): string {
  return `$${ID_OF[algorithm]}$$${hex}`
}

/** A checksum file's content as XO writes or reads it; undefined when it is not one (unknown id, bad digest). */
export function parseChecksum(content: string): { algorithm: ChecksumAlgorithm; text: string } | undefined {
  const text = content.trim()
  const m = /^\$([0-9])\$\$([0-9a-f]+)$/.exec(text)
  const algorithm = m === null ? undefined : ALGORITHM_OF.get(m[1]!)
  if (algorithm === undefined || m?.[2]?.length !== HEX_LENGTH[algorithm]) return undefined
  return { algorithm, text }
}

/** Bytes checked against a checksum string, with the algorithm it names (the restore's gate, verify, mirror). */
export class ChecksumCheck {
  readonly #hash: Hash

  private constructor(
    readonly algorithm: ChecksumAlgorithm,
    /** the expected checksum string, trimmed */
    readonly expected: string,
  ) {
    this.#hash = createHash(algorithm)
  }

  /** A check against `content` (a checksum file's text); undefined when it is not a checksum in XO's format. */
  static of(content: string): ChecksumCheck | undefined {
    const parsed = parseChecksum(content)
    return parsed === undefined ? undefined : new ChecksumCheck(parsed.algorithm, parsed.text)
  }

  update(chunk: Buffer): void {
    this.#hash.update(chunk)
  }

  /** The checksum string of the bytes given so far; ends the check (call it once). */
  actual(): string {
    return formatChecksum(this.algorithm, this.#hash.digest('hex'))
  }
}

/** True when /proc/cpuinfo's flags (x86) or features (arm64) name SHA-256 instructions. */
export function cpuHasSha256(cpuinfo: string, cpuArch: string): boolean {
  const line = cpuinfo.split('\n').find((l) => /^(flags|Features)\s*:/.test(l))
  const words = new Set((line ?? '').split(':')[1]?.trim().split(/\s+/) ?? [])
  return cpuArch === 'arm64' ? words.has('sha2') : words.has('sha_ni')
}

let hardwareSha256: boolean | undefined

function readCpuHasSha256(): boolean {
  if (hardwareSha256 === undefined) {
    let cpuinfo = ''
    try {
      cpuinfo = readFileSync('/proc/cpuinfo', 'latin1')
    } catch {
      // not Linux, or /proc hidden: nothing tells us, MD5 (XO's choice) is the safe one
    }
    hardwareSha256 = cpuHasSha256(cpuinfo, arch())
  }
  return hardwareSha256
}

/** The algorithm a setting means on this machine: `auto` is SHA-256 with hardware SHA-256, else MD5. */
export function resolveChecksumAlgorithm(setting: ChecksumSetting): 'md5' | 'sha256' {
  if (setting !== 'auto') return setting
  return readCpuHasSha256() ? 'sha256' : 'md5'
}
