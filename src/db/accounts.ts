/**
 * The `tim.accounts` table: which accounts are mirrored, their sequences and sync state.
 */
import { type Kysely, type RawBuilder, sql } from 'kysely';
import type { AccountStatus, Database } from './schema.js';

/** What a sync needs to know about one account. */
export interface AccountSyncState {
  accountId: string;
  /** Sequences of the last committed pull; null until the first one (or after `resync --full`). */
  standardSequence: number | null;
  customSequence: number | null;
  status: AccountStatus;
  /** No sync of the account has succeeded yet (`last_synced_at` is null). */
  neverSynced?: boolean;
  /** Friends as of the last committed sync (`friend_count`); absent when it never synced. */
  friendCount?: number;
  /**
   * The claim found the account due for reconciliation: pull with no sequences (every page, as
   * `resync --full` does) on top of the stored ones, so the apply repairs whatever they missed.
   */
  reconcile?: boolean;
  /** The replica whose claim returned this state; absent when the account was read without a claim. */
  leaseOwner?: string;
}

/** Rows per INSERT when adding many accounts: keeps one statement's parameters and memory bounded. */
export const ACCOUNT_BATCH_SIZE = 5_000;

/**
 * Adds accounts; ids already present are left as they are.
 * @returns how many were new
 */
export async function addAccounts(db: Kysely<Database>, ids: readonly string[]): Promise<number> {
  let added = 0;
  for (let i = 0; i < ids.length; i += ACCOUNT_BATCH_SIZE) {
    const batch = ids.slice(i, i + ACCOUNT_BATCH_SIZE);
    // One array parameter per batch instead of one per row: stays far below pg's 65535-parameter cap.
    const res = await sql`
      INSERT INTO tim.accounts (account_id)
      SELECT DISTINCT id FROM unnest(${batch}::text[]) AS t(id)
      ON CONFLICT (account_id) DO NOTHING`.execute(db);
    added += Number(res.numAffectedRows ?? 0);
  }
  return added;
}

/**
 * Stops mirroring accounts: deletes them with their friends and tags.
 * @returns how many existed
 */
export async function removeAccounts(db: Kysely<Database>, ids: readonly string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const res = await db
    .deleteFrom('tim.accounts')
    .where('account_id', 'in', [...ids])
    .executeTakeFirst();
  return Number(res.numDeletedRows);
}

/** One row of `accounts list`. */
export interface AccountListRow {
  account_id: string;
  status: AccountStatus;
  friend_count: number;
  last_synced_at: Date | null;
}

/**
 * Lists accounts in id order, a page at a time (keyset paging), so millions never sit in memory.
 */
export async function* listAccounts(
  db: Kysely<Database>,
  pageSize = ACCOUNT_BATCH_SIZE,
): AsyncGenerator<AccountListRow[]> {
  let after: string | undefined;
  for (;;) {
    let q = db
      .selectFrom('tim.accounts')
      .select(['account_id', 'status', 'friend_count', 'last_synced_at'])
      .orderBy('account_id')
      .limit(pageSize);
    if (after !== undefined) q = q.where('account_id', '>', after);
    const rows = await q.execute();
    if (rows.length === 0) return;
    yield rows;
    after = rows[rows.length - 1]!.account_id;
  }
}

/** Which accounts a one-shot pass covers. */
export type AccountSelection =
  | { kind: 'due'; now?: Date }
  | { kind: 'all' }
  | { kind: 'ids'; ids: readonly string[] };

/**
 * Loads the sync state of the selected accounts, `missing` ones last (as the daemon claims them).
 * - `due`: accounts whose `next_sync_at` has come (never-synced ones always are), `missing` ones
 *   included once their re-check time (`SYNC_MISSING_RECHECK`) has come;
 * - `all`: every account that is not disabled, `missing` ones only once their re-check is due;
 * - `ids`: exactly those, whatever their state (an explicit request overrides `missing`).
 */
export async function selectAccounts(
  db: Kysely<Database>,
  sel: AccountSelection,
): Promise<AccountSyncState[]> {
  let q = db
    .selectFrom('tim.accounts')
    .select([
      'account_id',
      'standard_sequence',
      'custom_sequence',
      'status',
      'last_synced_at',
      'friend_count',
    ])
    .orderBy(sql`status = 'missing'`)
    .orderBy('account_id');
  if (sel.kind === 'ids') {
    if (sel.ids.length === 0) return [];
    q = q.where('account_id', '=', sql<string>`ANY(${[...sel.ids]}::text[])`);
  } else {
    // The database's clock by default: it set next_sync_at (now() at release or claim), and this
    // process's clock, truncated to milliseconds, can read an account released a moment ago as not due.
    const now = (sel.kind === 'due' ? sel.now : undefined) ?? sql<Date>`now()`;
    q = q.where('status', '<>', 'disabled');
    q =
      sel.kind === 'due'
        ? q.where('next_sync_at', '<=', now)
        : q.where((eb) => eb.or([eb('status', '<>', 'missing'), eb('next_sync_at', '<=', now)]));
  }
  const rows = await q.execute();
  return rows.map((r) => ({
    accountId: r.account_id,
    standardSequence: r.standard_sequence,
    customSequence: r.custom_sequence,
    status: r.status,
    neverSynced: r.last_synced_at === null,
    ...(r.last_synced_at === null ? {} : { friendCount: r.friend_count }),
  }));
}

