/**
 * TLS and ACL for the private Redis servers of the tests (redis-cluster.ts, redis-sentinel.ts): a
 * throwaway CA and a server certificate made with openssl in a temp dir (valid 2 days, for `localhost`
 * and 127.0.0.1), the redis-server arguments that serve only TLS with it and replace the default user by
 * one ACL user, and the ioredis options the helpers' own admin connections need to get in.
 *
 * Clients are not asked for a certificate (`tls-auth-clients no`): the proxy's config has none to give.
 * The nodes present the server certificate to each other too (cluster bus, replication).
 */
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { RedisOptions } from 'ioredis'

const run = promisify(execFile)

interface TestCerts {
  /** PEM files */
  ca: string
  cert: string
  key: string
}

interface AclUser {
  user: string
  password: string
}

/** How the test servers are secured; nothing set = plain TCP, default user without password. */
export interface RedisSecurity {
  certs?: TestCerts
  acl?: AclUser
}

/** A CA and a server certificate it signed (SAN localhost and 127.0.0.1), in `dir`. */
export async function makeTestCerts(dir: string): Promise<TestCerts> {
  const f = (n: string) => join(dir, n)
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=bp-test-ca', '-keyout', f('ca.key'), '-out', f('ca.pem')])
  await run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', f('server.key'), '-out', f('server.csr')])
  await writeFile(f('ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n')
  await run('openssl', ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f('ext.cnf'), '-out', f('server.pem')])
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key') }
}

/** Config lines (`name value...`) for TLS files and the ACL user; the listening ports are the caller's. */
export function securityLines(s: RedisSecurity): string[][] {
  const lines: string[][] = []
  if (s.certs !== undefined) {
    lines.push(['tls-cert-file', s.certs.cert], ['tls-key-file', s.certs.key], ['tls-ca-cert-file', s.certs.ca], ['tls-auth-clients', 'no'], ['tls-replication', 'yes'])
  }
  if (s.acl !== undefined) lines.push(['user', 'default', 'off'], ['user', s.acl.user, 'on', `>${s.acl.password}`, '~*', '&*', '+@all'])
  return lines
}

/** The same as redis-server command-line arguments. */
export function securityArgs(s: RedisSecurity): string[] {
  return securityLines(s).flatMap(([name, ...values]) => [`--${name!}`, ...values])
}

/** The listening arguments: `--port <port>`, or TLS only on that port (`--port 0 --tls-port <port>`). */
export function listenArgs(s: RedisSecurity, port: number): string[] {
  return s.certs === undefined ? ['--port', String(port)] : ['--port', '0', '--tls-port', String(port)]
}

/** ioredis options of the helpers' own admin connections to a server secured by `s`. */
export function adminOptions(s: RedisSecurity): Pick<RedisOptions, 'tls' | 'username' | 'password'> {
  return {
    ...(s.certs === undefined ? {} : { tls: { ca: readFileSync(s.certs.ca) } }),
    ...(s.acl === undefined ? {} : { username: s.acl.user, password: s.acl.password }),
  }
}

/** redis-cli arguments (and environment: the password) for a server secured by `s`. */
export function cliArgs(s: RedisSecurity): { args: string[]; env: NodeJS.ProcessEnv } {
  return {
    args: [...(s.certs === undefined ? [] : ['--tls', '--cacert', s.certs.ca]), ...(s.acl === undefined ? [] : ['--user', s.acl.user])],
    env: s.acl === undefined ? process.env : { ...process.env, REDISCLI_AUTH: s.acl.password },
  }
}
