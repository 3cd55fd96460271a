#!/usr/bin/env bash
# Installs the Debian packages the test suite and benchmarks use (real servers and independent image
# checkers). Idempotent; needs root (apt-get). Keeps package postinst scripts from starting daemons
# system-wide (smbd on :445, memcached, rpcbind): the tests start their own private instances.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
  redis-server                     # private Redis per test run
  qemu-utils libvhdi-utils         # qemu-img, vhdiinfo/vhdimount: independent VHD checkers
  libnbd-bin                       # nbdcopy: the ceiling of the NBD bench (bench/nbd.bench.ts)
  zstd                             # XVA zstd (de)compression on Node 20, whose zlib has no zstd (src/xva/compression.ts)
  samba smbclient                  # SMB server + baseline client
  nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils iproute2   # NFS server in a netns + nfs-cp baseline
  swift swift-proxy swift-account swift-container swift-object memcached   # S3 via Swift s3api
  prometheus                       # promtool check metrics, scrape test
  rclone curl time                 # baselines and measurement in bench
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-deps: all packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi
trap '[ $created_policy -eq 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
echo "install-test-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-test-deps: done"
