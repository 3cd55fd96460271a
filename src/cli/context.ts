/**
 * What every subcommand shares: global options, config loading (file < env < flags), the logger, and
 * argument parsers that turn bad input into exit code 2 with a message naming the argument. The config
 * loader (zod, yaml) and the logger (pino) load on first use, so `--help` does not pay for them.
 */
import { InvalidArgumentError, Option, type Command } from 'commander'
import type { Config } from '../config/index.js'
import type { Logger, LogLevel } from '../common/log.js'
import { formatBytes, parseDurationMs, parseSizeBytes } from '../common/units.js'

interface GlobalOptions {
  config?: string
  logLevel?: LogLevel
}

/** Output of a command: tests capture it; the real CLI writes to the process streams. */
export interface CliIo {
  stdout: (text: string) => void
  stderr: (text: string) => void
  /** true when stdout is a terminal (progress bars, colors) */
  isTTY: boolean
}

export const processIo: CliIo = {
  stdout: (t) => void process.stdout.write(t),
  stderr: (t) => void process.stderr.write(t),
  isTTY: process.stdout.isTTY,
}

export function globalOptions(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals<GlobalOptions>()
}

/** Loads the configuration for a command; `flags` are that command's settings as nested sections. */
export async function commandConfig(cmd: Command, flags: Record<string, Record<string, unknown>> = {}): Promise<Config> {
  const g = globalOptions(cmd)
  const logFlags = g.logLevel === undefined ? {} : { log: { level: g.logLevel } }
  const { loadConfig } = await import('../config/index.js')
  return loadConfig({ ...(g.config === undefined ? {} : { file: g.config }), flags: { ...flags, ...logFlags } })
}

export async function commandLogger(config: Config, name = 'backup-proxy'): Promise<Logger> {
  const { createLogger } = await import('../common/log.js')
  return createLogger({ level: config.log.level, name, ...(config.log.pretty === undefined ? {} : { pretty: config.log.pretty }) })
}

export function intArg(name: string, min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value)
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be a whole number from ${min} to ${max}, got "${value}"`)
    }
    return n
  }
}

export function durationArg(name: string): (value: string) => number {
  return (value) => {
    try {
      return parseDurationMs(value)
    } catch (e) {
      throw new InvalidArgumentError(`${name}: ${(e as Error).message}`)
    }
  }
}

function sizeArg(name: string): (value: string) => number {
  return (value) => {
    try {
      return parseSizeBytes(value)
    } catch (e) {
      throw new InvalidArgumentError(`${name}: ${(e as Error).message}`)
    }
  }
}

/** An option taking a size (`64MiB`), its default shown human-readable in --help. */
export function sizeOption(flags: string, description: string, defaultBytes: number): Option {
  return new Option(flags, description).argParser(sizeArg(flags.split(' ')[0]!)).default(defaultBytes, formatBytes(defaultBytes))
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value]
}
