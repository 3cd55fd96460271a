/** Child processes of test servers: started in their own process group, stopped with their workers. */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'

export interface Daemon {
  child: ChildProcess
  /** last lines of output, for error messages */
  output: () => string
  stop: (signal?: NodeJS.Signals, timeoutMs?: number) => Promise<void>
}

export function startDaemon(command: string, args: readonly string[], options: SpawnOptions = {}): Daemon {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...options })
  let out = ''
  const keep = (chunk: Buffer) => {
    out = (out + chunk.toString()).slice(-8000)
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  child.on('error', (e) => keep(Buffer.from(`spawn error: ${e.message}\n`)))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  return {
    child,
    output: () => out,
    async stop(signal = 'SIGTERM', timeoutMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
      const kill = (sig: NodeJS.Signals) => {
        try {
          process.kill(-child.pid!, sig)
        } catch {
          // group already gone
        }
      }
      kill(signal)
      const timer = setTimeout(() => kill('SIGKILL'), timeoutMs)
      await exited
      clearTimeout(timer)
    },
  }
}
