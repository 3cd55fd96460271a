/**
 * Merge: fold a child VHD into its parent (what retention does when the oldest backup of a chain goes),
 * ending with ONE VHD under the child's name that equals the former chain parent+child, carrying the
 * child's UUID (so grandchildren still chain to it) and the parent's own parent link.
 *
 * Two strategies, both resumable after a crash from `<dir>/.<parent name>.merge.json`:
 * - in place (parent and child are VhdDirectory aliases, XO's common case): block by block, the child's
 *   block file is renamed into the parent's data directory (or recomposed when its bitmap is partial or
 *   the compressions differ); progress is saved every few blocks. Then the parent's BAT, header and
 *   footer are rewritten (union of blocks, child's UUID and size), the result is validated (every
 *   block present and sized), the child's alias is switched to the parent's data directory, and only
 *   then are the child's data and the parent's alias removed. On resume, a block already moved (absent
 *   from the child, present in the parent) is skipped.
 * - rewrite (a VhdFile on either side: files cannot be modified in place through the remote contract):
 *   the 2-layer chain is written as a new VHD through a sink that publishes atomically over the child
 *   (VhdFile) or under a fresh data directory the child's alias is switched to. Resume redoes the copy
 *   (idempotent: parent ∪ merged = merged). The parent is deleted only after the result was reopened and
 *   checked.
 */
import { posix } from 'node:path'
import { randomBytes } from 'node:crypto'
import { errorCode } from '../common/errors.js'
import type { Remote } from '../remotes/remote.js'
import { encodeDirectoryBat } from './bat.js'
import { bitmapIsFull } from './bitmap.js'
import { VhdChain } from './chain.js'
import { FOOTER_SIZE, HEADER_SIZE, bitmapSizeBytes } from './constants.js'
import { corrupt } from './corrupt.js'
import { blockPath, createVhdDirectorySink, writeChunkFile } from './directory-sink.js'
import { createVhdFileSink } from './file-sink.js'
import { encodeFooter, type VhdFooter } from './footer.js'
import { encodeHeader, type VhdHeader } from './header.js'
import { isAlias, openVhd, openVhdDirectory, parentPathOf, type VhdReader } from './open.js'
import type { VhdParentRef, VhdSink } from './sink.js'

type MergeStep = 'blocks' | 'metadata' | 'publish' | 'cleanup'

interface MergeState {
  version: 1
  mode: 'inplace' | 'rewrite'
  parentPath: string
  childPath: string
  /** data directories (in place) / new data directory (rewrite of an alias child) */
  parentDataPath: string
  childDataPath: string
  newDataPath?: string
  childUuid: string
  parentUuid: string
  childBlocks: number[]
  nextBlock: number
  step: MergeStep
}

interface MergeOptions {
  signal?: AbortSignal
  /** called after each merged block */
  onProgress?: (done: number, total: number) => void
  /** save the state every N blocks (default 8) */
  stateEveryBlocks?: number
  /** test hook: throw after this many blocks (simulates a crash) */
  crashAfterBlocks?: number
}

interface MergeResult {
  /** where the merged VHD now lives (the child's path) */
  path: string
  mode: 'inplace' | 'rewrite'
  mergedBlocks: number
  resumed: boolean
}

export function mergeStatePath(parentPath: string): string {
  const dir = posix.dirname(parentPath)
  const name = `.${posix.basename(parentPath)}.merge.json`
  return dir === '.' ? name : `${dir}/${name}`
}

async function readState(remote: Remote, path: string): Promise<MergeState | undefined> {
  let text: string
  try {
    text = (await remote.readFile(path)).toString('utf8')
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined
    throw error
  }
  let state: unknown
  try {
    state = JSON.parse(text)
  } catch (error) {
    throw corrupt('merge', 'state', 0, `${path} is not JSON: remove it only after checking both VHDs`, error)
  }
  const s = state as Partial<MergeState>
  if (s.version !== 1 || (s.mode !== 'inplace' && s.mode !== 'rewrite') || typeof s.parentPath !== 'string' || typeof s.childPath !== 'string' || !Array.isArray(s.childBlocks) || typeof s.nextBlock !== 'number' || typeof s.step !== 'string') {
    throw corrupt('merge', 'state', 0, `${path} is not a merge state this version understands`)
  }
  return s as MergeState
}

