/**
 * JSON-RPC 2.0 as Xen Orchestra's proxy speaks it: one request per HTTP POST, methods registered with a
 * description and a parameter schema (zod here, JSON Schema in `system.methodSignature`), parameters
 * validated before the call (unknown parameters refused, as XO's proxy does), and errors formatted with
 * XO's codes so xo-server recognises them:
 *
 *   -32700 parse error          the body is not JSON
 *   -32600 invalid request      not a JSON-RPC request object (or a batch, which XO never sends)
 *   -32601 method not found     (XO's MethodNotFound)
 *        0 not implemented      a method this proxy knows but cannot serve yet (XO's notImplemented)
 *        1 no such object       (XO's noSuchObject: a task, a method)
 *       10 invalid parameters   (XO's invalidParameters; xo-server retries backup.run without streamLogs on it)
 *   -32000 server error         any other failure; `data.code` is our stable code (E_JOB_RUNNING, ...)
 *
 * A result may be a plain value, an iterable (arrays included, as in XO: streamed as NDJSON), or a
 * `BinaryResult` (streamed as application/octet-stream). Error messages and data are redacted; stacks
 * are never sent.
 */
import type { Readable } from 'node:stream'
import { z } from 'zod'
import { BackupProxyError, errorCode, serializeError, type JsonValue } from '../common/errors.js'
import { redact, redactString } from '../common/redact.js'
import type { Logger } from '../common/log.js'

export const RPC_CODES = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  NOT_IMPLEMENTED: 0,
  NO_SUCH_OBJECT: 1,
  INVALID_PARAMETERS: 10,
  SERVER_ERROR: -32000,
} as const

/** An error with its JSON-RPC code; `data.code` carries our string code when there is one. */
export class RpcError extends Error {
  constructor(
    readonly rpcCode: number,
    message: string,
    readonly data?: Record<string, JsonValue>,
  ) {
    super(message)
  }

  override get name(): string {
    return 'RpcError'
  }
}

export function noSuchObject(id: string, type: string): RpcError {
  return new RpcError(RPC_CODES.NO_SUCH_OBJECT, `no such ${type} ${id}`, { id, type })
}

/** Streamed as application/octet-stream (XO's binary responses). */
export class BinaryResult {
  constructor(readonly stream: Readable) {}
}

interface CallContext {
  logger: Logger
  /** aborted when the client goes away (streamed results stop following) */
  signal: AbortSignal
}

export interface MethodDefinition<S extends z.ZodType = z.ZodType> {
  description: string
  params: S
  handler: (params: z.output<S>, ctx: CallContext) => unknown
}

/** Declares a method with its parameter schema (typed handler). */
export function method<S extends z.ZodType>(description: string, params: S, handler: (params: z.output<S>, ctx: CallContext) => unknown): MethodDefinition {
  return { description, params, handler } as unknown as MethodDefinition
}

export interface RpcRequest {
  id: string | number | null
  method: string
  params: unknown
}

interface JsonRpcErrorBody {
  code: number
  message: string
  data?: JsonValue
}

/** Parses a request body; throws RpcError -32700 / -32600. */
export function parseRequest(body: string): RpcRequest {
  let value: unknown
  try {
    value = JSON.parse(body)
  } catch (error) {
    throw new RpcError(RPC_CODES.PARSE_ERROR, `the request is not JSON: ${(error as Error).message}`, { code: 'E_API_REQUEST' })
  }
  if (Array.isArray(value)) throw new RpcError(RPC_CODES.INVALID_REQUEST, 'batch requests are not supported: send one request per HTTP call', { code: 'E_API_REQUEST' })
  if (typeof value !== 'object' || value === null) throw new RpcError(RPC_CODES.INVALID_REQUEST, 'a JSON-RPC request must be an object', { code: 'E_API_REQUEST' })
  const r = value as Record<string, unknown>
  const id = r.id
  if (id !== undefined && id !== null && typeof id !== 'string' && typeof id !== 'number') throw new RpcError(RPC_CODES.INVALID_REQUEST, 'the request id must be a string, a number or null', { code: 'E_API_REQUEST' })
  if (r.jsonrpc !== '2.0') throw new RpcError(RPC_CODES.INVALID_REQUEST, 'jsonrpc must be "2.0"', { code: 'E_API_REQUEST' })
  if (typeof r.method !== 'string' || r.method.length === 0 || r.method.length > 256) throw new RpcError(RPC_CODES.INVALID_REQUEST, 'method must be a non-empty string', { code: 'E_API_REQUEST' })
  if (r.params !== undefined && (typeof r.params !== 'object' || r.params === null || Array.isArray(r.params))) {
    throw new RpcError(RPC_CODES.INVALID_PARAMETERS, 'invalid parameters: params must be an object (named parameters)', { code: 'E_API_REQUEST', errors: [{ path: '(params)', message: 'expected an object' }] })
  }
  return { id: (id as string | number | undefined) ?? null, method: r.method, params: r.params ?? {} }
}

