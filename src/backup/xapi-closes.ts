/**
 * XAPI connections closing in the background. As XO's backup worker does (it reports a run's result,
 * then disposes of the run's XAPI connections and remotes), a backup run returns its summary before its
 * XAPI connections are closed: a close waits for XAPI's event long-poll to answer, up to xen-api's
 * 200 ms event debounce, which is no part of the backup. The closes are tracked here so that whoever
 * ends the process (the proxy's shutdown) or a test that stops its XAPI waits for them.
 */
const closing = new Set<Promise<void>>()

/** Tracks `close` (which must not reject) until it settles. */
export function closeInBackground(close: Promise<void>): void {
  closing.add(close)
  void close.finally(() => closing.delete(close))
}

/** Resolves once every tracked close has ended (including closes started while waiting). */
export async function xapiClosesSettled(): Promise<void> {
  while (closing.size > 0) await Promise.allSettled([...closing])
}
