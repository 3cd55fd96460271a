/**
 * `system.*` and `event.from`: what xo-server calls to register a proxy and check its health
 * (`system.getServerVersion`: XO's proxy answers its version string), method introspection as XO's
 * proxy answers it (`listMethods` and `getMethodsInfo` stream NDJSON like any iterable result there;
 * `methodSignature` takes `method`, or `name` as XO's API document writes it), and `event.from`
 * (task changes after a token, XO's event shape).
 */
import { z } from 'zod'
import { VERSION } from '../../version.js'
import { method, RpcError, RPC_CODES, type MethodDefinition, type MethodRegistry } from '../rpc.js'
import type { RunRegistry } from '../runs.js'

/** event.from waits at most this long, whatever the caller asks. */
const MAX_EVENT_WAIT_MS = 60_000

export function systemMethods(registry: MethodRegistry, runs: RunRegistry): Record<string, MethodDefinition> {
  return {
    'system.getServerVersion': method('returns the version of this proxy', z.object({}).strict(), () => VERSION),
    'system.listMethods': method('returns the name of all available API methods', z.object({}).strict(), () => registry.names()),
    'system.getMethodsInfo': method('returns the signatures of all available API methods', z.object({}).strict(), () =>
      registry.names().map((name) => {
        const { description, params } = registry.signature(name)
        return { description, name, params }
      }),
    ),
    'system.methodSignature': method(
      'returns the signature of an API method',
      z.object({ method: z.string().optional(), name: z.string().optional() }).strict(),
      ({ method: m, name }) => {
        const target = m ?? name
        if (target === undefined) throw new RpcError(RPC_CODES.INVALID_PARAMETERS, 'invalid parameters: method: required', { code: 'E_API_REQUEST', errors: [{ path: 'method', message: 'required' }] })
        return registry.signature(target)
      },
    ),
    'event.from': method(
      'task changes after token ("" = every task); waits up to timeout seconds for one',
      z.object({ token: z.string().max(32).default(''), timeout: z.number().min(0).max(3600).optional() }).strict(),
      ({ token, timeout }, ctx) => runs.changesSince(token, Math.min(MAX_EVENT_WAIT_MS, (timeout ?? 0) * 1000), ctx.signal),
    ),
  }
}
