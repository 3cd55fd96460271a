/**
 * `ova.xml`, the first entry of an XVA: XAPI's export header as one XML-RPC value — a struct with
 * `version` (exporting host and `export_vsn`) and `objects`, a list of `{ class, id, snapshot }` where
 * `id` is the object's reference inside the archive (`Ref:<n>`), `snapshot` its record with every
 * reference to another exported object rewritten to that object's `Ref:<n>` (others become
 * `OpaqueRef:NULL`). A VDI's chunks are stored under its `Ref:<n>/`. Values are encoded as XAPI's XML-RPC
 * does: strings bare, integers as strings (XAPI's int64), booleans `<boolean>`, floats `<double>`,
 * maps `<struct>`, sets `<array>`. `parseXmlRpcValue` reads it back (any XML-RPC value).
 */
import { BackupProxyError } from '../common/errors.js'

export type XmlRpcValue = string | number | boolean | XmlRpcValue[] | { [key: string]: XmlRpcValue }

export interface OvaObject {
  class: string
  id: string
  snapshot: Record<string, XmlRpcValue>
}

interface OvaHeader {
  version: Record<string, XmlRpcValue>
  objects: OvaObject[]
}

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

function unescape(s: string): string {
  return s.replace(/&(lt|gt|quot|apos|amp|#x?[0-9a-fA-F]+);/g, (_, e: string) => {
    if (e === 'lt') return '<'
    if (e === 'gt') return '>'
    if (e === 'quot') return '"'
    if (e === 'apos') return "'"
    if (e === 'amp') return '&'
    return String.fromCodePoint(e.startsWith('#x') ? Number.parseInt(e.slice(2), 16) : Number.parseInt(e.slice(1), 10))
  })
}

function xmlRpcValue(v: unknown): string {
  if (typeof v === 'string') return `<value>${escape(v)}</value>`
  if (typeof v === 'boolean') return `<value><boolean>${v ? 1 : 0}</boolean></value>`
  if (typeof v === 'number') return Number.isInteger(v) ? `<value>${v}</value>` : `<value><double>${v}</double></value>`
  if (Array.isArray(v)) return `<value><array><data>${v.map(xmlRpcValue).join('')}</data></array></value>`
  if (typeof v === 'object' && v !== null) {
    return `<value><struct>${Object.entries(v).filter(([, x]) => x !== undefined).map(([k, x]) => `<member><name>${escape(k)}</name>${xmlRpcValue(x)}</member>`).join('')}</struct></value>`
  }
  return '<value></value>'
}

/** The ova.xml text of an export. */
export function ovaXml(header: OvaHeader): string {
  return xmlRpcValue({ version: header.version, objects: header.objects as unknown as XmlRpcValue[] })
}

function bad(message: string): never {
  throw new BackupProxyError('E_XVA_CORRUPT', `invalid XVA: ova.xml: ${message}`)
}

/** Parses one XML-RPC `<value>` (with what XAPI writes: bare strings, no XML declaration needed). */
function parseXmlRpcValue(xml: string): XmlRpcValue {
  const tokens = [...xml.replace(/<\?xml[^>]*\?>/, '').matchAll(/<(\/?)([A-Za-z0-9_.]+)\s*(\/?)>|([^<]+)/g)]
  let i = 0
  const skipSpace = (): void => {
    while (i < tokens.length && tokens[i]![4] !== undefined && tokens[i]![4]!.trim() === '') i++
  }
  const open = (name: string): boolean => {
    skipSpace()
    const t = tokens[i]
    if (t !== undefined && t[1] === '' && t[2] === name) {
      i++
      return t[3] !== '/' // false: self-closing
    }
    return bad(`expected <${name}>`)
  }
  const close = (name: string): void => {
    skipSpace()
    const t = tokens[i]
    if (t === undefined || t[1] !== '/' || t[2] !== name) bad(`expected </${name}>`)
    i++
  }
  const text = (): string => {
    let s = ''
    while (i < tokens.length && tokens[i]![4] !== undefined) s += tokens[i++]![4]!
    return unescape(s)
  }
  const peek = (): RegExpExecArray | RegExpMatchArray | undefined => {
    skipSpace()
    return tokens[i]
  }
  const value = (): XmlRpcValue => {
    if (!open('value')) return ''
    const raw = text()
    const t = tokens[i]
    if (t !== undefined && t[1] === '/' && t[2] === 'value') {
      i++
      return raw
    }
    const inner = peek()
    if (inner === undefined || inner[1] !== '') return bad('unexpected end')
    const type = inner[2]!
    let out: XmlRpcValue
    if (type === 'struct') {
      const obj: Record<string, XmlRpcValue> = {}
      if (open('struct')) {
        while (peek()?.[2] === 'member' && peek()?.[1] === '') {
          open('member')
          open('name')
          const key = text()
          close('name')
          obj[key] = value()
          close('member')
        }
        close('struct')
      }
      out = obj
    } else if (type === 'array') {
      const arr: XmlRpcValue[] = []
      if (open('array')) {
        if (open('data')) {
          while (peek()?.[2] === 'value' && peek()?.[1] === '') arr.push(value())
          close('data')
        }
        close('array')
      }
      out = arr
    } else {
      const selfClosing = !open(type)
      const s = selfClosing ? '' : text()
      if (!selfClosing) close(type)
      if (type === 'boolean') out = s.trim() === '1'
      else if (type === 'int' || type === 'i4' || type === 'i8' || type === 'double') out = Number(s)
      else out = s
    }
    close('value')
    return out
  }
  const v = value()
  return v
}

/** ova.xml text → header; refuses what is not an XAPI export header. */
export function parseOvaXml(xml: string): OvaHeader {
  const v = parseXmlRpcValue(xml)
  if (typeof v !== 'object' || Array.isArray(v)) return bad('not a struct')
  const objects = v.objects
  if (!Array.isArray(objects)) return bad('no objects list')
  const version = typeof v.version === 'object' && !Array.isArray(v.version) ? v.version : {}
  return {
    version,
    objects: objects.map((o) => {
      if (typeof o !== 'object' || Array.isArray(o) || typeof o.class !== 'string' || typeof o.id !== 'string' || typeof o.snapshot !== 'object' || Array.isArray(o.snapshot)) {
        return bad('an object lacks class, id or snapshot')
      }
      return { class: o.class, id: o.id, snapshot: o.snapshot }
    }),
  }
}
