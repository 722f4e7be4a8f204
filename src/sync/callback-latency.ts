/**
 * How long a webhook takes to show in the mirror: from a callback received for an account to the
 * end of that account's next sync that *started after* the callback. A sync that was already
 * running when the callback came may have read the account before the change, so it does not
 * count; the one after it does (that is also the rule the scheduler follows, see `afterSync`).
 *
 * Per process: a callback received by one replica and synced by another is never matched, and is
 * forgotten after `maxAgeMs`.
 */

/** Options of {@link CallbackLatency}. */
export interface CallbackLatencyOptions {
  /** Accounts tracked at once; the oldest are forgotten first. Default 100,000. */
  maxAccounts?: number;
  /** Receipts per account kept (a burst is one sync anyway). Default 16. */
  maxPerAccount?: number;
  /** Receipts older than this are forgotten, unmatched. Default 1 h. */
  maxAgeMs?: number;
  /** Monotonic milliseconds. Default `performance.now`. */
  now?: () => number;
}

/** See the module comment. */
export class CallbackLatency {
  readonly #maxAccounts: number;
  readonly #maxPer: number;
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  /** Account → receipt times, ascending. Map order is first-receipt order, so the oldest go first. */
  readonly #receipts = new Map<string, number[]>();

  constructor(opts: CallbackLatencyOptions = {}) {
    this.#maxAccounts = opts.maxAccounts ?? 100_000;
    this.#maxPer = opts.maxPerAccount ?? 16;
    this.#maxAgeMs = opts.maxAgeMs ?? 3_600_000;
    this.#now = opts.now ?? (() => performance.now());
  }

  /** Accounts with receipts not yet matched by a sync. */
  get tracked(): number {
    return this.#receipts.size;
  }

  /** Notes that a callback for these accounts arrived now (or `at`). */
  received(accountIds: readonly string[], at = this.#now()): void {
    this.#expire(at);
    for (const id of accountIds) {
      const times = this.#receipts.get(id);
      if (times) {
        if (times.length < this.#maxPer) times.push(at);
        continue;
      }
      if (this.#receipts.size >= this.#maxAccounts) {
        const oldest = this.#receipts.keys().next().value;
        if (oldest !== undefined) this.#receipts.delete(oldest);
      }
      this.#receipts.set(id, [at]);
    }
  }

  /**
   * Notes a completed sync of `accountId` that started at `startedAt` (same clock).
   *
   * @returns seconds from each callback it covers to now, oldest first (empty when none)
   */
  synced(accountId: string, startedAt: number, finishedAt = this.#now()): number[] {
    const times = this.#receipts.get(accountId);
    if (!times) return [];
    let covered = 0;
    while (covered < times.length && times[covered]! < startedAt) covered++;
    if (covered === 0) return [];
    const out = times.slice(0, covered).map((t) => (finishedAt - t) / 1000);
    if (covered === times.length) this.#receipts.delete(accountId);
    else times.splice(0, covered);
    return out;
  }

  #expire(now: number): void {
    for (const [id, times] of this.#receipts) {
      if (now - times[times.length - 1]! <= this.#maxAgeMs) break;
      this.#receipts.delete(id);
    }
  }
}
