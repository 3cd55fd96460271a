#!/usr/bin/env node
/** Entry point of the `backup-proxy` command. */
import { applyGcTuning } from '../common/gc-tuning.js'
import { runCli } from './program.js'

applyGcTuning()
process.exitCode = await runCli(process.argv.slice(2))
