/**
 * Syncing one account: pull all its pages, then apply them in one transaction together with the
 * new sequences. Any failure before the commit leaves the mirror and the stored sequences exactly
 * as they were, so the next attempt simply starts over.
 */
import type { Kysely } from 'kysely';
import { accountIdProblem } from '../account-id.js';
import { type AccountSyncState, recordFailure } from '../db/accounts.js';
import { type DiscoveryResult, discoverAccounts } from '../db/discovery.js';
import type { FriendWriter } from '../db/friend-writer.js';
import type { Database } from '../db/schema.js';
import { type NextSync, SnapshotConflictError } from '../db/snapshot-types.js';
import { DEFAULT_NEXT_SYNC, recordUnchanged } from '../db/synced.js';
import { TimApiError, TimError, TimHttpError, TimNetworkError, TimTimeoutError } from '../tim/errors.js';
import { type FriendGetCall, pullFriends } from '../tim/friend-pull.js';
import { type Drift, driftOf } from './reconcile.js';
import type { RowBudget, RowHold } from './row-budget.js';
import { HeldRows } from './snapshot.js';

/** What syncing one account did. */
export interface AccountSyncOutcome {
  accountId: string;
  /** `unchanged`: one call, no data written; `changed`: data applied; `missing`: 30003; `failed`: see error. */
  result: 'unchanged' | 'changed' | 'missing' | 'failed';
  calls: number;
  friendsWritten: number;
  tagsWritten: number;
  durationMs: number;
  /** Time spent writing the data (`FriendWriter.apply`), when the account changed. */
  applyMs?: number;
  error?: Error;
  /** The account was synced as a due reconciliation (a full read). */
  reconciled?: boolean;
  /**
   * A full read on top of stored sequences changed rows those sequences said were unchanged: the
   * sequences missed a change, and these rows were repaired.
   */
  drift?: Drift;
  /** What discovery did with this account's friend list (only when `discover` is on and it was read). */
  discovery?: DiscoveryResult;
  /** Discovery failed; the sync itself succeeded and is kept. */
  discoveryError?: Error;
}

/** Discovery settings (`SYNC_DISCOVER`, `SYNC_DISCOVER_MAX_ACCOUNTS`). */
export interface DiscoverOptions {
  /** Stop adding once `tim.accounts` holds this many rows. */
  maxAccounts: number;
}

/** Dependencies and knobs of {@link syncAccount}. */
export interface AccountSyncDeps {
  db: Kysely<Database>;
  /** Writes the pulls to `db`; one per process (or pass), shared by every account in flight. */
  writer: FriendWriter;
  /** One friend_get call, already rate-limited and retried. */
  call: FriendGetCall;
  maxPages?: number;
  maxRestarts?: number;
  /** Backoff of a failing account: base × 2^failures, capped. Default 1 min, capped at 1 h. */
  failureBackoff?: { baseMs: number; capMs: number };
  /** When a synced account is due again. */
  nextSync?: NextSync;
  /**
   * How long a missing account is left alone before it is checked again (`SYNC_MISSING_RECHECK`).
   * Default 24 h; each re-check comes up to a tenth earlier, so ids found missing together spread out.
   */
  missingRecheckMs?: number;
  /** Add friends seen to `tim.accounts` (discovery); absent: off. */
  discover?: DiscoverOptions;
  /** Friends held in memory across accounts in flight (`SYNC_ROW_BUDGET`); absent: unbounded. */
  rowBudget?: RowBudget;
  /** Ends a wait for room in {@link rowBudget} (shutdown, a stopped pass). */
  signal?: AbortSignal;
}

/** What a pull sends to read everything: no sequences. */
const FULL_READ = { standardSequence: null, customSequence: null } as const;

/** A missing account's re-check comes up to this share of `missingRecheckMs` early. */
const MISSING_RECHECK_JITTER = 0.1;

/** Conflicts are retried this many times with fresh state before the account fails this round. */
const MAX_CONFLICT_RETRIES = 2;

/**
 * Rows reserved for a first page before anything says how big pages are: Tencent's page size as
 * documented today. Only an estimate: a bigger page is counted in full when it lands, a smaller
 * one gives the difference back, and later pages are estimated from the pages seen.
 */
const FIRST_PAGE_ROWS = 500;

/**
 * `call`, reserving room in `hold` before each page: for a first page, `firstPage` rows; for a later
 * one, the previous page's size, or fewer when Tencent's `FriendNum` says fewer friends remain
 * (it is documented as unreliable, so it only ever lowers the estimate). Before each call the hold
 * is trued up to the friends `held()` reports, which the pages so far left (none after a restart).
 */
