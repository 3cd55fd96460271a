#!/usr/bin/env node
/** Entry point of the `backup-proxy` command. */
import { applyGcTuning } from '../common/gc-tuning.js'
import { runCli } from './program.js'

// The AWS SDK warns on Node 20 that its releases after January 2027 need Node 22: a note for whoever
// pins our dependencies (see README "Requirements"), not for an operator reading a command's output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
applyGcTuning()
process.exitCode = await runCli(process.argv.slice(2))
