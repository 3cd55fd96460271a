/**
 * Metadata backup methods with the names, parameters and answers of Xen Orchestra's proxy
 * (@xen-orchestra/proxy backups mixin), which xo-server calls for the metadata backups of a remote linked
 * to a proxy:
 *   listPoolMetadataBackups({remotes})      { [remoteId]: { [poolUuid]: backups } }, ids with a leading
 *                                           slash (xo-server prefixes them with the remote id)
 *   listXoMetadataBackups({remotes})        { [remoteId]: backups }
 *   deleteMetadataBackup({backupId, remote})
 *   restoreMetadataBackup({backupId, remote, xapi?})   XO's task log as NDJSON: one `metadataRestore`
 *                                           task (its properties carry the backup's metadata.json);
 *                                           a pool backup's dump is sent to the pool of `xapi`
 *                                           (PUT /pool/xmldbdump), an XO configuration backup's data
 *                                           is the task's result (xo-server imports it)
 * A remote that fails a listing is logged and left out, as XO's proxy does.
 */
import { z } from 'zod'
import { BackupProxyError, serializeError, type JsonValue } from '../../common/errors.js'
import { restorePoolMetadataTo } from '../../backup/metadata-backup.js'
import { deleteMetadataBackup, listPoolMetadataBackups, listXoMetadataBackups, parseMetadataBackupId, readXoConfigBackup } from '../../backup/metadata-layout.js'
import { xapiSchema } from '../../queue/tasks.js'
import type { Remote } from '../../remotes/remote.js'
import { method, type MethodDefinition } from '../rpc.js'
import type { XoTaskEvent } from '../xo-log.js'
import { newXoTaskId } from './backup.js'
import { xapiFromXo } from '../xo-job.js'
import { withXoRemote, xoRemoteParam, type ApiDeps } from './deps.js'

const remotesParam = z.object({ remotes: z.record(z.string(), xoRemoteParam) }).strict()

function listMethod(what: string, list: (r: Remote) => Promise<unknown>): MethodDefinition {
  return method(`list ${what} backups`, remotesParam, async ({ remotes }, ctx) => {
    const out: Record<string, JsonValue> = {}
    await Promise.all(Object.entries(remotes).map(async ([remoteId, remote]) => {
      try {
        out[remoteId] = (await withXoRemote<unknown>(remote, list)) as JsonValue
      } catch (error) {
        ctx.logger.warn({ err: error, remoteId }, `backup.list: listing the ${what} backups of a remote failed; it is left out`)
      }
    }))
    return out
  })
}

// XO sends the pool's server as registered (`url` may be a bare host): https:// is added as XO's client does
const restoreParams = z.object({ backupId: z.string().min(1).max(1024), remote: xoRemoteParam, xapi: z.preprocess(xapiFromXo, xapiSchema).optional() }).strict()

function restoreMethod(): MethodDefinition {
  return method('restore a metadata backup', restoreParams, async ({ backupId, remote, xapi }, ctx) => {
    const parsed = parseMetadataBackupId(backupId)
    return withXoRemote(remote, async (r) => {
      const id = newXoTaskId()
      const metadata = JSON.parse((await r.readFile(`${parsed.dir}/metadata.json`)).toString('utf8')) as JsonValue
      const events: XoTaskEvent[] = [{ type: 'start', id, timestamp: Date.now(), properties: { name: 'metadataRestore', metadata } }]
      try {
        let result: JsonValue | undefined
        if (parsed.type === 'xoConfig') result = await readXoConfigBackup(r, parsed.dir)
        else {
          if (xapi === undefined) throw new BackupProxyError('E_API_REQUEST', 'restoring a pool metadata backup needs the pool\'s xapi: give the pool master in the call\'s `xapi`')
          await restorePoolMetadataTo(r, parsed.dir, xapi, ctx.signal)
        }
        events.push({ type: 'end', id, timestamp: Date.now(), status: 'success', ...(result === undefined ? {} : { result }) })
      } catch (error) {
        ctx.logger.warn({ err: error, backupId: parsed.dir }, 'backup.restoreMetadataBackup failed')
        events.push({ type: 'end', id, timestamp: Date.now(), status: 'failure', result: serializeError(error) as unknown as JsonValue })
      }
      return events
    })
  })
}

export function metadataMethods(_deps: ApiDeps): Record<string, MethodDefinition> {
  return {
    'backup.listPoolMetadataBackups': listMethod('pool metadata', listPoolMetadataBackups),
    'backup.listXoMetadataBackups': listMethod('XO metadata', listXoMetadataBackups),
    'backup.deleteMetadataBackup': method('delete Metadata backup', z.object({ backupId: z.string().min(1).max(1024), remote: xoRemoteParam }).strict(), async ({ backupId, remote }) => {
      await withXoRemote(remote, (r) => deleteMetadataBackup(r, backupId))
    }),
    'backup.restoreMetadataBackup': restoreMethod(),
  }
}
