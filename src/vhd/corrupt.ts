/**
 * Error helpers of the VHD engine: every structural problem is a `VhdCorruptError` (E_VHD_CORRUPT)
 * naming the structure (footer, header, bat, block, locator, stream, directory), the field and the byte
 * offset where it was found, so an operator (or a test) can tell exactly what was wrong.
 */
import { BackupProxyError, VhdCorruptError } from '../common/errors.js'

export type VhdStructure = 'footer' | 'header' | 'bat' | 'block' | 'bitmap' | 'locator' | 'stream' | 'directory' | 'alias' | 'chain' | 'merge'

export function corrupt(structure: VhdStructure, field: string, offset: number, message: string, cause?: unknown): VhdCorruptError {
  return new VhdCorruptError(`VHD ${structure} is corrupt: ${message} (field ${field} at byte ${offset}); the source or the backup is damaged, take a new full backup`, {
    fields: { structure, field, offset },
    ...(cause === undefined ? {} : { cause }),
  })
}

/** A valid VHD that uses a feature we do not handle (fixed disks as streams, odd block sizes...). */
export function unsupported(message: string, fields: Record<string, string | number> = {}): BackupProxyError {
  return new BackupProxyError('E_VHD_UNSUPPORTED', `${message}; this VHD feature is not supported by backup-proxy`, { fields })
}
