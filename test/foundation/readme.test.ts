import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { withConfigReference } from '../../src/config/reference.js'

describe('README', () => {
  it('configuration reference matches the schema (run npm run docs:config)', async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
    expect(withConfigReference(readme)).toBe(readme)
  })

  it('opens with the demo command and the test command', async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
    const blocks = [...readme.matchAll(/```(?:sh|bash)\n([^`]+)```/g)].map((m) => m[1]!.trim())
    expect(blocks[0]).toBe('npm ci && npm run demo')
    const ci = await readFile(new URL('../../.ci/run', import.meta.url), 'utf8')
    expect(ci).toContain(blocks[1])
  })
})
