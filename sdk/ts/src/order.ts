// Seq order for the user's list, across stores that commit out of order.
//
// A seq is taken before its message is stored, and two stores can commit in either order: a push,
// or a sync, can show seq 5 while seq 4 is still being written. Delivering 5 at once would lose 4
// (it would look like a duplicate when it arrived), and acking 5 would hide it from the other
// devices' next sync. So a message above a gap is held, and nothing past the gap is acked, until
// the gap fills (a push or a re-sync brings the missing seq) or `gapWaitMs` passes: a seq still
// missing then was never stored (a failed store, a counter reset) and is skipped. A skipped seq
// that arrives later anyway (a store slower than the wait) is delivered then, rather than dropped.

/** The shape this needs of a message. */
export interface Sequenced {
  seq: bigint;
}

/** Skipped seqs remembered for a late delivery; the oldest are forgotten first. */
const SKIPPED_MAX = 1024;

export class Ordered<M extends Sequenced> {
  private lastSeq: bigint;
  // Whether lastSeq is known (a start seq was given, or a sync from 0 anchored the list).
  private anchored: boolean;
  private readonly held = new Map<bigint, M>();
  private gapSince: number | undefined;
  private readonly skipped = new Set<bigint>();

  /** `last`: the highest seq the application already has (0n = unknown: a sync from 0 anchors the list; see anchor()). */
  constructor(
    last: bigint,
    private readonly gapWaitMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.lastSeq = last;
    this.anchored = last !== 0n;
  }

  /**
   * With an unknown start, after a sync from 0: the lowest seq held (from the sync, or a push that
   * came first) starts the list. Pushes alone never anchor it: the first to arrive need not be the lowest.
   */
  anchor(): M[] {
    if (this.anchored || this.held.size === 0) return [];
    let min: bigint | undefined;
    for (const s of this.held.keys()) if (min === undefined || s < min) min = s;
    this.lastSeq = min! - 1n;
    this.anchored = true;
    return this.release();
  }

  /** The highest seq delivered with nothing missing below it (what may be acked). */
  get last(): bigint {
    return this.lastSeq;
  }

  /** The highest seq seen, delivered or held: where the next sync page starts. */
  get seen(): bigint {
    let max = this.lastSeq;
    for (const s of this.held.keys()) if (s > max) max = s;
    return max;
  }

  get hasGap(): boolean {
    return this.held.size > 0;
  }

  /** When the open gap, if any, is given up (ms since the epoch of `now`). */
  get deadline(): number | undefined {
    return this.gapSince === undefined ? undefined : this.gapSince + this.gapWaitMs;
  }

  /** Takes one message of the list; returns the messages now deliverable, in order. */
  offer(m: M): M[] {
    if (m.seq <= this.lastSeq) {
      // Late: its gap was skipped before it was stored.
      return this.skipped.delete(m.seq) ? [m] : [];
    }
    this.held.set(m.seq, m);
    return this.release();
  }

  /** Gives the open gap up if its time has come; returns what that releases. */
  skipDue(): M[] {
    const at = this.deadline;
    if (at === undefined || at > this.now() || this.held.size === 0) return [];
    let next = this.seen;
    for (const s of this.held.keys()) if (s < next) next = s;
    for (let s = this.lastSeq + 1n; s < next && s - this.lastSeq <= BigInt(SKIPPED_MAX); s++) this.skipped.add(s);
    while (this.skipped.size > SKIPPED_MAX) {
      let min: bigint | undefined;
      for (const s of this.skipped) if (min === undefined || s < min) min = s;
      this.skipped.delete(min!);
    }
    this.lastSeq = next - 1n;
    this.anchored = true;
    // A further gap behind this one gets its own full wait.
    this.gapSince = undefined;
    return this.release();
  }

  private release(): M[] {
    const out: M[] = [];
    while (this.anchored) {
      const m = this.held.get(this.lastSeq + 1n);
      if (m === undefined) break;
      this.held.delete(m.seq);
      this.lastSeq = m.seq;
      out.push(m);
    }
    if (this.held.size === 0) this.gapSince = undefined;
    else if (this.gapSince === undefined) this.gapSince = this.now();
    return out;
  }
}