/**
 * Resumes the merge recorded at `statePath` (a `.<parent>.merge.json`): 'resumed' once it finished, or
 * 'stale' when its child no longer exists (nothing left to merge into: the state file is removed, the
 * parent is left to retention and verify, which report it when nothing depends on it).
 */
export async function resumeMerge(remote: Remote, statePath: string, options: MergeOptions = {}): Promise<{ outcome: 'resumed' | 'stale'; state: { parentPath: string; childPath: string } }> {
  const state = await readState(remote, statePath)
  if (state === undefined) throw corrupt('merge', 'state', 0, `${statePath}: no such merge state`)
  if (mergeStatePath(state.parentPath) !== statePath) throw corrupt('merge', 'state', 0, `${statePath} records a merge into ${state.parentPath}, whose state belongs elsewhere`)
  if (!(await remote.exists(state.childPath))) {
    await remote.unlink(statePath)
    return { outcome: 'stale', state }
  }
  await mergeVhd(remote, state.parentPath, state.childPath, options)
  return { outcome: 'resumed', state }
}

async function writeState(remote: Remote, path: string, state: MergeState): Promise<void> {
  await remote.writeFile(path, JSON.stringify(state))
}

/** Merged footer/header: child's identity and size, parent's kind and parent link, BAT as large as either. */
function mergedHead(parent: VhdReader, child: VhdReader): { footer: VhdFooter; header: VhdHeader } {
  const footer: VhdFooter = { ...child.footer, geometry: { ...child.footer.geometry }, dataOffset: FOOTER_SIZE, diskType: parent.footer.diskType }
  const header: VhdHeader = {
    ...parent.header,
    tableOffset: FOOTER_SIZE + HEADER_SIZE,
    maxTableEntries: Math.max(parent.header.maxTableEntries, child.header.maxTableEntries),
    parentLocators: parent.header.parentLocators.map((l) => ({ ...l })),
  }
  return { footer, header }
}

/** The parent link of the merged VHD, relative to the child's directory. */
function grandParentRef(parent: VhdReader, childPath: string): VhdParentRef | undefined {
  if (parent.footer.diskType !== 4) return undefined
  const grand = parentPathOf(parent)
  return { relativePath: posix.relative(posix.dirname(`/${childPath}`), `/${grand}`), uuid: parent.header.parentUuid, timestamp: parent.header.parentTimestamp }
}

async function removeVhd(remote: Remote, path: string, dataPath: string): Promise<void> {
  if (isAlias(path)) {
    await remote.rmtree(dataPath)
    await remote.unlink(path).catch((error: unknown) => {
      if (errorCode(error) !== 'ENOENT') throw error
    })
  } else {
    await remote.unlink(path).catch((error: unknown) => {
      if (errorCode(error) !== 'ENOENT') throw error
    })
  }
}

/**
 * Merges `childPath` into its parent `parentPath` (both remote paths, VhdFile or alias). Resumes an
 * interrupted merge of the same pair from its state file.
 */
