/**
 * A one-shot pass over a list of accounts (`friend-mirror sync`): up to `concurrency` accounts in
 * flight, every call paced by the limiter and retried when that can help.
 */
import type { Kysely } from 'kysely';
import pLimit from 'p-limit';
import type { AccountSyncState } from '../db/accounts.js';
import { FriendWriter } from '../db/friend-writer.js';
import type { Database } from '../db/schema.js';
import type { NextSync } from '../db/snapshot-types.js';
import { TimError } from '../tim/errors.js';
import type { FriendGetPage, FriendGetRequest } from '../tim/friend-get.js';
import type { FriendGetCall } from '../tim/friend-pull.js';
import {
  type AccountSyncDeps,
  type AccountSyncOutcome,
  type DiscoverOptions,
  mustStopPass,
  syncAccount,
} from './account-sync.js';
import { type Limiter, sleep } from './limiter.js';
import { type RetryOptions, withRetries } from './retry.js';
import type { RowBudget } from './row-budget.js';

/** Anything that can make one friend_get call (the TimClient, in production). */
export interface FriendGetter {
  friendGet(req: FriendGetRequest, signal?: AbortSignal): Promise<FriendGetPage>;
}

/** Dependencies and knobs of {@link runPass}. */
export interface PassDeps {
  db: Kysely<Database>;
  client: FriendGetter;
  limiter: Limiter;
  /** Accounts in flight at once. */
  concurrency: number;
  /** Applies at once (`SYNC_APPLY_CONCURRENCY`); default the writer's (src/db/friend-writer.ts). */
  applyConcurrency?: number;
  retry?: Omit<RetryOptions, 'signal'>;
  nextSync?: NextSync;
  maxPages?: number;
  /** Add friends seen to `tim.accounts` (`SYNC_DISCOVER`); absent: off. */
  discover?: DiscoverOptions;
  /** When a missing account is tried again (`SYNC_MISSING_RECHECK`); default 24 h. */
  missingRecheckMs?: number;
  /** Friends held in memory at once across the accounts in flight (`SYNC_ROW_BUDGET`); absent: unbounded. */
  rowBudget?: RowBudget;
  signal?: AbortSignal;
  /**
   * Claims an account just before it is synced (a lease, so a running daemon does not sync it at
   * the same moment) and returns its fresh state. Without it, states are used as given. A `busy`
   * account (a live replica is syncing it) is tried again every `busyPollMs` once the others are
   * done, and synced by this pass as soon as the lease is free, for up to `busyWaitMs` after it was
   * first found busy; one still busy then is reported in `busyIds`, never counted as synced.
   */
  claim?: (accountId: string) => Promise<AccountSyncState | 'busy' | 'gone'>;
  /** How long to wait for an account a live replica holds (SYNC_LEASE and a little more). Default 0. */
  busyWaitMs?: number;
  /** How often a busy account is tried again. Default 500 ms. */
  busyPollMs?: number;
  /** Told about every finished account (progress, logging). */
  onAccount?: (outcome: AccountSyncOutcome, progress: PassProgress) => void;
}

/** Running totals of a pass. */
export interface PassProgress {
  total: number;
  done: number;
  unchanged: number;
  changed: number;
  missing: number;
  failed: number;
  /** HTTP calls made, retries included. */
  calls: number;
  friendsWritten: number;
  tagsWritten: number;
  elapsedMs: number;
  /** Accounts still held by another live replica when the pass gave up waiting for them. */
  busy: number;
  /** Accounts synced after waiting for another replica to let go of them. */
  waited: number;
}

/** The result of a pass. */
export interface PassSummary extends PassProgress {
  /** Set when the pass stopped early: a configuration error, a lockout or refusal, or an abort. */
  stoppedBy?: Error;
  /** Accounts never started because the pass stopped early. */
  skipped: number;
  /** The accounts counted in `busy`. */
  busyIds: string[];
}

/** Tencent's 70050 (too many failed UserSig checks) asks for at least 60 s without calls. */
export const USERSIG_LOCKOUT_MS = 61_000;

/**
 * One friend_get call as the sync makes it: paced by the limiter, retried when that can help,
 * aborted by `signal`. `onCall` is told about every HTTP call, retries included.
 */
export function limitedCall(
  deps: Pick<PassDeps, 'client' | 'limiter' | 'retry'>,
  signal: AbortSignal,
  onCall?: () => void,
): FriendGetCall {
  return (req: FriendGetRequest) =>
    withRetries(
      () =>
        deps.limiter.schedule(async () => {
          onCall?.();
          try {
            return await deps.client.friendGet(req, signal);
          } catch (err) {
            // Process-wide reactions, decided here once for every account in flight.
            if (err instanceof TimError && err.retryClass === 'rate-limited') deps.limiter.slowDown();
            if (err instanceof TimError && err.retryClass === 'usersig-lockout')
              deps.limiter.pause(USERSIG_LOCKOUT_MS);
            throw err;
          }
        }, signal),
      { ...deps.retry, signal },
    );
}

/**
 * What one account's sync needs from a pass's dependencies, with `call` (see {@link limitedCall})
 * made for the pass or, in the daemon, for the account. The one place pass options reach
 * {@link syncAccount}.
 */
