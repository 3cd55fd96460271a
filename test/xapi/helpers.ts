/** Shared helpers of the XAPI tests: external tools, stream to file, vhdimount of a chain. */
import { execFile } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { mkdir, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { promisify } from 'node:util'

export const run = promisify(execFile)

export async function toFile(stream: Readable, path: string): Promise<void> {
  await pipeline(stream, createWriteStream(path))
}

/** `qemu-img compare` exit code: 0 identical, 1 different (anything else throws). */
export async function qemuCompare(vhd: string, raw: string): Promise<{ identical: boolean; output: string }> {
  try {
    const { stdout } = await run('qemu-img', ['compare', '-f', 'vpc', vhd, '-F', 'raw', raw])
    return { identical: true, output: stdout }
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string }
    if (e.code === 1) return { identical: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}` }
    throw error
  }
}

/**
 * Mounts a VHD (libvhdi follows the parent through the header's parent name, in the same directory)
 * and runs `fn` with the layer files (vhdi1 = oldest parent ... vhdiN = the given VHD).
 */
export async function withVhdiMount<T>(vhd: string, dir: string, fn: (layers: string[]) => Promise<T>): Promise<T> {
  const mnt = join(dir, `mnt-${Date.now()}-${Math.random().toString(36).slice(2)}`)
  await mkdir(mnt)
  await run('vhdimount', [vhd, mnt])
  try {
    const names = (await readdir(mnt)).filter((n) => /^vhdi\d+$/.test(n)).sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)))
    return await fn(names.map((n) => join(mnt, n)))
  } finally {
    await run('umount', [mnt])
  }
}

export async function filesEqual(a: string, b: string): Promise<boolean> {
  try {
    await run('cmp', ['-s', a, b])
    return true
  } catch {
    return false
  }
}
