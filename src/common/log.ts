/**
 * Structured logging (pino): JSON lines by default, pretty when stderr is a TTY. Every object logged goes
 * through `redact` (secrets by key at any depth, passwords in URLs), and so do messages and errors, so a
 * password handed to the logger by mistake never reaches the output.
 */
import { pino, type Logger, type DestinationStream } from 'pino'
import { redact, redactString } from './redact.js'
import { serializeError } from './errors.js'

export type { Logger } from 'pino'

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

interface LoggerOptions {
  level?: LogLevel
  /** Pretty output; default: stderr is a TTY. */
  pretty?: boolean
  name?: string
  /** Where lines go (tests pass a stream); default stderr. */
  destination?: DestinationStream
}

function redactError(error: unknown): unknown {
  return redact(serializeError(error))
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const pretty = options.pretty ?? (options.destination === undefined && process.stderr.isTTY)
  const base = {
    level: options.level ?? 'info',
    ...(options.name === undefined ? {} : { name: options.name }),
    serializers: { err: redactError, error: redactError },
    formatters: {
      log: (obj: Record<string, unknown>) => redact(obj),
    },
    hooks: {
      logMethod(this: Logger, args: unknown[], method: (...a: unknown[]) => void) {
        method.apply(
          this,
          args.map((a) => (typeof a === 'string' ? redactString(a) : a)),
        )
      },
    },
  }
  if (options.destination !== undefined) return pino(base, options.destination)
  if (pretty) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { destination: 2, colorize: true } } })
  }
  return pino(base, pino.destination({ fd: 2, sync: false }))
}

/** A logger that drops everything (library default). */
export const silentLogger: Logger = pino({ level: 'silent' })
