#!/usr/bin/env bash
# Runs a fast subset of the suite under another supported Node.js LTS line (default: 24), with its
# binary fetched through npm (scripts/node-line.sh); the whole suite runs on the Node that runs npm
# (`npm test`, the README's command). The subset covers what differs between lines: the foundation (CLI,
# config, package exports), the VHD codecs and parser (Buffer, streams, zlib), the queue against Redis
# (BullMQ, ioredis, TLS, cluster, sentinel) and one backup end to end through the real CLI (`demo`:
# queue, proxy, Piscina threads, XAPI simulator, local remote, then verify and restore).
#   bash scripts/test-node-line.sh            # Node ^24.11.0
#   bash scripts/test-node-line.sh '^22.12.0'
# Only Redis is started by the global setup (the subset uses no S3, SMB or NFS server).
set -euo pipefail
range="${1:-^24.11.0}"
cd "$(dirname "$0")/.."
node_bin="$(bash scripts/node-line.sh "$range")"
echo "test-node-line: $("$node_bin" --version) ($range)"
# vitest's forks run on process.execPath: the whole run is on that binary. One file at a time: the
# subset checks the Node line, not concurrency (the Redis topology tests of test/queue each start and kill
# servers; the full suite runs them side by side on the machine's Node).
BACKUP_PROXY_TEST_SERVICES=redis "$node_bin" node_modules/vitest/vitest.mjs run --no-file-parallelism \
  test/foundation test/vhd test/queue test/backup/cli.test.ts