export function accountSyncDeps(
  deps: Omit<PassDeps, 'signal' | 'onAccount'>,
  call: FriendGetCall,
  writer: FriendWriter,
  signal?: AbortSignal,
): AccountSyncDeps {
  return {
    db: deps.db,
    writer,
    call,
    nextSync: deps.nextSync,
    maxPages: deps.maxPages,
    ...(deps.missingRecheckMs !== undefined ? { missingRecheckMs: deps.missingRecheckMs } : {}),
    ...(deps.discover ? { discover: deps.discover } : {}),
    ...(deps.rowBudget ? { rowBudget: deps.rowBudget, ...(signal ? { signal } : {}) } : {}),
  };
}

/**
 * Syncs `accounts` once each. An account's failure is recorded on it and counted; only errors that
 * concern every account (bad configuration, a UserSig lockout that outlasted every retry's 61 s
 * pause, a refusal such as a proxy's HTTP 403, shutdown: see `mustStopPass`) stop the pass, and
 * then no further call is made. Unlike the daemon, a pass does not wait for calls to go through
 * again: it ends, and says why.
 */
export async function runPass(deps: PassDeps, accounts: readonly AccountSyncState[]): Promise<PassSummary> {
  const started = performance.now();
  const stop = new AbortController();
  const signal = deps.signal ? AbortSignal.any([deps.signal, stop.signal]) : stop.signal;
  const progress: PassProgress = {
    total: accounts.length,
    done: 0,
    unchanged: 0,
    changed: 0,
    missing: 0,
    failed: 0,
    calls: 0,
    friendsWritten: 0,
    tagsWritten: 0,
    elapsedMs: 0,
    busy: 0,
    waited: 0,
  };
  let stoppedBy: Error | undefined;
  let skipped = 0;

  const call = limitedCall(deps, signal, () => {
    progress.calls++;
  });

  const limit = pLimit(deps.concurrency);
  // One writer for the pass: its apply slots bound the applies of every account in flight.
  const writer = new FriendWriter(deps.db, { applyConcurrency: deps.applyConcurrency });
  /** Accounts a live replica held when last tried, with when they were first found so. */
  const busy = new Map<string, { state: AccountSyncState; since: number }>();
  const attempt = (state: AccountSyncState) =>
    limit(async () => {
      if (signal.aborted) {
        busy.delete(state.accountId);
        skipped++;
        return;
      }
      const waiting = busy.get(state.accountId);
      busy.delete(state.accountId);
      try {
        const claimed = deps.claim ? await deps.claim(state.accountId) : state;
        if (claimed === 'busy') {
          busy.set(state.accountId, waiting ?? { state, since: performance.now() });
          return;
        }
        if (claimed === 'gone') {
          progress.total--;
          return;
        }
        if (waiting) progress.waited++;
        const outcome = await syncAccount(accountSyncDeps(deps, call, writer, signal), claimed);
        progress.done++;
        progress[outcome.result]++;
        progress.friendsWritten += outcome.friendsWritten;
        progress.tagsWritten += outcome.tagsWritten;
        progress.elapsedMs = performance.now() - started;
        deps.onAccount?.(outcome, progress);
      } catch (err) {
        if (mustStopPass(err) || signal.aborted) {
          // The first such error is the reason; the rest are its echoes in other accounts.
          stoppedBy ??= err instanceof Error ? err : new Error(String(err));
          stop.abort(stoppedBy);
          skipped++;
          return;
        }
        // Not even the failure could be recorded (e.g. the database is down): count it and go on.
        progress.done++;
        progress.failed++;
        deps.onAccount?.(
          {
            accountId: state.accountId,
            result: 'failed',
            calls: 0,
            friendsWritten: 0,
            tagsWritten: 0,
            durationMs: 0,
            error: err instanceof Error ? err : new Error(String(err)),
          },
          progress,
        );
      }
    });
  await Promise.all(accounts.map(attempt));

  // Accounts a live replica was syncing: wait until it lets go (a sync that started before this
  // command did is not one this command may report as done), then sync them here.
  const waitMs = deps.busyWaitMs ?? 0;
  const pollMs = deps.busyPollMs ?? 500;
  const expired = (b: { since: number }) => performance.now() - b.since >= waitMs;
  // Each is tried at least once more after the others (a long pass may outlast its wait).
  let retried = new Set<string>();
  const due = () => [...busy.values()].filter((b) => !retried.has(b.state.accountId) || !expired(b));
  while (busy.size > 0 && !signal.aborted && due().length > 0) {
    await sleep(pollMs, signal).catch(() => {});
    if (signal.aborted) break;
    const now = due();
    retried = new Set([...retried, ...now.map((b) => b.state.accountId)]);
    await Promise.all(now.map((b) => attempt(b.state)));
  }
  if (signal.aborted) {
    // Stopped while waiting: those accounts were never started.
    skipped += busy.size;
    busy.clear();
    stoppedBy ??= signal.reason instanceof Error ? signal.reason : new Error('stopped');
  }
  progress.busy = busy.size;
  progress.elapsedMs = performance.now() - started;
  return { ...progress, skipped, busyIds: [...busy.keys()], ...(stoppedBy ? { stoppedBy } : {}) };
}
