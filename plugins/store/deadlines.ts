/**
 * The deadlines of every Redis command in flight, kept by one timer instead of one (or two)
 * per command: commands issued within one slice of time (a tenth of the timeout) share a
 * batch whose deadline is the slice's start plus the timeout, so no command waits past the
 * timeout and none is cut more than a slice early. The timer is armed for the oldest batch
 * only; at a busy moment it fires once per slice, not once per command.
 *
 * A batch also carries the AbortSignal its commands are sent with: node-redis drops a
 * command whose signal aborts while it still waits to be written, so a command the caller
 * was told had failed is never written late (a late INCR would count twice).
 */

/** One command's claim on its batch's deadline. */
export interface Deadline {
  /** Hand to node-redis: aborts at the deadline, which drops the command if still unwritten. */
  readonly signal: AbortSignal
  /** The command finished: true when in time (its outcome is the caller's), false when too late. */
  settle(): boolean
}

interface Entry extends Deadline {
  settled: boolean
  expire: () => void
}

interface Batch {
  opened: number
  due: number
  controller: AbortController
  entries: Entry[]
  /** Entries not settled yet: a batch that reaches its deadline at 0 has nothing to expire. */
  open: number
  /** Whether it already had its extra slice after a stall of this process. */
  graced: boolean
}

const SLICES = 10

export class Deadlines {
  private readonly sliceMs: number
  private readonly batches: Batch[] = []
  private timer: ReturnType<typeof setTimeout> | undefined
  private armedFor = Number.POSITIVE_INFINITY

  constructor(private readonly timeoutMs: number) {
    this.sliceMs = timeoutMs / SLICES
  }

  /** Starts a command's deadline; `expire` runs if it is not settled by then. */
  start(expire: () => void): Deadline {
    const now = performance.now()
    let batch = this.batches.at(-1)
    if (!batch || now >= batch.opened + this.sliceMs) {
      batch = {
        opened: now,
        due: now + this.timeoutMs,
        controller: new AbortController(),
        entries: [],
        open: 0,
        graced: false,
      }
      this.batches.push(batch)
      if (this.batches.length === 1) this.arm(batch.due)
    }
    const owner = batch
    const entry: Entry = {
      signal: owner.controller.signal,
      settled: false,
      expire,
      settle() {
        if (entry.settled) return false
        entry.settled = true
        owner.open--
        return true
      },
    }
    owner.entries.push(entry)
    owner.open++
    return entry
  }

  private arm(due: number): void {
    if (due >= this.armedFor) return
    clearTimeout(this.timer)
    this.armedFor = due
    this.timer = setTimeout(() => this.sweep(), Math.max(0, due - performance.now()))
    // A deadline alone must not keep a finished process alive; a command in flight has its socket.
    this.timer.unref()
  }

  private sweep(): void {
    const now = performance.now()
    // A timer this late means this process did not run (a busy loop, a long GC): commands
    // issued just before were maybe not even written, and replies that did arrive are not
    // read yet. Their time went to us, not to Redis, so each batch gets one more slice, and
    // a busy gateway does not mistake a healthy Redis for a dead one. A dead Redis still
    // fails them at most a slice later.
    const stalled = now - this.armedFor > this.sliceMs
    this.armedFor = Number.POSITIVE_INFINITY
    const graced: Batch[] = []
    while (this.batches.length > 0 && this.batches[0]!.due <= now) {
      const batch = this.batches.shift()!
      if (batch.open === 0) continue
      if (stalled && !batch.graced) {
        batch.graced = true
        batch.due = now + this.sliceMs
        graced.push(batch)
        continue
      }
      for (const entry of batch.entries) if (entry.settle()) entry.expire()
      batch.controller.abort()
    }
    if (graced.length > 0) {
      this.batches.unshift(...graced)
      this.batches.sort((a, b) => a.due - b.due)
    }
    const next = this.batches[0]
    if (next) this.arm(next.due)
  }
}
