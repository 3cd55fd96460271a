#!/usr/bin/env bash
# Prints the path of a `node` binary of another Node.js release line, fetched through npm: the registry
# serves the official Node.js builds as npm packages named node-<platform>-<arch> (what the `node`
# package installs), so no other download source is needed. The binary is unpacked under
# node_modules/.cache/node-line/ (npm ci starts that over) and reused while it is there.
#   bash scripts/node-line.sh '^24.11.0'      # a semver range of the package (24.11.0: 24's first LTS release)
# Only the binary is used: the project's node_modules (installed by the Node that runs npm ci) serve every
# line, since their only native addons are Node-API builds (ABI-stable across lines).
set -euo pipefail
range="${1:?usage: node-line.sh <semver range, e.g. ^24.11.0>}"
cd "$(dirname "$0")/.."
platform="$(node -p 'process.platform + "-" + process.arch')"
cache="node_modules/.cache/node-line"
mkdir -p "$cache"
version="$(npm view "node-${platform}@${range}" version --json | node -e '
  const v = JSON.parse(require("fs").readFileSync(0, "utf8")); process.stdout.write([].concat(v).at(-1))')"
dir="$cache/node-${platform}-${version}"
if [ ! -x "$dir/bin/node" ]; then
  tgz="$(cd "$cache" && npm pack "node-${platform}@${version}" --silent --no-fund --no-audit | tail -n 1)"
  mkdir -p "$dir"
  tar -xzf "$cache/$tgz" -C "$dir" --strip-components=1 package/bin/node
  rm -f "$cache/$tgz"
fi
"$dir/bin/node" --version >/dev/null
echo "$PWD/$dir/bin/node"
