/**
 * Error helpers of the SMB client: every failure is a RemoteError with a POSIX code; the NT status (name
 * and number), the command and the server go into `fields` so operators see what the server said.
 */
import { RemoteError, type PosixCode } from '../../common/errors.js'
import { COMMAND_NAMES } from './wire.js'
import { posixCode, statusName } from './status.js'

export function statusError(status: number, command: number, what: string, server: string): RemoteError {
  const name = statusName(status)
  return new RemoteError(posixCode(status), `SMB ${COMMAND_NAMES[command] ?? command} ${what} on ${server} failed: ${name}`, {
    fields: { detail: name, ntStatus: status, command: COMMAND_NAMES[command] ?? String(command), server },
  })
}

/** The NT status a RemoteError came from, if it came from the server. */
export function ntStatusOf(error: unknown): number | undefined {
  if (error instanceof RemoteError) {
    const s = error.fields.ntStatus
    return typeof s === 'number' ? s : undefined
  }
  return undefined
}

export function connectionError(code: PosixCode | 'E_REMOTE', message: string, server: string, cause?: unknown): RemoteError {
  return new RemoteError(code, message, { fields: { server }, ...(cause === undefined ? {} : { cause }) })
}
