'use strict'
// Test-only stand-in: XO's file-level restore mounts a VHD with FUSE; the tests never run it.
exports.mount = function mount() {
  throw new Error('@vates/fuse-vhd is not available in this test stand-in')
}