/** Ids among `ids` that are not in `tim.accounts`. */
export async function unknownAccountIds(db: Kysely<Database>, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const res = await sql<{ id: string }>`
    SELECT id FROM unnest(${[...ids]}::text[]) AS t(id)
    WHERE NOT EXISTS (SELECT 1 FROM tim.accounts a WHERE a.account_id = t.id)`.execute(db);
  return res.rows.map((r) => r.id);
}

/**
 * The bookkeeping every finished attempt writes (success or failure): the lease is released, and
 * the account is due at `nextSyncAt` with regular priority, unless a resync was requested while
 * it was being synced, in which case it is due again at once.
 *
 * Reconciliation (see `claimDueAccounts`): a successful attempt makes the reconcile time its claim
 * proposed the account's `reconcile_due_at`, and brings `next_sync_at` forward to it when it comes
 * first, so the account is claimed for its reconcile on time through the usual `next_sync_at`
 * index. A failed attempt drops the proposal: the reconcile stays due, and the backoff decides
 * when it is tried again (pulling a failing account in to a past reconcile time would spin it).
 */
export function afterSync(
  nextSyncAt: RawBuilder<Date>,
  attempt: 'succeeded' | 'failed' = 'succeeded',
  leaseOwner?: string,
) {
  const reconcileAt = sql<Date>`coalesce(reconcile_next_at, reconcile_due_at)`;
  const next =
    attempt === 'failed'
      ? nextSyncAt
      : sql<Date>`LEAST(${nextSyncAt}, CASE WHEN ${reconcileAt} IS NOT NULL THEN GREATEST(${reconcileAt}, now()) END)`;
  return {
    next_sync_at: whileLeaseHeld(
      leaseOwner,
      'next_sync_at',
      sql<Date>`CASE WHEN resync_requested_at > leased_at THEN '-infinity'::timestamptz ELSE ${next} END`,
    ),
    priority: whileLeaseHeld(
      leaseOwner,
      'priority',
      sql<number>`CASE WHEN resync_requested_at > leased_at THEN 0 ELSE 2 END`,
    ),
    lease_owner: whileLeaseHeld(leaseOwner, 'lease_owner', sql<string | null>`NULL`),
    leased_at: whileLeaseHeld(leaseOwner, 'leased_at', sql<Date | null>`NULL`),
    lease_expires_at: whileLeaseHeld(leaseOwner, 'lease_expires_at', sql<Date | null>`NULL`),
    ...(attempt === 'failed'
      ? {}
      : { reconcile_due_at: whileLeaseHeld(leaseOwner, 'reconcile_due_at', reconcileAt) }),
    reconcile_next_at: whileLeaseHeld(leaseOwner, 'reconcile_next_at', sql<Date | null>`NULL`),
  };
}

/**
 * `value` when the attempt's lease is still `leaseOwner`'s (or no one's), else the column as it
 * is: those columns belong to whoever holds the lease now (see `NextSync.leaseOwner`).
 */
function whileLeaseHeld<T>(
  leaseOwner: string | undefined,
  column: string,
  value: RawBuilder<T>,
): RawBuilder<T> {
  if (leaseOwner === undefined) return value;
  return sql<T>`CASE WHEN lease_owner IS NULL OR lease_owner = ${leaseOwner} THEN ${value} ELSE ${sql.ref(column)} END`;
}

/** When to look at a failed account again. */
export type RetryAfter =
  /**
   * A fixed delay, e.g. for a missing account; with `jitter`, up to that share earlier, so ids
   * found missing together (discovery) are not all re-checked in the same minute.
   */
  | { fixedMs: number; jitter?: number }
  /** base × 2^(failures so far), capped, with jitter: one bad account never crowds out the rest. */
  | { baseMs: number; capMs: number };

/**
 * Records a failed attempt. The data and sequences are untouched, so the next pull starts from the
 * last committed state.
 *
 * A `missing` account goes to priority 3, behind every real account (see `claimDueAccounts`). It
 * stays `missing` when its re-check fails for another reason (a timeout, say): only an answer from
 * Tencent with its friends makes it an account again.
 */
