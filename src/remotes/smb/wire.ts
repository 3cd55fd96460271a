/**
 * SMB2 wire format ([MS-SMB2] 2.2): the 64-byte header, command numbers, flags and the constants the
 * client uses. Bodies are built and parsed next to the commands that use them (client.ts).
 */

export const HEADER_SIZE = 64
const PROTOCOL_ID = 0x424d53fe // "\xfeSMB" read as uint32 LE

export const Command = {
  NEGOTIATE: 0,
  SESSION_SETUP: 1,
  LOGOFF: 2,
  TREE_CONNECT: 3,
  TREE_DISCONNECT: 4,
  CREATE: 5,
  CLOSE: 6,
  FLUSH: 7,
  READ: 8,
  WRITE: 9,
  IOCTL: 11,
  CANCEL: 12,
  ECHO: 13,
  QUERY_DIRECTORY: 14,
  QUERY_INFO: 16,
  SET_INFO: 17,
} as const

export const COMMAND_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Command).map(([k, v]) => [v, k]))

export const Flags = {
  SERVER_TO_REDIR: 0x1,
  ASYNC_COMMAND: 0x2,
  RELATED_OPERATIONS: 0x4,
  SIGNED: 0x8,
} as const

export const Dialect = {
  SMB2_1: 0x0210,
  SMB3_0: 0x0300,
  SMB3_0_2: 0x0302,
  SMB3_1_1: 0x0311,
} as const

export const DIALECT_NAMES: Record<number, string> = { 0x0210: '2.1', 0x0300: '3.0', 0x0302: '3.0.2', 0x0311: '3.1.1' }

export const SecurityMode = { SIGNING_ENABLED: 0x1, SIGNING_REQUIRED: 0x2 } as const
export const Capabilities = { DFS: 0x1, LEASING: 0x2, LARGE_MTU: 0x4 } as const

export const Access = {
  FILE_READ_DATA: 0x1,
  FILE_LIST_DIRECTORY: 0x1,
  FILE_WRITE_DATA: 0x2,
  FILE_APPEND_DATA: 0x4,
  FILE_READ_EA: 0x8,
  FILE_WRITE_EA: 0x10,
  FILE_READ_ATTRIBUTES: 0x80,
  FILE_WRITE_ATTRIBUTES: 0x100,
  DELETE: 0x10000,
  READ_CONTROL: 0x20000,
  SYNCHRONIZE: 0x100000,
} as const

export const ShareAccess = { READ: 1, WRITE: 2, DELETE: 4, ALL: 7 } as const
export const Disposition = { SUPERSEDE: 0, OPEN: 1, CREATE: 2, OPEN_IF: 3, OVERWRITE: 4, OVERWRITE_IF: 5 } as const
export const CreateOptions = { DIRECTORY_FILE: 0x1, WRITE_THROUGH: 0x2, SEQUENTIAL_ONLY: 0x4, NON_DIRECTORY_FILE: 0x40 } as const
export const FileAttributes = { DIRECTORY: 0x10, NORMAL: 0x80 } as const

export const InfoType = { FILE: 1, FILESYSTEM: 2 } as const
export const FileInfoClass = {
  DIRECTORY: 1,
  STANDARD: 5,
  RENAME: 10,
  DISPOSITION: 13,
  END_OF_FILE: 20,
} as const

export interface Header {
  creditCharge: number
  status: number
  command: number
  credits: number
  flags: number
  nextCommand: number
  messageId: bigint
  /** async responses carry an AsyncId instead of the tree id */
  asyncId: bigint
  treeId: number
  sessionId: bigint
  signature: Buffer
}

interface RequestHeader {
  creditCharge: number
  command: number
  creditRequest: number
  flags: number
  messageId: bigint
  treeId: number
  sessionId: bigint
}

export function encodeHeader(h: RequestHeader, into: Buffer, offset = 0): void {
  into.fill(0, offset, offset + HEADER_SIZE)
  into.writeUInt32LE(PROTOCOL_ID, offset)
  into.writeUInt16LE(HEADER_SIZE, offset + 4)
  into.writeUInt16LE(h.creditCharge, offset + 6)
  into.writeUInt16LE(h.command, offset + 12)
  into.writeUInt16LE(h.creditRequest, offset + 14)
  into.writeUInt32LE(h.flags, offset + 16)
  into.writeBigUInt64LE(h.messageId, offset + 24)
  into.writeUInt32LE(h.treeId, offset + 36)
  into.writeBigUInt64LE(h.sessionId, offset + 40)
}

export function decodeHeader(b: Buffer): Header {
  if (b.length < HEADER_SIZE || b.readUInt32LE(0) !== PROTOCOL_ID) throw new Error('not an SMB2 message (bad protocol id)')
  const flags = b.readUInt32LE(16)
  const isAsync = (flags & Flags.ASYNC_COMMAND) !== 0
  return {
    creditCharge: b.readUInt16LE(6),
    status: b.readUInt32LE(8),
    command: b.readUInt16LE(12),
    credits: b.readUInt16LE(14),
    flags,
    nextCommand: b.readUInt32LE(20),
    messageId: b.readBigUInt64LE(24),
    asyncId: isAsync ? b.readBigUInt64LE(32) : 0n,
    treeId: isAsync ? 0 : b.readUInt32LE(36),
    sessionId: b.readBigUInt64LE(40),
    signature: b.subarray(48, 64),
  }
}

/** A 16-byte FileId (persistent + volatile). */
export type FileId = Buffer

/** Windows FILETIME (100 ns since 1601) to ms since the Unix epoch. */
export function fileTimeToMs(b: Buffer, offset: number): number {
  const t = b.readBigUInt64LE(offset)
  if (t === 0n) return 0
  return Number(t / 10_000n - 11_644_473_600_000n)
}

export function utf16(s: string): Buffer {
  return Buffer.from(s, 'utf16le')
}
