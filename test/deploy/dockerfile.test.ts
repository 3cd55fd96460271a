/**
 * Dockerfile, checked without a Docker engine: the dockerfile-utils linter (the one behind the VS Code
 * Dockerfile language server) reports nothing, and the parsed instructions (dockerfile-ast) show a
 * multi-stage build whose runtime stage runs as a non-root user with a HEALTHCHECK on /healthz, copies
 * only from the build stage, and starts `backup-proxy serve` in exec form.
 */
import { execFile } from 'node:child_process'
import { readFile, stat } from 'node:fs/promises'
import { promisify } from 'node:util'
import { DockerfileParser } from 'dockerfile-ast'
import { validate } from 'dockerfile-utils'
import { describe, expect, it } from 'vitest'
import { createMetrics, startHttpServer } from '../../src/metrics/index.js'
import { getFreePort } from '../helpers/ports.js'

const root = new URL('../../', import.meta.url)

async function load() {
  const text = await readFile(new URL('Dockerfile', root), 'utf8')
  return { text, dockerfile: DockerfileParser.parse(text) }
}

describe('Dockerfile', () => {
  it('passes the dockerfile-utils linter', async () => {
    const { text } = await load()
    expect(validate(text).map((d) => `line ${d.range.start.line + 1}: ${typeof d.message === "string" ? d.message : d.message.value}`)).toEqual([])
    // the linter can fail
    expect(validate('FROM node:20\nCMD ["a"]\nCMD ["b"]\n').length).toBeGreaterThan(0)
  })

  it('is multi-stage; the runtime stage runs as non-root with a healthcheck and exec-form entrypoint', async () => {
    const { dockerfile } = await load()
    const froms = dockerfile.getFROMs()
    expect(froms.length).toBeGreaterThanOrEqual(2)
    const stages = froms.map((f) => f.getBuildStage())
    expect(stages).toEqual(['build', 'runtime'])
    // base image pinned by an ARG with a versioned default, never :latest: the newest Node line that
    // package.json's engines lists (the current LTS)
    const nodeImage = dockerfile.getInitialARGs().find((a) => a.getProperty()?.getName() === 'NODE_IMAGE')
    const tag = /^node:(\d+)(?:\.\d+)*-bookworm-slim$/.exec(nodeImage?.getProperty()?.getValue() ?? '')
    expect(tag).not.toBeNull()
    const engines = (JSON.parse(await readFile(new URL('package.json', root), 'utf8')) as { engines: { node: string } }).engines.node
    const lines = engines.split('||').map((r) => Number(/^\s*\^(\d+)\./.exec(r)?.[1]))
    expect(lines.every((n) => Number.isInteger(n))).toBe(true)
    expect(Number(tag![1])).toBe(Math.max(...lines))

    const instructions = dockerfile.getInstructions()
    const runtimeStart = instructions.indexOf(froms[1]!)
    const runtime = instructions.slice(runtimeStart)
    const users = runtime.filter((i) => i.getKeyword() === 'USER').map((i) => i.getArgumentsContent())
    expect(users.length).toBeGreaterThan(0)
    expect(users.at(-1)).not.toMatch(/^(root|0)(:|$)/)

    const health = runtime.filter((i) => i.getKeyword() === 'HEALTHCHECK')
    expect(health).toHaveLength(1)
    expect(health[0]!.getArgumentsContent()).toMatch(/\/healthz/)
    expect(runtime.filter((i) => i.getKeyword() === 'EXPOSE').map((i) => i.getArgumentsContent())).toEqual(['9464'])

    const entrypoint = runtime.filter((i) => i.getKeyword() === 'ENTRYPOINT').at(-1)
    const cmd = runtime.filter((i) => i.getKeyword() === 'CMD').at(-1)
    expect(JSON.parse(entrypoint!.getArgumentsContent()!)).toEqual(['node', '/app/bin/backup-proxy.js'])
    expect(JSON.parse(cmd!.getArgumentsContent()!)).toEqual(['serve'])

    // the runtime stage takes files only from the build stage, and only build output and dependencies
    const runtimeLine = froms[1]!.getRange().start.line
    const copies = dockerfile.getCOPYs().filter((c) => c.getRange().start.line > runtimeLine)
    expect(copies.length).toBeGreaterThan(0)
    for (const c of copies) {
      expect(c.getFromFlag()?.getValue()).toBe('build')
      expect(c.getArguments()[0]?.getValue()).toMatch(/^\/src\/(package\.json|node_modules|dist|bin)$/)
    }
    // the listen address inside the container must be reachable by Prometheus
    expect(runtime.filter((i) => i.getKeyword() === 'ENV').map((i) => i.getArgumentsContent()).join(' ')).toMatch(/BACKUP_PROXY_HTTP_LISTEN=0\.0\.0\.0:9464/)
  })

  it('copies only files that exist, and .dockerignore keeps local state out of the context', async () => {
    const { dockerfile } = await load()
    const buildCopies = dockerfile
      .getCOPYs()
      .filter((c) => c.getFromFlag() === null)
      .flatMap((c) => c.getArguments().slice(0, -1).map((a) => a.getValue()))
    expect(buildCopies).toContain('package-lock.json')
    for (const source of buildCopies) await expect(stat(new URL(source, root)), `COPY ${source}`).resolves.toBeDefined()
    const ignore = (await readFile(new URL('.dockerignore', root), 'utf8')).split('\n').map((l) => l.trim())
    for (const entry of ['.git', 'node_modules', 'dist', 'test', '!test/shims']) expect(ignore).toContain(entry)
    // the build copies test/shims: it must be re-included after `test` is ignored
    expect(ignore.indexOf('!test/shims')).toBeGreaterThan(ignore.indexOf('test'))
  })
})

describe('Dockerfile HEALTHCHECK', () => {
  it('its command succeeds against a live proxy HTTP server and fails when nothing listens', async () => {
    const { dockerfile } = await load()
    const health = dockerfile.getHEALTHCHECKs()[0]!
    const json = /CMD\s+(\[.*\])\s*$/s.exec(health.getArgumentsContent()!.replace(/\\\n/g, ' '))
    const argv = JSON.parse(json![1]!) as string[]
    expect(argv.slice(0, 2)).toEqual(['node', '-e'])
    const server = await startHttpServer({ listen: '127.0.0.1:0', metrics: createMetrics({ defaultMetrics: false }), isReady: () => Promise.resolve({ ready: true, reasons: [] }) })
    const exec = promisify(execFile)
    try {
      const env = { ...process.env, BACKUP_PROXY_HTTP_LISTEN: `0.0.0.0:${new URL(server.url).port}` }
      await expect(exec(argv[0]!, argv.slice(1), { env })).resolves.toBeDefined()
      const closed = { ...process.env, BACKUP_PROXY_HTTP_LISTEN: `0.0.0.0:${await getFreePort()}` }
      await expect(exec(argv[0]!, argv.slice(1), { env: closed })).rejects.toMatchObject({ code: 1 })
    } finally {
      await server.close()
    }
  })
})
