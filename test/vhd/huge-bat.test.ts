/**
 * A VhdFile on a remote whose header claims a huge BAT (maxTableEntries up to 2^32 - 1, checksum valid):
 * opening it for a restore (openVhd, openChain) fails with E_VHD_CORRUPT naming the header field, not with
 * Node's raw ERR_OUT_OF_RANGE from allocating the table.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import type { LocalRemote } from '../../src/remotes/local.js'
import { vhdChecksum } from '../../src/vhd/checksum.js'
import { openChain } from '../../src/vhd/chain.js'
import { openVhd } from '../../src/vhd/open.js'
import { useTempDir } from '../helpers/tmp.js'
import { makeFixture } from './fixtures.js'
import { localRemote } from './remote.js'

const tmp = useTempDir('bp-vhd-huge-bat-')
let remote: LocalRemote

beforeAll(async () => {
  remote = await localRemote(join(tmp(), 'remote'))
})

describe('a header with a huge maxTableEntries', () => {
  it.each([0xffff_ffff, 0x4000_0000, 0x0100_0000])('maxTableEntries %i: E_VHD_CORRUPT on header.maxTableEntries', async (entries) => {
    const buf = Buffer.from(makeFixture({ sizeBytes: 8 << 20, blocks: [0, 1], seed: 'huge' }).vhd)
    buf.writeUInt32BE(entries, 512 + 28)
    buf.writeUInt32BE(vhdChecksum(buf.subarray(512, 1536), 36), 512 + 36)
    const name = `huge-${entries}.vhd`
    await writeFile(join(remote.root, name), buf)
    const expected = { code: 'E_VHD_CORRUPT', fields: { structure: 'header', field: 'maxTableEntries', offset: 540 } }
    await expect(openVhd(remote, name)).rejects.toMatchObject(expected)
    await expect(openChain(remote, name)).rejects.toMatchObject(expected)
  })
})