function formatPath(path: readonly PropertyKey[]): string {
  return path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[') || '(params)'
}

/** The registered methods; `call` validates and runs one. */
export class MethodRegistry {
  readonly #methods = new Map<string, MethodDefinition>()

  add(name: string, definition: MethodDefinition): void {
    if (this.#methods.has(name)) throw new Error(`API method ${name} already exists`)
    this.#methods.set(name, definition)
  }

  addAll(definitions: Record<string, MethodDefinition>): void {
    for (const [name, d] of Object.entries(definitions)) this.add(name, d)
  }

  names(): string[] {
    return [...this.#methods.keys()].sort()
  }

  get(name: string): MethodDefinition | undefined {
    return this.#methods.get(name)
  }

  /** XO's `system.methodSignature` shape: description, name, params (JSON Schema), result. */
  signature(name: string): { description: string; name: string; params: JsonValue; result: JsonValue } {
    const d = this.#methods.get(name)
    if (d === undefined) throw noSuchObject(name, 'method')
    let params: JsonValue
    try {
      params = z.toJSONSchema(d.params, { unrepresentable: 'any', io: 'input' }) as JsonValue
    } catch {
      params = { type: 'object' }
    }
    return { description: d.description, name, params, result: {} }
  }

  async call(name: string, params: unknown, ctx: CallContext): Promise<unknown> {
    const d = this.#methods.get(name)
    if (d === undefined) throw new RpcError(RPC_CODES.METHOD_NOT_FOUND, `method not found: ${name}`, { method: name })
    const parsed = d.params.safeParse(params)
    if (!parsed.success) {
      const errors = parsed.error.issues.map((i) => ({
        path: i.code === 'unrecognized_keys' ? i.keys.map((k) => formatPath([...i.path, k])).join(', ') : formatPath(i.path),
        message: i.code === 'unrecognized_keys' ? 'unknown parameter' : i.message,
      }))
      throw new RpcError(RPC_CODES.INVALID_PARAMETERS, `invalid parameters: ${errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`, { code: 'E_API_REQUEST', errors })
    }
    return await d.handler(parsed.data, ctx)
  }
}

/** Any thrown value as a JSON-RPC error body (redacted, no stack). */
function toRpcError(error: unknown): JsonRpcErrorBody {
  if (error instanceof RpcError) {
    return { code: error.rpcCode, message: redactString(error.message), ...(error.data === undefined ? {} : { data: redact(error.data) }) }
  }
  const s = serializeError(error)
  const data: Record<string, JsonValue> = { code: errorCode(error) ?? 'E_INTERNAL' }
  if (error instanceof BackupProxyError) Object.assign(data, redact(error.fields))
  return { code: RPC_CODES.SERVER_ERROR, message: redactString(s.message), data }
}

export function responseLine(id: RpcRequest['id'], result: unknown): string {
  return `${JSON.stringify({ jsonrpc: '2.0', id, result: result === undefined ? true : result })}\n`
}

export function errorLine(id: RpcRequest['id'], error: unknown): string {
  return `${JSON.stringify({ jsonrpc: '2.0', id, error: toRpcError(error) })}\n`
}
