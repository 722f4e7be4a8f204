/**
 * A one-shot pass over a list of accounts (`friend-mirror sync`): up to `concurrency` accounts in
 * flight, every call paced by the limiter and retried when that can help.
 */
import type { Kysely } from 'kysely';
import pLimit from 'p-limit';
import type { AccountSyncState } from '../db/accounts.js';
import type { NextSync } from '../db/friends.js';
import type { Database } from '../db/schema.js';
import type { FriendGetPage, FriendGetRequest } from '../tim/friend-get.js';
import { type AccountSyncOutcome, mustStopPass, syncAccount } from './account-sync.js';
import type { CallLimiter } from './limiter.js';
import { type RetryOptions, withRetries } from './retry.js';

/** Anything that can make one friend_get call (the TimClient, in production). */
export interface FriendGetter {
  friendGet(req: FriendGetRequest, signal?: AbortSignal): Promise<FriendGetPage>;
}

/** Dependencies and knobs of {@link runPass}. */
export interface PassDeps {
  db: Kysely<Database>;
  client: FriendGetter;
  limiter: CallLimiter;
  /** Accounts in flight at once. */
  concurrency: number;
  retry?: Omit<RetryOptions, 'signal'>;
  nextSync?: NextSync;
  maxPages?: number;
  signal?: AbortSignal;
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
}

/** The result of a pass. */
export interface PassSummary extends PassProgress {
  /** Set when the pass stopped early: a configuration error Tencent reported, or an abort. */
  stoppedBy?: Error;
  /** Accounts never started because the pass stopped early. */
  skipped: number;
}

/**
 * Syncs `accounts` once each. An account's failure is recorded on it and counted; only errors that
 * concern every account (bad configuration, UserSig lockout, shutdown) stop the pass, and then no
 * further call is made.
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
  };
  let stoppedBy: Error | undefined;
  let skipped = 0;

  const call = (req: FriendGetRequest) =>
    withRetries(
      () =>
        deps.limiter.schedule(() => {
          progress.calls++;
          return deps.client.friendGet(req, signal);
        }, signal),
      { ...deps.retry, signal },
    );

  const limit = pLimit(deps.concurrency);
  await Promise.all(
    accounts.map((state) =>
      limit(async () => {
        if (signal.aborted) {
          skipped++;
          return;
        }
        try {
          const outcome = await syncAccount(
            { db: deps.db, call, nextSync: deps.nextSync, maxPages: deps.maxPages },
            state,
          );
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
      }),
    ),
  );
  progress.elapsedMs = performance.now() - started;
  return { ...progress, skipped, ...(stoppedBy ? { stoppedBy } : {}) };
}
