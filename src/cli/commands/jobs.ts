/**
 * `backup-proxy jobs` lists the jobs the queues keep (filter by --state, --proxy/--pool, --job; newest
 * first), and `backup-proxy job show|follow|logs <id>` looks at one: `show` its task log as a readable
 * tree (VMs, remotes, sizes, durations, warnings, the real error with its fix), `follow` it live until it
 * ends (exit 1 when it did not succeed), `logs` its task-log events one a line. `--json` everywhere.
 * BullMQ and the queue code load only when the command runs (./jobs-run.ts).
 */
import type { Command } from 'commander'
import type { CliIo } from '../context.js'
import { intArg } from '../context.js'

export interface JobsFlags {
  state?: string
  proxy?: string
  pool?: string
  job?: string
  limit: number
  json?: boolean
  redisUrl?: string
}

export interface JobFlags {
  proxy?: string
  pool?: string
  json?: boolean
  redisUrl?: string
}

export function registerJobs(program: Command, io: CliIo): void {
  program
    .command('jobs')
    .description('list queued, running and finished jobs, newest first')
    .option('--state <state>', 'queued, running, delayed, completed, failed, or an outcome: success, failure, interrupted, skipped')
    .option('--proxy <id>', 'only the queue of this proxy')
    .option('--pool <name>', 'only the queue of this pool')
    .option('--job <id>', 'only runs of this backup job id')
    .option('--limit <n>', 'at most this many jobs', intArg('--limit', 1, 10_000), 20)
    .option('--json', 'machine-readable output')
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
    .action(async (flags: JobsFlags, cmd: Command) => {
      const { runJobs } = await import('./jobs-run.js')
      await runJobs(flags, cmd, io)
    })
  const job = program.command('job').description('look at one job: show, follow, logs')
  for (const [name, description] of [
    ['show', 'the job and its task log as a tree: VMs, remotes, sizes, durations, warnings, errors'],
    ['follow', 'follow the job live until it ends (exit 1 when it did not succeed)'],
    ['logs', 'the task-log events of the job, one a line'],
  ] as const) {
    job
      .command(name)
      .description(description)
      .argument('<id>', 'job id (as `backup` and `jobs` print it)')
      .option('--proxy <id>', 'look only in the queue of this proxy')
      .option('--pool <name>', 'look only in the queue of this pool')
      .option('--json', 'machine-readable output')
      .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
      .action(async (id: string, flags: JobFlags, cmd: Command) => {
        const { runJob } = await import('./jobs-run.js')
        await runJob(name, id, flags, cmd, io)
      })
  }
}
