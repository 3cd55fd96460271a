'use strict'
// Test-only stand-in for @vates/stream-reader: pull exact-size chunks out of a Readable
// (read/readStrict/skip/skipStrict), written from its documented API so vhd-lib installs as an oracle.
const { finished, Readable } = require('node:stream')

class StreamReader {
  constructor(stream) {
    this.stream = typeof stream.pipe === 'function' ? stream : Readable.from(stream)
    this.ended = false
    this.error = undefined
    this.wake = () => {}
    this.stream.on('readable', () => this.wake())
    finished(this.stream, { writable: false }, (error) => {
      this.error = error
      this.ended = true
      this.wake()
    })
  }

  waitForData() {
    return new Promise((resolve) => {
      this.wake = resolve
    })
  }

  async read(size) {
    for (;;) {
      if (this.ended) {
        if (this.error) throw this.error
        return null
      }
      const chunk = this.stream.read(size)
      if (chunk !== null) return chunk
      await this.waitForData()
    }
  }

  async readStrict(size) {
    const chunk = await this.read(size)
    if (chunk === null) throw new Error('stream has ended without data')
    if (size !== undefined && chunk.length !== size) {
      throw new Error(`stream has ended with not enough data (actual: ${chunk.length}, expected: ${size})`)
    }
    return chunk
  }

  async skip(size) {
    let left = size
    while (left > 0) {
      if (this.ended) {
        if (this.error) throw this.error
        return size - left
      }
      const chunk = this.stream.read()
      if (chunk === null) {
        await this.waitForData()
        continue
      }
      if (chunk.length > left) this.stream.unshift(chunk.subarray(left))
      left -= Math.min(left, chunk.length)
    }
    return size
  }

  async skipStrict(size) {
    const skipped = await this.skip(size)
    if (skipped !== size) throw new Error(`stream has ended with not enough data (actual: ${skipped}, expected: ${size})`)
  }

  async *[Symbol.asyncIterator]() {
    for (let chunk = await this.read(); chunk !== null; chunk = await this.read()) yield chunk
  }
}

module.exports = StreamReader
