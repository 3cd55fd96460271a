/**
 * The compressions of an XVA (XAPI's `use_compression=true|zstd`; XO's job `compression` `native` =
 * gzip, `zstd`): streams to compress and decompress, and detection by magic number as XAPI's import and
 * XO's isValidXva do. gzip is node:zlib. zstd is node:zlib's own where the running Node has it (22.15+);
 * this project supports Node 20, which has none, so there it runs the system `zstd` binary (what XAPI
 * itself uses) as a stream filter — no npm package compresses zstd as fast, and XAPI hosts and this
 * project's images ship the binary. A missing binary is a coded error that says to install it.
 */
import { spawn } from 'node:child_process'
import { Duplex } from 'node:stream'
import * as zlib from 'node:zlib'
import { BackupProxyError } from '../common/errors.js'

export type XvaCompression = 'gzip' | 'zstd' | 'none'

const GZIP_MAGIC = Buffer.from('1f8b', 'hex')
const ZSTD_MAGIC = Buffer.from('28b52ffd', 'hex')

/** The compression of an XVA from its first bytes (at least 4). */
export function detectCompression(head: Buffer): XvaCompression {
  if (head.subarray(0, 2).equals(GZIP_MAGIC)) return 'gzip'
  if (head.subarray(0, 4).equals(ZSTD_MAGIC)) return 'zstd'
  return 'none'
}

/** XO's job compression → the XVA's: `native` = gzip, `zstd`, `''` = none. */
export function jobCompression(c: '' | 'native' | 'zstd'): XvaCompression {
  return c === '' ? 'none' : c === 'native' ? 'gzip' : 'zstd'
}

/** XAPI's `use_compression` query value for a compression. */
export function useCompressionParam(c: XvaCompression): string {
  return c === 'gzip' ? 'true' : c === 'zstd' ? 'zstd' : 'false'
}

type ZstdFactory = (options?: object) => Duplex
const builtin = zlib as unknown as { createZstdCompress?: ZstdFactory; createZstdDecompress?: ZstdFactory }

function zstdProcess(args: string[]): Duplex {
  const child = spawn('zstd', [...args, '-q', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => {
    if (stderr.length < 4096) stderr += c.toString('utf8')
  })
  const duplex = Duplex.from({ writable: child.stdin, readable: child.stdout })
  child.once('error', (error: NodeJS.ErrnoException) => {
    duplex.destroy(
      error.code === 'ENOENT'
        ? new BackupProxyError('E_CONFIG_INVALID', 'zstd compression needs the `zstd` program on this Node version (< 22.15): install it (apt-get install zstd)', { cause: error })
        : error,
    )
  })
  child.once('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGTERM') duplex.destroy(new BackupProxyError('E_XVA_CORRUPT', `zstd exited with ${code ?? signal}: ${stderr.trim()}`))
  })
  duplex.once('close', () => {
    if (child.exitCode === null) child.kill('SIGTERM')
  })
  return duplex
}

export function compressStream(c: Exclude<XvaCompression, 'none'>): Duplex {
  if (c === 'gzip') return zlib.createGzip()
  return builtin.createZstdCompress?.() ?? zstdProcess(['-3'])
}

export function decompressStream(c: Exclude<XvaCompression, 'none'>): Duplex {
  if (c === 'gzip') return zlib.createGunzip()
  return builtin.createZstdDecompress?.() ?? zstdProcess(['-d'])
}
