/**
 * Per test file: after each test, the XAPI connections that backup runs close in the background
 * (src/backup/xapi-closes.ts) have ended, so a test's afterAll that stops its simulator never cuts one
 * mid-close (xen-api would print a warning for its event loop's broken long-poll).
 */
import { afterEach } from 'vitest'
import { xapiClosesSettled } from '../../src/backup/xapi-closes.js'

afterEach(async () => {
  await xapiClosesSettled()
})
