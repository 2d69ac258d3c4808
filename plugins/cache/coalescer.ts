/**
 * Request coalescing within one instance: while an identical cacheable miss is on its way
 * upstream, later ones wait for its answer instead of calling upstream themselves.
 *
 * A flight is registered synchronously when the leader's lookup is issued, and followers
 * join it synchronously in their own lookup, so whether a request leads or follows never
 * depends on how store replies interleave. The flight stays registered until the leader's
 * entry is written: a request that finds no flight is therefore issued after the write and
 * reads the entry itself, so no request slips between the two and calls upstream again.
 *
 * When the leader produces no answer to share (upstream error, client gone, answer too large,
 * admission denied), each follower makes its own upstream call: a follower never fails with
 * another request's error, and never waits on more than one flight.
 */

/** What a flight hands its followers: anything, the cache decides (a stored answer). */
export class Flight<T> {
  readonly answer: Promise<T | null>
  private resolveAnswer!: (answer: T | null) => void
  private done = false

  constructor() {
    this.answer = new Promise((resolve) => {
      this.resolveAnswer = resolve
    })
  }

  /** Hands the leader's answer (or null: go upstream yourselves) to every follower; once. */
  finish(answer: T | null): void {
    if (this.done) return
    this.done = true
    this.resolveAnswer(answer)
  }
}

export class Coalescer<T> {
  private readonly flights = new Map<string, Flight<T>>()

  get inFlight(): number {
    return this.flights.size
  }

  /** The flight in progress for `key`, if any. */
  current(key: string): Flight<T> | undefined {
    return this.flights.get(key)
  }

  /** Registers a new flight for `key`; the caller leads it and must end it with `land`. */
  lead(key: string): Flight<T> {
    const flight = new Flight<T>()
    this.flights.set(key, flight)
    return flight
  }

  /** Unregisters the flight once its entry is written (or will not be); releases any waiter. */
  land(key: string, flight: Flight<T>): void {
    flight.finish(null)
    if (this.flights.get(key) === flight) this.flights.delete(key)
  }
}

/** Waits for a flight's answer; null as soon as the follower's own client goes away. */
export function follow<T>(flight: Flight<T>, signal: AbortSignal): Promise<T | null> {
  if (signal.aborted) return Promise.resolve(null)
  return new Promise((resolve) => {
    const leave = () => resolve(null)
    signal.addEventListener('abort', leave, { once: true })
    flight.answer.then((answer) => {
      signal.removeEventListener('abort', leave)
      resolve(answer)
    })
  })
}
