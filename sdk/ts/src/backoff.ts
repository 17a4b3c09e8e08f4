// Reconnect delays: exponential, capped, with jitter so that the clients of a node that died do
// not all come back in the same millisecond.

export interface BackoffOptions {
  /** First delay, in ms (default 100). */
  initialMs?: number;
  /** Upper bound of a delay, in ms (default 5000). */
  maxMs?: number;
  /** Random source in [0, 1); injectable for tests. */
  random?: () => number;
}

/** Delays of consecutive failed attempts: each doubles up to `maxMs`, drawn from [d/2, d]. */
export class Backoff {
  private attempt = 0;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly random: () => number;

  constructor(opts: BackoffOptions = {}) {
    this.initialMs = Math.max(1, opts.initialMs ?? 100);
    this.maxMs = Math.max(this.initialMs, opts.maxMs ?? 5000);
    this.random = opts.random ?? Math.random;
  }

  /** The delay before the next attempt; each call doubles the next one's ceiling. */
  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    // "Equal jitter": never less than half the ceiling (keeps the back-off), never more than it.
    return Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
  }

  /** After a success the next failure starts from `initialMs` again. */
  reset(): void {
    this.attempt = 0;
  }
}
