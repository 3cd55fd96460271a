/**
 * Bounded parallel map. Hand-written (a dozen lines) rather than a dependency: it must settle every
 * item (one VM's failure never cancels the others) and return results in input order.
 */
export async function mapSettled<T, R>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
  const limit = concurrency <= 0 ? items.length : Math.min(concurrency, items.length)
  const results: PromiseSettledResult<R>[] = new Array<PromiseSettledResult<R>>(items.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      try {
        results[i] = { status: 'fulfilled', value: await fn(items[i]!, i) }
      } catch (reason) {
        results[i] = { status: 'rejected', reason }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, limit) }, worker))
  return results
}
