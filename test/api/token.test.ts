/** `backup-proxy api token`: the token printed once, only its hash stored (0600), and the hash verifies it. */
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { makeApiToken } from '../../src/cli/commands/api.js'
import { TokenVerifier, parseTokenHash } from '../../src/api/token.js'
import { runCli } from '../../src/cli/program.js'
import { useTempDir } from '../helpers/tmp.js'

const dir = useTempDir('bp-api-token-')

function io() {
  const out: string[] = []
  const err: string[] = []
  return { io: { stdout: (t: string) => void out.push(t), stderr: (t: string) => void err.push(t), isTTY: false }, out: () => out.join(''), err: () => err.join('') }
}

describe('api token', () => {
  it('prints a new token once and writes only its hash, mode 0600', async () => {
    const c = io()
    const file = join(dir(), 'token.hash')
    expect(await runCli(['api', 'token', '--hash-file', file], c.io)).toBe(0)
    const token = c.out().trim()
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/)
    const hash = (await readFile(file, 'utf8')).trim()
    expect(hash).toMatch(/^scrypt\$/)
    expect(hash).not.toContain(token)
    expect(c.err()).not.toContain(token)
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    const verifier = new TokenVerifier(hash)
    expect(await verifier.verify(token)).toBe(true)
    expect(await verifier.verify(`${token}x`)).toBe(false)
    expect(await verifier.verify(undefined)).toBe(false)
  })

  it('hashes a token given on stdin without printing it', async () => {
    const c = io()
    await makeApiToken({ stdin: true }, c.io, () => Promise.resolve('my-own-token-from-xo-0123456789'))
    expect(c.out()).toBe('')
    const hash = /scrypt\$\S+/.exec(c.err())![0]
    expect(await new TokenVerifier(hash).verify('my-own-token-from-xo-0123456789')).toBe(true)
  })

  it('refuses a hash that is not one of ours, naming the key and not echoing it', () => {
    expect(() => parseTokenHash('sha1$abc', 'api.tokenHash')).toThrow(/api\.tokenHash/)
    expect(() => parseTokenHash('sha1$abc', 'api.tokenHash')).not.toThrow(/sha1\$abc/)
  })
})
