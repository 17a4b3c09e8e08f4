// Records a client's events and lets a test wait for a condition on them (a signal, not a sleep).
const WAIT_MS = 20_000;

export class Recorder {
  constructor(client) {
    this.events = [];
    this.waiters = [];
    for (const type of ['connected', 'message', 'disconnected', 'reconnect', 'kicked', 'failed', 'error', 'notice']) {
      client.on(type, (ev) => {
        this.events.push({ type, ev });
        this.waiters = this.waiters.filter((w) => !w.check());
      });
    }
  }

  of(type) {
    return this.events.filter((e) => e.type === type).map((e) => e.ev);
  }

  /** Persisted messages, in delivery order. */
  get messages() {
    return this.of('message').filter((m) => m.seq > 0n);
  }

  /**
   * Resolves with `cond()`'s value once it is truthy (a non-empty list, for lists); checked after
   * every event. Rejects after a while, naming `what`.
   */
  until(what, cond, ms = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const w = {
        check: () => {
          let ok;
          try { ok = cond(); } catch (e) { clearTimeout(timer); reject(e); return true; }
          // An empty list of events is "not yet".
          if (Array.isArray(ok) && ok.length === 0) ok = false;
          if (ok) { clearTimeout(timer); resolve(ok); }
          return Boolean(ok);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`timed out waiting for ${what}; events: ${this.events.map((e) => e.type).join(',')}`));
      }, ms);
      if (!w.check()) this.waiters.push(w);
    });
  }

  /** The texts of the persisted messages received so far. */
  texts() {
    return this.messages.map((m) => m.messageBody?.messageContent?.content?.value?.text);
  }
}
