'use strict'
// Test-only stand-in: the runtime constants XO's backup code imports (XAPI's VM power states).
exports.VM_POWER_STATE = Object.freeze({ HALTED: 'Halted', PAUSED: 'Paused', RUNNING: 'Running', SUSPENDED: 'Suspended' })
