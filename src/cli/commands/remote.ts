/** `backup-proxy remote test|ls`: probe a remote or list its content. */
import type { Command } from 'commander'
import { NotAvailableError } from '../../common/errors.js'
import type { CliIo } from '../context.js'

export function registerRemote(program: Command, _io: CliIo): void {
  const remote = program.command('remote').description('work with a backup remote (file://, nfs://, smb://, s3://)')
  remote
    .command('test')
    .description('write, read back and delete a probe file; report latency and speed')
    .argument('<url>', 'remote URL')
    .option('--json', 'machine-readable output')
    .action(() => {
      throw new NotAvailableError('`backup-proxy remote test`')
    })
  remote
    .command('ls')
    .description('list a directory of the remote')
    .argument('<url>', 'remote URL')
    .argument('[path]', 'path inside the remote', '')
    .option('-r, --recursive', 'list recursively')
    .option('--json', 'machine-readable output')
    .action(() => {
      throw new NotAvailableError('`backup-proxy remote ls`')
    })
}