export async function recordFailure(
  db: Kysely<Database>,
  accountId: string,
  opts: {
    status: 'failing' | 'missing';
    error: string;
    retryAfter: RetryAfter;
    /** The replica whose claim started the attempt; see `NextSync.leaseOwner`. */
    leaseOwner?: string;
  },
): Promise<void> {
  const delayMs =
    'fixedMs' in opts.retryAfter
      ? sql<number>`${opts.retryAfter.fixedMs}::float8 * (1 - ${opts.retryAfter.jitter ?? 0}::float8 * random())`
      : // Jitter in [0.5, 1.0) of the capped exponential keeps retries of many accounts from lining up.
        sql<number>`least(${opts.retryAfter.capMs}::float8, ${opts.retryAfter.baseMs}::float8 * power(2, least(failures, 30)))
                    * (0.5 + random() / 2)`;
  await db
    .updateTable('tim.accounts')
    .set((eb) => {
      const missing = sql<boolean>`(${opts.status}::text = 'missing' OR status = 'missing')`;
      const after = afterSync(
        sql<Date>`now() + ${delayMs} * interval '1 millisecond'`,
        'failed',
        opts.leaseOwner,
      );
      return {
        status: sql<AccountStatus>`CASE WHEN ${missing} THEN 'missing' ELSE 'failing' END`,
        last_error: opts.error.slice(0, 1000),
        last_attempt_at: sql`now()`,
        failures: eb('failures', '+', 1),
        ...after,
        priority: whileLeaseHeld(
          opts.leaseOwner,
          'priority',
          sql<number>`CASE WHEN resync_requested_at > leased_at THEN 0 WHEN ${missing} THEN 3 ELSE 2 END`,
        ),
      };
    })
    .where('account_id', '=', accountId)
    .execute();
}

/**
 * The accounts whose last attempt failed, newest first, as `status` and the status page list them:
 * a query to `.execute()`.
 */
export function latestErrors(db: Kysely<Database>, limit: number) {
  // Served by accounts_recent_errors_idx, which holds only accounts with an error: the query and the
  // index must keep the same WHERE and ORDER BY (test/schema.test.ts checks the plan).
  return db
    .selectFrom('tim.accounts')
    .select(['account_id', 'status', 'last_error', 'last_attempt_at'])
    .where('last_error', 'is not', null)
    .orderBy('last_attempt_at', 'desc')
    .limit(limit);
}

/** Account counts by status, for `status` and the demo. */
export async function countByStatus(db: Kysely<Database>): Promise<Record<AccountStatus, number>> {
  const rows = await db
    .selectFrom('tim.accounts')
    .select(['status', (eb) => eb.fn.countAll<string>().as('n')])
    .groupBy('status')
    .execute();
  const out: Record<AccountStatus, number> = { pending: 0, ok: 0, missing: 0, failing: 0, disabled: 0 };
  for (const r of rows) out[r.status] = Number(r.n);
  return out;
}

/** Postgres channel running daemons LISTEN on, so resync requests start within a moment. */
export const RESYNC_CHANNEL = 'tim_friend_mirror_resync';

/**
 * Marks accounts for a resync: highest priority and due now, and a `missing` account rejoins the
 * active ones. An account being synced right now is left to finish, then synced again at once
 * (its lease is respected, so two replicas never sync it together). `full` also forgets the stored
 * sequences, so the next pull reads and replaces everything. Running daemons are notified.
 *
 * @param opts.reportUnknown look up which requested ids are not mirrored (default true); the
 *   webhook's marks skip it, since nobody reads the answer and it would cost a query per flush
 * @returns how many accounts were marked, and the requested ids that are not mirrored
 */
export async function requestResync(
  db: Kysely<Database>,
  req: { ids: readonly string[] } | { all: true },
  opts: { full: boolean; reportUnknown?: boolean },
): Promise<{ marked: number; unknown: string[] }> {
  const unknown = 'ids' in req && opts.reportUnknown !== false ? await unknownAccountIds(db, req.ids) : [];
  const res = await db
    .updateTable('tim.accounts')
    .set({
      priority: 0,
      resync_requested_at: sql`now()`,
      next_sync_at: sql`CASE WHEN lease_expires_at > now() THEN next_sync_at ELSE '-infinity'::timestamptz END`,
      status: sql`CASE WHEN status = 'missing' THEN 'pending' ELSE status END`,
      ...(opts.full ? { standard_sequence: null, custom_sequence: null } : {}),
      // A full read is a reconcile. After one of everyone, the next reconciles are spread over the
      // interval again (NULL: the next claim picks a random time), instead of all coming due together.
      ...(opts.full && 'all' in req ? { reconcile_due_at: null } : {}),
    })
    .$if('ids' in req, (q) =>
      q.where('account_id', '=', sql<string>`ANY(${'ids' in req ? [...req.ids] : []}::text[])`),
    )
    .where('status', '<>', 'disabled')
    .executeTakeFirst();
  await sql`SELECT pg_notify(${RESYNC_CHANNEL}, '')`.execute(db);
  return { marked: Number(res.numUpdatedRows), unknown };
}
