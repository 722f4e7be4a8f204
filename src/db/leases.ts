/**
 * Account leases: how several replicas share the accounts without syncing one twice at once.
 *
 * Claiming sets `lease_owner` and pushes `next_sync_at` to the lease's end, in one statement with
 * `FOR UPDATE SKIP LOCKED`, so two replicas claiming at the same moment get disjoint accounts and
 * neither waits for the other. Finishing an attempt (see `afterSync` in accounts.ts) releases the
 * lease.
 *
 * A lease belongs to a LIVE replica (db/replicas.ts: registry row unexpired and registry session
 * alive). A replica that dies never finishes its attempts; its leases are free as soon as the
 * registry shows it gone ({@link releaseDeadLeases}, and {@link claimAccount} takes them directly),
 * which is milliseconds after a crash and the registry's ttl after a host vanishes. The lease's own
 * end (`SYNC_LEASE`) remains the backstop for a live owner that is stuck.
 */
import { type Kysely, sql } from 'kysely';
import type { AccountSyncState } from './accounts.js';
import type { Database } from './schema.js';

/** Options of {@link claimDueAccounts}. */
export interface ClaimOptions {
  /** Who claims (the replica id). */
  owner: string;
  /** How many accounts at most. */
  limit: number;
  /** How long the claim holds if the owner never finishes. Must exceed the longest sync. */
  leaseMs: number;
  /** Periodic full reads (`SYNC_RECONCILE_INTERVAL`); absent or 0 ms: off. */
  reconcile?: ReconcileSchedule;
}

/** How often every account is read in full, whatever its sequences say. */
export interface ReconcileSchedule {
  /** At most this long between two full reads of an account; 0 turns reconciliation off. */
  intervalMs: number;
  /** The next full read comes after interval × (1 − up to this fraction). Default 0.1. */
  jitter?: number;
}

type Row = {
  account_id: string;
  standard_sequence: number | null;
  custom_sequence: number | null;
  status: string;
  never_synced: boolean;
  friend_count: number;
  reconcile: boolean | null;
};

function toState(r: Row, leaseOwner: string): AccountSyncState {
  return {
    accountId: r.account_id,
    standardSequence: r.standard_sequence,
    customSequence: r.custom_sequence,
    status: r.status as AccountSyncState['status'],
    neverSynced: r.never_synced,
    ...(r.never_synced ? {} : { friendCount: r.friend_count }),
    ...(r.reconcile === true ? { reconcile: true } : {}),
    leaseOwner,
  };
}

/**
 * The earliest a first reconcile comes, as a share of the interval. Most first syncs are full reads
 * already, so reading an account in full again minutes later would be a wasted call; from a tenth
 * of the interval on, the first reconciles are still spread evenly (each tenth holds 1/9 of them).
 */
const FIRST_RECONCILE_FLOOR = 0.1;

/**
 * What a claim sets for reconciliation, and (in RETURNING) whether this sync is one.
 *
 * A reconcile is due when `reconcile_due_at` has passed. The claim proposes the next one in
 * `reconcile_next_at`; `afterSync` makes it current only if the sync succeeds:
 * - never scheduled (a new or imported account, or the feature just turned on), or scheduled
 *   further out than one interval (the interval was shortened): a uniformly random moment between
 *   a tenth of the interval and the whole interval from now, so a million accounts imported at once
 *   reconcile evenly over the interval;
 * - after a full read of a scheduled account (a due reconcile, `resync --full`): interval × (1 − jitter·U),
 *   never later than one interval after this read;
 * - otherwise nothing: an incremental sync leaves the reconcile clock alone.
 * Off: the columns are cleared, so no stale time pulls `next_sync_at` in.
 */
function reconcileSet(r: ReconcileSchedule | undefined) {
  if (!r || r.intervalMs <= 0) {
    return { set: sql`reconcile_due_at = NULL, reconcile_next_at = NULL`, flag: sql`false` };
  }
  const interval = sql`(${r.intervalMs}::float8 * interval '1 millisecond')`;
  const jitter = r.jitter ?? 0.1;
  return {
    set: sql`
      reconcile_due_at = CASE WHEN a.reconcile_due_at > now() + ${interval} THEN NULL ELSE a.reconcile_due_at END,
      reconcile_next_at = CASE
        WHEN a.reconcile_due_at IS NULL OR a.reconcile_due_at > now() + ${interval}
          THEN now() + (${FIRST_RECONCILE_FLOOR}::float8 + (1 - ${FIRST_RECONCILE_FLOOR}::float8) * random()) * ${interval}
        WHEN a.reconcile_due_at <= now() OR a.standard_sequence IS NULL OR a.custom_sequence IS NULL
          THEN now() + (1 - ${jitter}::float8 * random()) * ${interval}
        END`,
    flag: sql`a.reconcile_due_at <= now()`,
  };
}