function reservingCall(
  call: FriendGetCall,
  hold: RowHold,
  held: () => number,
  firstPage: number,
  signal: AbortSignal | undefined,
): FriendGetCall {
  // Only the numbers: keeping the page itself would keep its decoded friends alive past the sink.
  let last: { size: number; friendNum: number | undefined } | undefined;
  return async (req) => {
    const received = held();
    hold.set(received);
    let estimate = firstPage;
    if (req.StartIndex !== 0 && last) {
      const left = last.friendNum === undefined ? 0 : last.friendNum - received;
      estimate = left > 0 ? Math.min(last.size, left) : last.size;
    }
    await hold.reserve(estimate, signal);
    const page = await call(req);
    last = { size: page.items.length, friendNum: page.friendNum };
    return page;
  };
}

/**
 * Syncs one account. Never throws for the account's own failures: they are recorded on the account
 * and returned. It rethrows only what concerns every call ({@link mustStopPass}): a configuration
 * error, a UserSig lockout or a refusal that outlasted the retries, a dead call thread, an abort.
 */
export async function syncAccount(
  deps: AccountSyncDeps,
  state: AccountSyncState,
): Promise<AccountSyncOutcome> {
  const started = performance.now();
  const outcome: AccountSyncOutcome = {
    accountId: state.accountId,
    result: 'failed',
    calls: 0,
    friendsWritten: 0,
    tagsWritten: 0,
    durationMs: 0,
  };
  let base = { standardSequence: state.standardSequence, customSequence: state.customSequence };
  // `ask` is what we send; it differs from `base` for a reconcile and after drift, when we ask for
  // everything (still applied on top of `base`, so a concurrent writer is still noticed).
  // A missing account that Tencent knows again may be a new account under the same id, whose
  // sequences could equal the stored ones by chance: read it in full.
  let ask: { standardSequence: number | null; customSequence: number | null } =
    state.reconcile || state.status === 'missing' ? FULL_READ : base;
  if (state.reconcile) outcome.reconciled = true;
  let friendIds: string[] | undefined;
  // Released when the apply has committed or the attempt has failed (the `finally` below).
  const hold = deps.rowBudget?.open();
  // The finish releases this claim's lease only, never one another replica took over meanwhile.
  const nextSync: NextSync = {
    ...(deps.nextSync ?? DEFAULT_NEXT_SYNC),
    ...(state.leaseOwner === undefined ? {} : { leaseOwner: state.leaseOwner }),
  };
  // A synced account's friend count bounds its first page; a never-synced one's is unknown.
  const firstPage = Math.min(state.friendCount ?? FIRST_PAGE_ROWS, FIRST_PAGE_ROWS);
  // A conflict may mean the account was synced meanwhile: after one, the apply is never a first sync.
  let neverSynced = state.neverSynced === true;
  try {
    for (let attempt = 0; ; attempt++) {
      const head = {
        accountId: state.accountId,
        baseStandardSequence: base.standardSequence,
        baseCustomSequence: base.customSequence,
        ...(neverSynced ? { neverSynced: true } : {}),
      };
      const rows = new HeldRows(state.accountId, deps.writer.formatFor(head), deps.discover !== undefined);
      const pull = await pullFriends(
        hold ? reservingCall(deps.call, hold, () => rows.friendCount, firstPage, deps.signal) : deps.call,
        {
          accountId: state.accountId,
          ...ask,
          maxPages: deps.maxPages,
          maxRestarts: deps.maxRestarts,
          sink: rows,
        },
      );
      // What the pull keeps: the last page's rows counted, an unchanged account's reservation given back.
      hold?.set(rows.friendCount);
      outcome.calls += pull.calls;
      try {
        if (pull.unchanged) {
          if (
            !(await recordUnchanged(
              deps.db,
              state.accountId,
              pull.standardSequence,
              pull.customSequence,
              nextSync,
            ))
          ) {
            throw new SnapshotConflictError('stale', 'stored sequences changed while pulling');
          }
          outcome.result = 'unchanged';
        } else {
          const snapshot = rows.snapshot(head, pull);
          const applyStartedAt = performance.now();
          const applied = await deps.writer.apply(snapshot, nextSync);
          outcome.applyMs = performance.now() - applyStartedAt;
          outcome.friendsWritten = applied.friendsUpserted + applied.friendsDeleted;
          outcome.tagsWritten = applied.tagsUpserted + applied.tagsDeleted;
          outcome.result = 'changed';
          if (ask.standardSequence === null && ask.customSequence === null) {
            const drift = driftOf(base, pull, outcome);
            if (drift) outcome.drift = drift;
          }
          if (pull.standardIncluded && deps.discover) friendIds = [...rows.friendIds];
        }
        break;
      } catch (err) {
        if (
          !(err instanceof SnapshotConflictError) ||
          err.reason === 'gone' ||
          attempt >= MAX_CONFLICT_RETRIES
        ) {
          throw err;
        }
        neverSynced = false;
        if (err.reason === 'drift') {
          // The mirror lacks friends the source has: re-read everything, still on top of `base`.
          ask = FULL_READ;
        } else {
          const fresh = await deps.db
            .selectFrom('tim.accounts')
            .select(['standard_sequence', 'custom_sequence'])
            .where('account_id', '=', state.accountId)
            .executeTakeFirstOrThrow();
          base = { standardSequence: fresh.standard_sequence, customSequence: fresh.custom_sequence };
          ask = state.reconcile || ask === FULL_READ ? FULL_READ : base;
        }
      }
    }
  } catch (err) {
    if (mustStopPass(err)) throw err;
    const error = err instanceof Error ? err : new Error(String(err));
    outcome.error = error;
    const missing = err instanceof TimApiError && err.retryClass === 'account-missing';
    outcome.result = missing ? 'missing' : 'failed';
    if (!(err instanceof SnapshotConflictError && err.reason === 'gone')) {
      await recordFailure(deps.db, state.accountId, {
        status: missing ? 'missing' : 'failing',
        error: describeError(error),
        retryAfter: missing
          ? { fixedMs: deps.missingRecheckMs ?? 86_400_000, jitter: MISSING_RECHECK_JITTER }
          : (deps.failureBackoff ?? { baseMs: 60_000, capMs: 3_600_000 }),
        ...(state.leaseOwner === undefined ? {} : { leaseOwner: state.leaseOwner }),
      });
    }
  } finally {
    hold?.release();
    outcome.durationMs = performance.now() - started;
  }
  if (deps.discover && friendIds && friendIds.length > 0) {
    await discover(deps, state.accountId, friendIds, outcome);
  }
  return outcome;
}

