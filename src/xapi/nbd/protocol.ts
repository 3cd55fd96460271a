/**
 * Constants of the NBD protocol (the "fixed newstyle" negotiation, options, transmission requests and
 * simple replies) as the public specification (NetworkBlockDevice/nbd doc/proto.md) defines them, shared
 * by the client (client.ts) and the simulator's server (src/xapi/sim/nbd-server.ts). Only what XAPI's NBD
 * server speaks is here: no structured replies, no block status (XAPI's server does not advertise them).
 */
export const NBD_MAGIC = Buffer.from('NBDMAGIC', 'latin1')
export const IHAVEOPT = Buffer.from('IHAVEOPT', 'latin1')
/** magic of every option reply */
export const OPT_REPLY_MAGIC = 0x3e889045565a9n

/** handshake flags (server) and client flags */
export const FLAG_FIXED_NEWSTYLE = 1 << 0
export const FLAG_NO_ZEROES = 1 << 1

export const OPT_EXPORT_NAME = 1
export const OPT_ABORT = 2
export const OPT_STARTTLS = 5
export const OPT_INFO = 6
export const OPT_GO = 7

export const REP_ACK = 1
export const REP_INFO = 3
const ERR = 0x8000_0000
export const REP_ERR_UNSUP = ERR + 1
export const REP_ERR_POLICY = ERR + 2
export const REP_ERR_INVALID = ERR + 3
export const REP_ERR_TLS_REQD = ERR + 5
export const REP_ERR_UNKNOWN = ERR + 6

export const INFO_EXPORT = 0

/** transmission flags */
export const TFLAG_HAS_FLAGS = 1 << 0
export const TFLAG_READ_ONLY = 1 << 1

export const REQUEST_MAGIC = 0x25609513
export const SIMPLE_REPLY_MAGIC = 0x67446698
export const CMD_READ = 0
export const CMD_DISC = 2

/** errno values of replies */
export const NBD_EPERM = 1
export const NBD_EINVAL = 22


const REQUEST_BYTES = 28
export const SIMPLE_REPLY_BYTES = 16

/** A transmission request (28 bytes). */
export function encodeRequest(type: number, handle: bigint, offset: number, length: number): Buffer {
  const b = Buffer.alloc(REQUEST_BYTES)
  b.writeUInt32BE(REQUEST_MAGIC, 0)
  b.writeUInt16BE(0, 4)
  b.writeUInt16BE(type, 6)
  b.writeBigUInt64BE(handle, 8)
  b.writeBigUInt64BE(BigInt(offset), 16)
  b.writeUInt32BE(length, 24)
  return b
}

/** An option request: IHAVEOPT, option, length, data. */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(16 + data.length)
  IHAVEOPT.copy(b, 0)
  b.writeUInt32BE(option, 8)
  b.writeUInt32BE(data.length, 12)
  data.copy(b, 16)
  return b
}

/** An option reply: magic, option, reply type, length, data. */
export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(20 + data.length)
  b.writeBigUInt64BE(OPT_REPLY_MAGIC, 0)
  b.writeUInt32BE(option, 8)
  b.writeUInt32BE(type, 12)
  b.writeUInt32BE(data.length, 16)
  data.copy(b, 20)
  return b
}