/**
 * Claims up to `limit` due accounts: resync requests first, then never-synced accounts, then the
 * most overdue, and last `missing` accounts whose re-check time has come (priority 3), so ids that
 * are not accounts only use what the real accounts leave over.
 *
 * One ordered scan over (priority, next_sync_at) would, when fewer than `limit` accounts are due,
 * walk every not-yet-due entry of the last priority. The LATERAL per priority keeps each scan a
 * bounded index range, so a claim costs milliseconds with millions of accounts (see BENCHMARKS.md).
 */
export async function claimDueAccounts(
  db: Kysely<Database>,
  opts: ClaimOptions,
): Promise<AccountSyncState[]> {
  if (opts.limit <= 0) return [];
  const reconcile = reconcileSet(opts.reconcile);
  const res = await sql<Row>`
    WITH due AS (
      SELECT c.account_id
      FROM unnest(ARRAY[0, 1, 2, 3]::smallint[]) AS p(priority),
      LATERAL (
        SELECT a.account_id FROM tim.accounts a
        WHERE a.priority = p.priority AND a.next_sync_at <= now() AND a.status <> 'disabled'
        ORDER BY a.next_sync_at
        LIMIT ${opts.limit}
        FOR UPDATE SKIP LOCKED
      ) c
      LIMIT ${opts.limit}
    )
    UPDATE tim.accounts a
    SET lease_owner = ${opts.owner}, leased_at = now(),
        lease_expires_at = now() + ${opts.leaseMs}::float8 * interval '1 millisecond',
        next_sync_at = now() + ${opts.leaseMs}::float8 * interval '1 millisecond',
        ${reconcile.set}
    FROM due WHERE a.account_id = due.account_id
    RETURNING a.account_id, a.standard_sequence, a.custom_sequence, a.status,
              a.last_synced_at IS NULL AS never_synced, a.friend_count, ${reconcile.flag} AS reconcile`.execute(
    db,
  );
  return res.rows.map((r) => toState(r, opts.owner));
}

/**
 * Claims one account for a one-shot pass, just before syncing it, so a pass over a million accounts
 * never holds leases it will not get to for hours.
 *
 * @returns its fresh state; `busy` when a live replica holds an unexpired lease; `gone` when removed
 */
export async function claimAccount(
  db: Kysely<Database>,
  accountId: string,
  opts: Omit<ClaimOptions, 'limit'>,
): Promise<AccountSyncState | 'busy' | 'gone'> {
  const reconcile = reconcileSet(opts.reconcile);
  const res = await sql<Row>`
    UPDATE tim.accounts a
    SET lease_owner = ${opts.owner}, leased_at = now(),
        lease_expires_at = now() + ${opts.leaseMs}::float8 * interval '1 millisecond',
        ${reconcile.set}
    WHERE a.account_id = ${accountId}
      AND (a.lease_expires_at IS NULL OR a.lease_expires_at <= now()
           OR NOT EXISTS (SELECT 1 FROM tim.live_replicas l WHERE l.replica_id = a.lease_owner))
    RETURNING a.account_id, a.standard_sequence, a.custom_sequence, a.status,
              a.last_synced_at IS NULL AS never_synced, a.friend_count, ${reconcile.flag} AS reconcile`.execute(
    db,
  );
  const row = res.rows[0];
  if (row) return toState(row, opts.owner);
  const exists = await db
    .selectFrom('tim.accounts')
    .select('account_id')
    .where('account_id', '=', accountId)
    .executeTakeFirst();
  return exists ? 'busy' : 'gone';
}

/**
 * Gives back leases `owner` still holds: all of them (graceful shutdown), or just `accountIds`
 * (attempts that ended without reaching the database, e.g. during an outage). Those accounts are
 * due again at once, so nobody waits for the leases to run out.
 */
export async function releaseLeases(
  db: Kysely<Database>,
  owner: string,
  accountIds?: readonly string[],
): Promise<number> {
  const res = await db
    .updateTable('tim.accounts')
    .set({
      lease_owner: null,
      leased_at: null,
      lease_expires_at: null,
      next_sync_at: sql`now()`,
      reconcile_next_at: null,
    })
    .where('lease_owner', '=', owner)
    .$if(accountIds !== undefined, (q) =>
      q.where('account_id', '=', sql<string>`ANY(${[...(accountIds ?? [])]}::text[])`),
    )
    .executeTakeFirst();
  return Number(res.numUpdatedRows);
}

/**
 * Frees the leases of replicas that are gone (see db/replicas.ts): those accounts are due at once
 * and first in their priority (they were at the head of the queue when claimed), so any replica
 * claims them now instead of when the leases would run out. Only leased rows are
 * read (a partial index holds just those). A replica registers before its first claim, so its own
 * fresh leases are never taken for a dead one's.
 *
 * @returns how many leases were freed
 */
export async function releaseDeadLeases(db: Kysely<Database>): Promise<number> {
  const res = await sql`
    UPDATE tim.accounts a
    SET lease_owner = NULL, leased_at = NULL, lease_expires_at = NULL, next_sync_at = '-infinity',
        reconcile_next_at = NULL
    WHERE a.lease_owner IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM tim.live_replicas l WHERE l.replica_id = a.lease_owner)`.execute(db);
  return Number(res.numAffectedRows ?? 0);
}
