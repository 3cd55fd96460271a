/**
 * The package as a library: `package.json` points `main`, `types` and `exports` at files the build
 * produces from `src/`, and the README's library example compiles, strict, against the package root
 * (resolved to the sources here, as `npm run build` would emit them).
 */
import { readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('../../', import.meta.url))

/** `./dist/a/b.js` (or `.d.ts`) → `src/a/b.ts`, the file tsconfig.build.json compiles it from. */
function sourceOf(distPath: string): string {
  return `${root}src/${distPath.replace(/^\.?\/?dist\//, '').replace(/(\.d\.ts|\.js)$/, '.ts')}`
}

describe('package exports', () => {
  it('main, types and every export name a file the build produces', async () => {
    const pkg = JSON.parse(await readFile(`${root}package.json`, 'utf8')) as { main: string; types: string; exports: Record<string, string> }
    const targets = [pkg.main, pkg.types, ...Object.values(pkg.exports)]
    expect(targets.length).toBeGreaterThan(2)
    for (const target of targets) expect(existsSync(sourceOf(target)), `${target} has no source in src/`).toBe(true)
  })

  // CPU-bound, not waiting on anything: type-checking the example pulls in the program behind
  // src/index.ts and its libraries' types, about 10 s of CPU (the whole vitest run of this file: 12.6 s
  // user). The suite's 60 s bound failed at a load of 30 on 2 cores (65.9 s): bound it by 5 minutes.
  it("the README's library example compiles against the package root", { timeout: 300_000 }, async () => {
    const readme = await readFile(`${root}README.md`, 'utf8')
    const section = readme.split('## Use as a library')[1] ?? ''
    const example = /```ts\n([\s\S]*?)\n```/.exec(section)?.[1]
    expect(example, 'README has a "Use as a library" section with a ts block').toBeDefined()
    expect(example).toContain("from 'backup-proxy'")
    const file = `${root}test/foundation/__readme_example__.ts`
    const options: ts.CompilerOptions = {
      ...ts.getDefaultCompilerOptions(),
      target: ts.ScriptTarget.ES2023,
      lib: ['lib.es2023.d.ts'],
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      strict: true,
      noUncheckedIndexedAccess: true,
      exactOptionalPropertyTypes: true,
      skipLibCheck: true,
      types: ['node'],
      noEmit: true,
      baseUrl: root,
      paths: { 'backup-proxy': ['src/index.ts'] },
    }
    const host = ts.createCompilerHost(options)
    const readSource = host.getSourceFile.bind(host)
    host.getSourceFile = (name, lang, ...rest) =>
      name === file ? ts.createSourceFile(name, `export {}\n${example!}`, lang) : readSource(name, lang, ...rest)
    host.fileExists = ((exists) => (name: string) => name === file || exists(name))(host.fileExists.bind(host))
    const program = ts.createProgram([file], options, host)
    const diagnostics = ts.getPreEmitDiagnostics(program).filter((d) => d.file?.fileName === file)
    expect(diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))).toEqual([])
  })
})
