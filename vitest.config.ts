import { defineConfig } from 'vitest/config'

// The AWS SDK prints a NodeVersionSupportWarning block on Node < 22 (its releases after January 2027
// need Node 22; README "Requirements") from every process that creates an S3 client: the global setup
// and each test file touching S3. It says nothing about the code under test, so the suite turns it off
// with the SDK's own switch, as the CLI does (src/cli/main.ts); test/cli/sdk-warning.test.ts starts the
// command without it to check that operators do not see it.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/global.ts'],
    setupFiles: ['test/setup/each.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default', './test/setup/summary-reporter.ts'],
  },
})
