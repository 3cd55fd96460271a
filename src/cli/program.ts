/**
 * The `backup-proxy` command: builds the commander program and maps outcomes to exit codes.
 *
 * Exit codes are part of the contract: 0 success, 1 the operation failed, 2 bad usage or bad input
 * (unknown option, missing argument, invalid config, invalid task or URL), with a message naming what
 * was wrong. Each subcommand lives in its own file under commands/ and registers itself here (COMMANDS).
 *
 * A run loads the module of the command it names and no other: `status` does not pay for compiling the
 * ~20 modules of the other commands and their helpers (~0.02 s CPU with Node 20, BENCHMARKS.md CLI
 * start). Whatever names no known command (`--help`, `help`, a typo, no command) gets every command, so
 * the command list and commander's "did you mean" are the same as with all of them.
 */
import { Command, CommanderError } from 'commander'
import { BackupProxyError, errorCode } from '../common/errors.js'
import { redactString } from '../common/redact.js'
import { commandConfig, processIo, type CliIo } from './context.js'
import { VERSION } from '../version.js'

const EXIT_OK = 0
const EXIT_FAILED = 1
const EXIT_USAGE = 2

const USAGE_CODES = new Set(['E_USAGE', 'E_CONFIG_INVALID', 'E_TASK_INVALID', 'E_REMOTE_URL'])

type Register = (program: Command, io: CliIo) => void

/** The top-level commands, in help order, each with the names it registers and its module. */
const COMMANDS: readonly (readonly [names: readonly string[], load: () => Promise<Register>])[] = [
  [['serve'], async () => (await import('./commands/serve.js')).registerServe],
  [['backup'], async () => (await import('./commands/backup.js')).registerBackup],
  [['cancel'], async () => (await import('./commands/cancel.js')).registerCancel],
  [['status'], async () => (await import('./commands/status.js')).registerStatus],
  [['remote'], async () => (await import('./commands/remote.js')).registerRemote],
  [['verify'], async () => (await import('./commands/verify.js')).registerVerify],
  [['restore'], async () => (await import('./commands/restore.js')).registerRestore],
  [['xapi-sim'], async () => (await import('./commands/xapi-sim.js')).registerXapiSim],
  [['demo'], async () => (await import('./commands/demo.js')).registerDemo],
  [['api'], async () => (await import('./commands/api.js')).registerApi],
  [['mirror'], async () => (await import('./commands/mirror.js')).registerMirror],
  [['metadata'], async () => (await import('./commands/metadata.js')).registerMetadata],
  [['jobs', 'job'], async () => (await import('./commands/jobs.js')).registerJobs],
  [['backups'], async () => (await import('./commands/backups.js')).registerBackups],
]

/** The global options that take their value in the next argument (see buildProgram). */
const GLOBAL_WITH_VALUE = new Set(['-c', '--config', '--log-level'])

/**
 * The command an argument list names: its first argument that is neither an option nor a global
 * option's value; undefined when there is none or after `--`.
 */
export function commandWord(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--') return undefined
    if (GLOBAL_WITH_VALUE.has(a)) i++
    else if (!a.startsWith('-')) return a
  }
  return undefined
}

async function buildProgram(io: CliIo, argv: readonly string[]): Promise<Command> {
  const program = new Command('backup-proxy')
    .description('VM backup proxy for XCP-ng/XenServer pools: queue-driven, streams VHD deltas to local, NFS, SMB and S3 remotes.')
    .version(VERSION, '-V, --version')
    .option('-c, --config <file>', 'configuration file (YAML or JSON)')
    .option('--log-level <level>', 'log level: fatal, error, warn, info, debug, trace, silent')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .exitOverride()
    // invalid configuration (file or env) stops every subcommand before it starts, with exit code 2
    .hook('preAction', async (_program, actionCommand) => {
      await commandConfig(actionCommand)
    })

  const word = commandWord(argv)
  const named = COMMANDS.filter(([names]) => word !== undefined && names.includes(word))
  for (const register of await Promise.all((named.length > 0 ? named : COMMANDS).map(([, load]) => load()))) {
    register(program, io)
  }
  // subcommands inherit output and exit handling
  for (const cmd of program.commands) applyToTree(cmd, io)
  return program
}

function applyToTree(cmd: Command, io: CliIo): void {
  cmd.configureOutput({ writeOut: io.stdout, writeErr: io.stderr }).exitOverride().showHelpAfterError('(run with --help for usage)')
  for (const sub of cmd.commands) applyToTree(sub, io)
}

/** Runs the CLI and returns the exit code (never calls process.exit). */
export async function runCli(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const program = await buildProgram(io, argv)
  if (argv.length === 0) {
    // a bare `backup-proxy` did nothing it was asked for: show what it can do, on stderr, and say so
    io.stderr(program.helpInformation())
    io.stderr('backup-proxy: [E_USAGE] no command given; pick one above (backup-proxy <command> --help)\n')
    return EXIT_USAGE
  }
  try {
    await program.parseAsync(argv, { from: 'user' })
    return EXIT_OK
  } catch (error) {
    return exitCodeFor(error, io)
  }
}

function exitCodeFor(error: unknown, io: CliIo): number {
  if (error instanceof CommanderError) {
    // help and version are not errors; commander already printed its message
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') return EXIT_OK
    return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE
  }
  const known = knownRawError(error)
  const code = errorCode(known ?? error)
  const message = known?.message ?? (error instanceof Error ? error.message : String(error))
  io.stderr(`backup-proxy: ${code === undefined ? '' : `[${code}] `}${redactString(message)}\n`)
  if (error instanceof BackupProxyError && USAGE_CODES.has(error.code)) return EXIT_USAGE
  return EXIT_FAILED
}

/**
 * Raw errors from libraries (ioredis, BullMQ, node:net) that reach the top uncoded, turned into coded
 * ones that say what to do; undefined for anything else.
 */
export function knownRawError(error: unknown): BackupProxyError | undefined {
  if (error instanceof BackupProxyError || !(error instanceof Error)) return undefined
  const m = error.message
  const errno = (error as NodeJS.ErrnoException).code
  if (errno === 'EADDRINUSE') {
    const address = /(\S+:\d+)\s*$/.exec(m)?.[1] ?? 'its address'
    return new BackupProxyError('E_USAGE', `cannot listen on ${address}: another process uses it; give another address with --listen <host:port> (config http.listen, or api.listen for the API) or stop the other process`, { cause: error })
  }
  if (/^Connection is closed\.?$/.test(m) || errno === 'ECONNREFUSED' || errno === 'ECONNRESET') {
    return new BackupProxyError('E_REDIS', `the connection to Redis was lost (${m}); check that Redis runs and that --redis-url / REDIS_URL points at it, then run the command again`, { cause: error })
  }
  if (m.startsWith('WRONGTYPE')) {
    return new BackupProxyError('E_REDIS', `a Redis key under the queue prefix holds data of another kind (${m}): another application uses the same keys; give backup-proxy its own prefix (redis.prefix, env BACKUP_PROXY_REDIS_PREFIX) or database (redis://host/2)`, { cause: error })
  }
  return undefined
}
