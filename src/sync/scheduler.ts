/**
 * The daemon's loop: keep up to `concurrency` accounts in flight, claiming due accounts as slots
 * free up, and sleep (until woken by a resync notification, or `idleMs`) when nothing is due.
 *
 * It knows nothing of Postgres or HTTP: claiming, syncing, the clock and sleeping are passed in, so
 * it is tested with fakes and fake timers as well as end to end.
 */
import pLimit, { type LimitFunction } from 'p-limit';
import type { AccountSyncState } from '../db/accounts.js';
import type { AccountSyncOutcome } from './account-sync.js';

/** Dependencies of {@link Scheduler}. */
export interface SchedulerDeps {
  /** Claims up to `limit` due accounts (leased to this replica). */
  claim: (limit: number) => Promise<AccountSyncState[]>;
  /** Syncs one claimed account; `signal` aborts it only on a hard stop. Must not throw for the account's own failures. */
  syncOne: (state: AccountSyncState, signal: AbortSignal) => Promise<AccountSyncOutcome>;
  /** Accounts in flight at most. */
  concurrency: number;
  /** Longest wait when nothing is due. */
  idleMs: number;
  /** Waits `ms` or until `signal` aborts (then resolves or rejects; either is fine). */
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Told about claim failures (e.g. Postgres is down); the loop backs off and goes on. */
  onClaimError?: (err: unknown, backoffMs: number) => void;
  /** Told when `syncOne` throws (it should not); the error stops the loop only if `isFatal` says so. */
  onSyncError?: (err: unknown, state: AccountSyncState) => void;
  /** Errors after which no more accounts are claimed (e.g. a configuration error from Tencent). */
  isFatal?: (err: unknown) => boolean;
}

/** Runs the claim/sync loop. */
export class Scheduler {
  readonly #d: SchedulerDeps;
  /** The slots: p-limit caps accounts in flight; we claim only as many accounts as it has room for. */
  readonly #slots: LimitFunction;
  #wake = new AbortController();
  #fatal: unknown;
  readonly #minBatch: number;

  constructor(deps: SchedulerDeps) {
    this.#d = deps;
    this.#slots = pLimit(deps.concurrency);
    this.#minBatch = Math.max(1, Math.floor(deps.concurrency / 8));
  }

  /** Accounts being synced now. */
  get inFlight(): number {
    return this.#slots.activeCount + this.#slots.pendingCount;
  }

  /** The error that stopped claiming, if any. */
  get fatalError(): unknown {
    return this.#fatal;
  }

  /** Ends the current wait at once (a resync request arrived, or a slot freed up). */
  wake(): void {
    const w = this.#wake;
    this.#wake = new AbortController();
    w.abort();
  }

  /**
   * Claims and syncs until `stop` aborts, then waits for the accounts in flight to finish.
   * `hardStop` aborts those too (second signal or shutdown timeout).
   */
  async run(stop: AbortSignal, hardStop: AbortSignal): Promise<void> {
    const running = new Set<Promise<void>>();
    const onStop = () => this.wake();
    stop.addEventListener('abort', onStop);
    let claimFailures = 0;
    try {
      while (!stop.aborted && this.#fatal === undefined) {
        const free = this.#d.concurrency - this.inFlight;
        if (free <= 0) {
          await this.#wait(this.#d.idleMs);
          continue;
        }
        let claimed: AccountSyncState[];
        try {
          claimed = await this.#d.claim(free);
          claimFailures = 0;
        } catch (err) {
          claimFailures++;
          const backoff = Math.min(30_000, 500 * 2 ** Math.min(claimFailures - 1, 6));
          this.#d.onClaimError?.(err, backoff);
          // Not cut short by finishing accounts (only by stopping): the database is what we wait for.
          await this.#d.sleep(backoff, stop).catch(() => {});
          continue;
        }
        for (const state of claimed) {
          const p = this.#slots(() => this.#d.syncOne(state, hardStop))
            .then(
              () => {},
              (err) => {
                this.#d.onSyncError?.(err, state);
                if (this.#d.isFatal?.(err)) this.#fatal ??= err;
              },
            )
            .finally(() => {
              running.delete(p);
              // Claim again once a batch of slots is free, not after every single account.
              if (this.#d.concurrency - this.inFlight >= this.#minBatch) this.wake();
            });
          running.add(p);
        }
        // Fewer than asked for: nothing else is due now. Otherwise loop straight on for more.
        if (claimed.length < free) await this.#wait(this.#d.idleMs);
      }
    } finally {
      stop.removeEventListener('abort', onStop);
      await Promise.allSettled([...running]);
    }
  }

  async #wait(ms: number): Promise<void> {
    await this.#d.sleep(ms, this.#wake.signal).catch(() => {});
  }
}
