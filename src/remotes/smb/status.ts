/**
 * NT status codes ([MS-ERREF] 2.3) the client meets, and their POSIX equivalents for RemoteError.
 * Unknown failures map to EIO; the hex status and its name always go into the error's detail.
 */
import type { PosixCode } from '../../common/errors.js'

export const NtStatus = {
  SUCCESS: 0x00000000,
  PENDING: 0x00000103,
  BUFFER_OVERFLOW: 0x80000005,
  NO_MORE_FILES: 0x80000006,
  INVALID_PARAMETER: 0xc000000d,
  NO_SUCH_FILE: 0xc000000f,
  END_OF_FILE: 0xc0000011,
  MORE_PROCESSING_REQUIRED: 0xc0000016,
  ACCESS_DENIED: 0xc0000022,
  OBJECT_NAME_INVALID: 0xc0000033,
  OBJECT_NAME_NOT_FOUND: 0xc0000034,
  OBJECT_NAME_COLLISION: 0xc0000035,
  OBJECT_PATH_INVALID: 0xc0000039,
  OBJECT_PATH_NOT_FOUND: 0xc000003a,
  SHARING_VIOLATION: 0xc0000043,
  DELETE_PENDING: 0xc0000056,
  PRIVILEGE_NOT_HELD: 0xc0000061,
  WRONG_PASSWORD: 0xc000006a,
  LOGON_FAILURE: 0xc000006d,
  ACCOUNT_RESTRICTION: 0xc000006e,
  PASSWORD_EXPIRED: 0xc0000071,
  ACCOUNT_DISABLED: 0xc0000072,
  DISK_FULL: 0xc000007f,
  INSUFFICIENT_RESOURCES: 0xc000009a,
  FILE_IS_A_DIRECTORY: 0xc00000ba,
  NOT_SUPPORTED: 0xc00000bb,
  NETWORK_NAME_DELETED: 0xc00000c9,
  BAD_NETWORK_NAME: 0xc00000cc,
  REQUEST_NOT_ACCEPTED: 0xc00000d0,
  DIRECTORY_NOT_EMPTY: 0xc0000101,
  NOT_A_DIRECTORY: 0xc0000103,
  CANCELLED: 0xc0000120,
  FILE_CLOSED: 0xc0000128,
  USER_SESSION_DELETED: 0xc0000203,
  NETWORK_SESSION_EXPIRED: 0xc000035c,
  ACCOUNT_LOCKED_OUT: 0xc0000234,
  NOT_FOUND: 0xc0000225,
  FILE_NOT_AVAILABLE: 0xc0000467,
} as const

const NAMES = new Map<number, string>(Object.entries(NtStatus).map(([k, v]) => [v, `STATUS_${k}`]))

export function statusName(status: number): string {
  return NAMES.get(status) ?? `0x${status.toString(16).padStart(8, '0')}`
}

/** Errors (severity bits 11) — warnings like BUFFER_OVERFLOW and NO_MORE_FILES are not. */
export function isError(status: number): boolean {
  return status >>> 30 === 3
}

const POSIX: Record<number, PosixCode> = {
  [NtStatus.NO_SUCH_FILE]: 'ENOENT',
  [NtStatus.OBJECT_NAME_NOT_FOUND]: 'ENOENT',
  [NtStatus.OBJECT_PATH_NOT_FOUND]: 'ENOENT',
  [NtStatus.NOT_FOUND]: 'ENOENT',
  [NtStatus.DELETE_PENDING]: 'ENOENT',
  [NtStatus.BAD_NETWORK_NAME]: 'ENOENT',
  [NtStatus.OBJECT_NAME_COLLISION]: 'EEXIST',
  [NtStatus.DIRECTORY_NOT_EMPTY]: 'ENOTEMPTY',
  [NtStatus.ACCESS_DENIED]: 'EACCES',
  [NtStatus.SHARING_VIOLATION]: 'EACCES',
  [NtStatus.PRIVILEGE_NOT_HELD]: 'EACCES',
  [NtStatus.LOGON_FAILURE]: 'EACCES',
  [NtStatus.WRONG_PASSWORD]: 'EACCES',
  [NtStatus.ACCOUNT_RESTRICTION]: 'EACCES',
  [NtStatus.PASSWORD_EXPIRED]: 'EACCES',
  [NtStatus.ACCOUNT_DISABLED]: 'EACCES',
  [NtStatus.ACCOUNT_LOCKED_OUT]: 'EACCES',
  [NtStatus.FILE_IS_A_DIRECTORY]: 'EISDIR',
  [NtStatus.NOT_A_DIRECTORY]: 'ENOTDIR',
  [NtStatus.DISK_FULL]: 'ENOSPC',
  [NtStatus.INVALID_PARAMETER]: 'EINVAL',
  [NtStatus.OBJECT_NAME_INVALID]: 'EINVAL',
  [NtStatus.OBJECT_PATH_INVALID]: 'EINVAL',
  [NtStatus.NETWORK_NAME_DELETED]: 'ECONNRESET',
  [NtStatus.USER_SESSION_DELETED]: 'ECONNRESET',
  [NtStatus.NETWORK_SESSION_EXPIRED]: 'ECONNRESET',
}

export function posixCode(status: number): PosixCode {
  return POSIX[status] ?? 'EIO'
}
