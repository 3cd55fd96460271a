/**
 * Types for the `xen-api` package (it ships none). Only what src/xapi uses is declared, with the
 * shapes read from its source (node_modules/xen-api/index.mjs, v4.7): records are wrapped objects whose
 * XAPI fields are own enumerable properties and whose `$ref`/`$id`/`$type` are non-enumerable.
 */
declare module 'xen-api' {
  import type { EventEmitter } from 'node:events'

  export interface XenApiRecord {
    readonly $ref: string
    readonly $id: string
    readonly $type: string
    readonly [field: string]: unknown
  }

  export interface XenApiOptions {
    url: string
    auth?: { user: string; password?: string; sessionId?: string }
    allowUnauthorized?: boolean
    /** false: no event loop; an array: watch only these types */
    watchEvents?: boolean | string[]
    readOnly?: boolean
    /** ms, for every call */
    callTimeout?: number
    /** ms */
    httpInactivityTimeout?: number
    /** ms between event.from retries after an error */
    eventPollDelay?: number
    /** ms between event.from calls */
    debounce?: number
    syncStackTraces?: boolean
    transport?: 'auto' | 'json-rpc' | 'xml-rpc'
    roCallRetryOptions?: { delay?: number; tries?: number }
  }

  export interface XenApiCollection extends EventEmitter {
    readonly all: Readonly<Record<string, XenApiRecord>>
  }

  /** The error class of the package: `code` is the XAPI error code, `params` its parameters. */
  export interface XenApiError extends Error {
    code: string
    params: string[]
    call?: { method: string; duration: number }
  }

  export class Xapi extends EventEmitter {
    constructor(opts: XenApiOptions)
    readonly status: 'connected' | 'connecting' | 'disconnected'
    readonly sessionId: string
    readonly pool: XenApiRecord
    readonly objects: XenApiCollection
    readonly objectsFetched: Promise<void>
    connect(): Promise<void>
    disconnect(): Promise<void>
    call(method: string, ...args: unknown[]): Promise<unknown>
    callAsync(method: string, ...args: unknown[]): Promise<unknown>
    getAllRecords(type: string): Promise<XenApiRecord[]>
    getRecord(type: string, ref: string): Promise<XenApiRecord>
    getObject(idOrUuidOrRef: string): XenApiRecord
    getObject<T>(idOrUuidOrRef: string, defaultValue: T): XenApiRecord | T
    getObjectByRef(ref: string): XenApiRecord
    getObjectByRef<T>(ref: string, defaultValue: T): XenApiRecord | T
    setFieldEntries(type: string, ref: string, field: string, entries: Record<string, string | null | undefined>): Promise<void>
    barrier(ref?: string): Promise<XenApiRecord | undefined>
    createTask(nameLabel: string, nameDescription?: string): Promise<string>
    watchTask(ref: string): Promise<unknown>
    /**
     * The undici Agent every call goes through (xen-api 4.7 source; not public API). `disconnect()` leaves
     * it open, with its keep-alive sockets.
     */
    readonly _undiciDispatcher?: { close(): Promise<void>; destroy(): Promise<void> }
  }

  export function createClient(opts: XenApiOptions): Xapi
}
