/**
 * The daemon's loop: keep up to `concurrency` accounts in flight, claiming due accounts as slots
 * free up, and sleep (until woken by a resync notification, or `idleMs`) when nothing is due.
 *
 * When an account's sync ends in a way that says no call gets through for now (`pauseFor`), the
 * loop pauses claiming: it waits a backoff (doubling, capped, with jitter), then claims a single
 * probe account. Only when the probe's sync ends without such an error is the whole concurrency
 * released again; otherwise the next wait is longer. Nobody has to restart the process.
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
  /** Errors after which no more accounts are claimed, for good (a configuration error from Tencent). */
  isFatal?: (err: unknown) => boolean;
  /**
   * Says whether an error that ended an account's sync (thrown by `syncOne`, or the outcome's
   * `error`) means no call gets through for now, and why (a short label, e.g. for a metric).
   */
  pauseFor?: (err: unknown) => string | undefined;
  /** Wait before the n-th probe: min(cap, base × 2^(n−1)) × [0.5, 1). Default 5 s, capped at 10 min. */
  pauseBackoff?: { baseMs: number; capMs: number };
  /** Told when claiming pauses, and again after each failed probe, with the wait before the next one. */
  onPause?: (pause: PauseInfo) => void;
  /** Told when a probe went through and claiming resumed. */
  onResume?: (pause: PauseInfo) => void;
  /** Random source in [0, 1) for the jitter; injectable for tests. */
  random?: () => number;
}

/** A pause of claiming, as {@link SchedulerDeps.onPause} and {@link Scheduler.paused} tell it. */
export interface PauseInfo {
  /** The label `pauseFor` gave the latest error. */
  reason: string;
  /** The latest error that kept calls paused. */
  error: unknown;
  /** Probes that failed since the pause began (0 when it just began). */
  failedProbes: number;
  /** The wait before the next probe, in ms. */
  backoffMs: number;
}

/** Default {@link SchedulerDeps.pauseBackoff}: short enough for a blip, capped for a long outage. */
export const PAUSE_BACKOFF = { baseMs: 5_000, capMs: 600_000 } as const;

/** Runs the claim/sync loop. */
export class Scheduler {
  readonly #d: SchedulerDeps;
  /** The slots: p-limit caps accounts in flight; we claim only as many accounts as it has room for. */
  readonly #slots: LimitFunction;
  #wake = new AbortController();
  #fatal: unknown;
  readonly #minBatch: number;
  #pause: PauseInfo | undefined;
  /**
   * Bumped when a pause begins or ends. A sync started in an earlier epoch cannot start a pause:
   * accounts in flight when calls stopped all fail the same way, and a straggler finishing after a
   * successful probe must not pause claiming again.
   */
  #epoch = 0;
  /** The probe account's sync, while one runs. */
  #probe: Promise<void> | undefined;
  /** The pause's backoff has been waited: the next claim is the probe. */
  #probeDue = false;

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

  /** The pause in force (claiming waits for a probe to succeed), if any. */
  get paused(): PauseInfo | undefined {
    return this.#pause;
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
        const pause = this.#pause;
        if (pause && !this.#probe && !this.#probeDue) {
          // Not cut short by resync notifications (only by stopping): Tencent is what we wait for.
          this.#d.onPause?.(pause);
          await this.#d.sleep(pause.backoffMs, stop).catch(() => {});
          this.#probeDue = true;
          continue;
        }
        if (this.#probe) {
          // One account is probing: nothing else is claimed until its sync ends.
          await this.#probe;
          continue;
        }
        const probing = this.#pause !== undefined;
        const free = probing ? 1 : this.#d.concurrency - this.inFlight;
        if (free <= 0 || (probing && this.inFlight >= this.#d.concurrency)) {
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
          const p = this.#start(state, hardStop, probing).finally(() => {
            running.delete(p);
            // Claim again once a batch of slots is free, not after every single account.
            if (this.#d.concurrency - this.inFlight >= this.#minBatch) this.wake();
          });
          running.add(p);
          if (probing) {
            this.#probe = p;
            this.#probeDue = false;
          }
        }
        // Fewer than asked for: nothing else is due now. Otherwise loop straight on for more.
        if (claimed.length < free) await this.#wait(this.#d.idleMs);
      }
    } finally {
      stop.removeEventListener('abort', onStop);
      await Promise.allSettled([...running]);
    }
  }

  /** Syncs one account in a slot, and decides from how it ended whether claiming pauses or resumes. */
  async #start(state: AccountSyncState, hardStop: AbortSignal, probe: boolean): Promise<void> {
    const epoch = this.#epoch;
    let error: unknown;
    try {
      error = (await this.#slots(() => this.#d.syncOne(state, hardStop))).error;
    } catch (err) {
      error = err;
      this.#d.onSyncError?.(err, state);
      if (this.#d.isFatal?.(err)) this.#fatal ??= err;
    }
    const reason = error === undefined || hardStop.aborted ? undefined : this.#d.pauseFor?.(error);
    if (probe) {
      this.#probe = undefined;
      const pause = this.#pause;
      if (!pause || this.#fatal !== undefined) return;
      if (reason === undefined) {
        this.#pause = undefined;
        this.#epoch++;
        this.#d.onResume?.(pause);
      } else {
        const failedProbes = pause.failedProbes + 1;
        this.#pause = { reason, error, failedProbes, backoffMs: this.#backoff(failedProbes) };
      }
      this.wake();
    } else if (reason !== undefined && epoch === this.#epoch && !this.#pause) {
      this.#epoch++;
      this.#probeDue = false;
      this.#pause = { reason, error, failedProbes: 0, backoffMs: this.#backoff(0) };
      this.wake();
    }
  }

  /** The wait before the next probe after `failedProbes` failed ones. */
  #backoff(failedProbes: number): number {
    const { baseMs, capMs } = this.#d.pauseBackoff ?? PAUSE_BACKOFF;
    const random = this.#d.random ?? Math.random;
    return Math.round(Math.min(capMs, baseMs * 2 ** Math.min(failedProbes, 30)) * (0.5 + random() / 2));
  }

  async #wait(ms: number): Promise<void> {
    await this.#d.sleep(ms, this.#wake.signal).catch(() => {});
  }
}