export async function mergeVhd(remote: Remote, parentPath: string, childPath: string, options: MergeOptions = {}): Promise<MergeResult> {
  const statePath = mergeStatePath(parentPath)
  let state = await readState(remote, statePath)
  const resumed = state !== undefined
  if (state !== undefined && (state.parentPath !== parentPath || state.childPath !== childPath)) {
    throw corrupt('merge', 'state', 0, `${statePath} records a merge of ${state.childPath} into ${state.parentPath}, not of ${childPath}: finish that one first`)
  }
  if (state === undefined) {
    const parent = await openVhd(remote, parentPath, options)
    const child = await openVhd(remote, childPath, options)
    if (child.footer.diskType !== 4) throw corrupt('merge', 'diskType', 60, `${childPath} is not differencing: nothing to merge it into`)
    if (child.header.parentUuid !== parent.footer.uuid) throw corrupt('chain', 'parentUuid', FOOTER_SIZE + 40, `${childPath} expects parent ${child.header.parentUuid} but ${parentPath} is ${parent.footer.uuid}`)
    if (child.header.blockSizeBytes !== parent.header.blockSizeBytes) throw corrupt('merge', 'blockSize', FOOTER_SIZE + 32, `${childPath} and ${parentPath} have different block sizes`)
    const inplace = parent.kind === 'directory' && child.kind === 'directory' && isAlias(parentPath) && isAlias(childPath)
    state = {
      version: 1,
      mode: inplace ? 'inplace' : 'rewrite',
      parentPath,
      childPath,
      parentDataPath: parent.dataPath,
      childDataPath: child.dataPath,
      ...(inplace || !isAlias(childPath) ? {} : { newDataPath: `${posix.dirname(child.dataPath)}/${posix.basename(childPath, '.alias.vhd')}.${randomBytes(4).toString('hex')}.vhd` }),
      childUuid: child.footer.uuid,
      parentUuid: parent.footer.uuid,
      childBlocks: child.blockIndexes(),
      nextBlock: 0,
      step: 'blocks',
    }
    await writeState(remote, statePath, state)
  }
  const mergedBlocks = state.mode === 'inplace' ? await mergeInPlace(remote, statePath, state, options) : await mergeByRewrite(remote, statePath, state, options)
  await remote.unlink(statePath)
  return { path: childPath, mode: state.mode, mergedBlocks, resumed }
}

async function mergeInPlace(remote: Remote, statePath: string, state: MergeState, options: MergeOptions): Promise<number> {
  const every = options.stateEveryBlocks ?? 8
  if (state.step === 'blocks') {
    const parent = await openVhdDirectory(remote, state.parentDataPath, state.parentPath)
    const child = await openVhdDirectory(remote, state.childDataPath, state.childPath)
    for (let k = state.nextBlock; k < state.childBlocks.length; k++) {
      options.signal?.throwIfAborted()
      if (options.crashAfterBlocks !== undefined && k >= options.crashAfterBlocks) throw new Error(`simulated crash after ${k} blocks`)
      const index = state.childBlocks[k] as number
      const src = blockPath(state.childDataPath, index)
      const dst = blockPath(state.parentDataPath, index)
      if (!(await remote.exists(src))) {
        // moved before a crash: it must be in the parent now
        if (!(await remote.exists(dst))) throw corrupt('merge', `blocks/${index}`, index, `block ${index} is in neither ${state.childDataPath} nor ${state.parentDataPath}: the merge cannot go on`)
      } else {
        const block = await child.readBlock(index, options.signal)
        if (bitmapIsFull(block.bitmap, child.header.blockSizeBytes) && child.compression === parent.compression) {
          await remote.rename(src, dst)
        } else {
          const composed = Buffer.from(block.buffer)
          if (!bitmapIsFull(block.bitmap, child.header.blockSizeBytes) && parent.hasBlock(index)) {
            const chain = new VhdChain([child, parent])
            const merged = await chain.readBlock(index, options.signal)
            merged?.buffer.copy(composed)
          }
          composed.fill(0xff, 0, Math.ceil(child.header.blockSizeBytes / 512 / 8))
          await writeChunkFile(remote, dst, composed, parent.compression, options.signal)
          await remote.unlink(src)
        }
      }
      options.onProgress?.(k + 1, state.childBlocks.length)
      if ((k + 1) % every === 0) await writeState(remote, statePath, { ...state, nextBlock: k + 1 })
    }
    state.step = 'metadata'
    state.nextBlock = state.childBlocks.length
    await writeState(remote, statePath, state)
  }
  if (state.step === 'metadata') {
    const parent = await openVhdDirectory(remote, state.parentDataPath, state.parentPath)
    const child = await openVhdDirectory(remote, state.childDataPath, state.childPath)
    const { footer, header } = mergedHead(parent, child)
    const present = new Set([...parent.blockIndexes(), ...state.childBlocks])
    const c = parent.compression
    await writeChunkFile(remote, `${state.parentDataPath}/bat`, encodeDirectoryBat(header.maxTableEntries, (i) => present.has(i)), c)
    await writeChunkFile(remote, `${state.parentDataPath}/header`, encodeHeader(header), c)
    await writeChunkFile(remote, `${state.parentDataPath}/footer`, encodeFooter(footer), c)
    // validate before anything of the child goes
    const merged = await openVhdDirectory(remote, state.parentDataPath, state.parentPath)
    if (merged.footer.uuid !== state.childUuid) throw corrupt('merge', 'footer.uuid', 68, `${state.parentDataPath}: merged footer has UUID ${merged.footer.uuid}, expected ${state.childUuid}`)
    const full = bitmapSizeBytes(header.blockSizeBytes) + header.blockSizeBytes
    for (const index of present) {
      const p = blockPath(state.parentDataPath, index)
      let size: number
      try {
        size = (await remote.stat(p)).size
      } catch (error) {
        throw corrupt('merge', `blocks/${index}`, index, `${p} is missing after the merge`, error)
      }
      if (c === 'none' && size !== full) throw corrupt('merge', `blocks/${index}`, index, `${p} is ${size} bytes after the merge, expected ${full}`)
    }
    state.step = 'publish'
    await writeState(remote, statePath, state)
  }
  if (state.step === 'publish') {
    const target = posix.relative(posix.dirname(`/${state.childPath}`), `/${state.parentDataPath}`)
    await remote.writeFile(state.childPath, target)
    if (state.childDataPath !== state.parentDataPath) await remote.rmtree(state.childDataPath)
    await remote.unlink(state.parentPath).catch((error: unknown) => {
      if (errorCode(error) !== 'ENOENT') throw error
    })
    state.step = 'cleanup'
    await writeState(remote, statePath, state)
  }
  return state.childBlocks.length
}

