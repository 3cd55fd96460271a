/**
 * Public API of the queue contract (package export `backup-proxy/queue`): task schemas and types, queue
 * names, sealing, the enqueue client and its job handles, task-log types, and the proxy registry.
 */
export * from './names.js'
export * from './tasks.js'
export * from './seal.js'
export * from './task-log.js'
export * from './redis.js'
export * from './registry.js'
export * from './client.js'
export * from './status.js'