/** The friend ids that can become accounts: valid account ids (see account-id.ts), not the account itself. */
export function discoverableIds(accountId: string, friendIds: readonly string[]): string[] {
  return friendIds.filter((id) => id !== accountId && accountIdProblem(id) === undefined);
}

/**
 * Adds the friends of a committed pull as accounts. After the apply, outside its transaction: a
 * failure here loses no mirrored data, so it is reported on the outcome and the sync stands.
 * Ids Tencent could not hold as accounts are skipped.
 */
async function discover(
  deps: AccountSyncDeps,
  accountId: string,
  friendIds: string[],
  outcome: AccountSyncOutcome,
): Promise<void> {
  const valid = discoverableIds(accountId, friendIds);
  const started = performance.now();
  try {
    outcome.discovery = await discoverAccounts(deps.db, accountId, valid, deps.discover!.maxAccounts);
  } catch (err) {
    outcome.discoveryError = err instanceof Error ? err : new Error(String(err));
  } finally {
    outcome.durationMs += performance.now() - started;
  }
}

/**
 * What an error that outlasted the retries says about calls in general, beyond the account it
 * happened to:
 * - `config`: a setting is wrong (Tencent said which); no retry fixes it;
 * - `broken`: the call thread is stopped or gave up restarting: no call can be made in this process;
 * - `abort`: shutdown;
 * - `lockout`: Tencent still answers 70050 (too many failed UserSig checks) after every retry;
 * - `refused`: a proxy's HTTP 4xx, or the app disabled/expired/IP not allowed in the IM console;
 * - `unreachable`: the path to Tencent failed (HTTP 5xx, a network error, a timeout). Tencent
 *   answers 200 unless the network fails, so this is not about the account either.
 * - undefined: about this account only.
 *
 * The daemon stops claiming for good only on `config` and `broken`; on `lockout`, `refused` and
 * `unreachable` it pauses and probes until calls go through again (see sync/scheduler.ts).
 */
export type CallTrouble = 'config' | 'broken' | 'abort' | 'lockout' | 'refused' | 'unreachable';

/** Classifies an error as {@link CallTrouble}, or undefined when it concerns one account only. */
export function callTrouble(err: unknown): CallTrouble | undefined {
  if (!(err instanceof TimError)) {
    return (err as { name?: string })?.name === 'AbortError' ? 'abort' : undefined;
  }
  if (err.code === 'TIM_ERR_ABORTED') return 'abort';
  // The call thread is stopped or gave up restarting: no call can be made (sync/call-thread.ts).
  if (err.code === 'TIM_ERR_CALL_THREAD' && err.retryClass === 'fatal') return 'broken';
  switch (err.retryClass) {
    case 'fatal-config':
      return 'config';
    case 'usersig-lockout':
      return 'lockout';
    case 'refused':
      return 'refused';
  }
  if (err instanceof TimHttpError || err instanceof TimNetworkError || err instanceof TimTimeoutError) {
    return 'unreachable';
  }
  return undefined;
}

/**
 * Errors that stop a whole pass, and that `syncAccount` rethrows instead of recording on the
 * account: every {@link CallTrouble} but `unreachable`. A network failure that outlasted the
 * retries is recorded on the account (it backs off) and the pass goes on: one blip must not end a
 * pass over a million accounts, and the daemon pauses on it anyway.
 */
export function mustStopPass(err: unknown): boolean {
  const trouble = callTrouble(err);
  return trouble !== undefined && trouble !== 'unreachable';
}

/** `code: message`, for `last_error`. Messages of our errors never carry secrets. */
export function describeError(err: Error): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
}