async function mergeByRewrite(remote: Remote, statePath: string, state: MergeState, options: MergeOptions): Promise<number> {
  if (state.step === 'blocks') {
    const parent = await openVhd(remote, state.parentPath, options)
    const child = await openVhd(remote, state.childPath, options)
    const chain = new VhdChain([child, parent])
    const { footer, header } = mergedHead(parent, child)
    const parentRef = grandParentRef(parent, state.childPath)
    const sinkOptions = { ...(parentRef === undefined ? {} : { parent: parentRef }), ...(options.signal === undefined ? {} : { signal: options.signal }) }
    let sink: VhdSink
    if (isAlias(state.childPath)) {
      const dataPath = state.newDataPath as string
      await remote.rmtree(dataPath) // leftover of an interrupted attempt (never referenced before publish)
      sink = createVhdDirectorySink(remote, state.childPath, { ...sinkOptions, dataPath, compression: child.compression })
    } else {
      sink = createVhdFileSink(remote, state.childPath, sinkOptions)
    }
    const order = chain.blockIndexes()
    try {
      await sink.begin(footer, header, order)
      let k = 0
      for (const index of order) {
        options.signal?.throwIfAborted()
        if (options.crashAfterBlocks !== undefined && k >= options.crashAfterBlocks) throw new Error(`simulated crash after ${k} blocks`)
        const block = await chain.readBlock(index, options.signal)
        if (block === undefined) throw new Error(`block ${index} vanished during the merge`)
        await sink.writeBlock(block)
        k++
        options.onProgress?.(k, order.length)
      }
      await sink.end()
    } catch (error) {
      await sink.abort(error)
      throw error
    }
    state.step = 'cleanup'
    state.nextBlock = order.length
    await writeState(remote, statePath, state)
  }
  if (state.step === 'cleanup') {
    const merged = await openVhd(remote, state.childPath, options)
    if (merged.footer.uuid !== state.childUuid) throw corrupt('merge', 'footer.uuid', 68, `${state.childPath}: merged VHD has UUID ${merged.footer.uuid}, expected ${state.childUuid}`)
    await removeVhd(remote, state.parentPath, state.parentDataPath)
    if (isAlias(state.childPath) && merged.dataPath !== state.childDataPath) await remote.rmtree(state.childDataPath)
  }
  return state.childBlocks.length
}

