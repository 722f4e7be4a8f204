/**
 * `friend-mirror status` and `friend-mirror resync`.
 */
import { type Kysely, sql } from 'kysely';
import { latestErrors, requestResync } from '../db/accounts.js';
import type { AccountStatus, Database } from '../db/schema.js';
import { type CommandContext, EXIT, UsageError } from './context.js';

/** What `status` reports; {@link readStatus} reads it. */
export interface MirrorStatus {
  byStatus: Record<AccountStatus, number>;
  /** Active accounts whose next sync time has passed, and how long the most overdue has waited. */
  due: number;
  oldestDueSeconds: number;
  /** Friend rows in the mirror: the sum of the per-account counts (see {@link readStatus}). */
  friendRows: number;
  resyncRequests: number;
  neverSynced: number;
  leased: number;
  reconcile: { overdue: number; oldestOverdueSeconds: number | null; scheduled: number };
  discovered: number;
  replicas: { replicaId: string; callsPerSecond: number; heartbeatAgeSeconds: number }[];
  recentErrors: { accountId: string; status: AccountStatus; lastError: string; lastAttemptAt: Date | null }[];
}

/**
 * Reads {@link MirrorStatus} without scanning the friends table: every apply stores the account's
 * friend count (`tim.accounts.friend_count`) in the transaction that writes its rows, and removing
 * an account removes its rows with it, so the sum over accounts equals `count(*)` of `tim.friends`
 * at every commit, at the cost of one pass over `tim.accounts`, which the other numbers need anyway.
 * A separate totals row would have to be updated by every apply: one row every concurrent apply
 * waits on.
 */
export async function readStatus(db: Kysely<Database>): Promise<MirrorStatus> {
  // One pass over tim.accounts for every per-account number, grouped by status.
  const groups = await sql<{
    status: AccountStatus;
    n: string;
    friends: string;
    due: string;
    due_age: number | null;
    resync: string;
    never: string;
    leased: string;
    rec_overdue: string;
    rec_age: number | null;
    rec_scheduled: string;
    discovered: string;
  }>`
    SELECT status, count(*) AS n, coalesce(sum(friend_count), 0) AS friends,
           count(*) FILTER (WHERE next_sync_at <= now()) AS due,
           extract(epoch FROM now() - min(next_sync_at) FILTER (
             WHERE next_sync_at <= now() AND next_sync_at > '-infinity'))::float8 AS due_age,
           count(*) FILTER (WHERE priority = 0) AS resync,
           count(*) FILTER (WHERE priority = 1) AS never,
           count(*) FILTER (WHERE lease_expires_at > now()) AS leased,
           count(*) FILTER (WHERE reconcile_due_at <= now()) AS rec_overdue,
           extract(epoch FROM now() - min(reconcile_due_at) FILTER (
             WHERE reconcile_due_at <= now() AND reconcile_due_at > '-infinity'))::float8 AS rec_age,
           count(reconcile_due_at) AS rec_scheduled,
           count(*) FILTER (WHERE source = 'discovered') AS discovered
    FROM tim.accounts GROUP BY status`.execute(db);
  const st: MirrorStatus = {
    byStatus: { pending: 0, ok: 0, missing: 0, failing: 0, disabled: 0 },
    due: 0,
    oldestDueSeconds: 0,
    friendRows: 0,
    resyncRequests: 0,
    neverSynced: 0,
    leased: 0,
    reconcile: { overdue: 0, oldestOverdueSeconds: null, scheduled: 0 },
    discovered: 0,
    replicas: [],
    recentErrors: [],
  };
  for (const g of groups.rows) {
    // Disabled and missing accounts are not synced: they are never due, late or waiting.
    const active = g.status !== 'disabled' && g.status !== 'missing';
    st.byStatus[g.status] = Number(g.n);
    st.friendRows += Number(g.friends);
    st.resyncRequests += Number(g.resync);
    st.leased += Number(g.leased);
    st.reconcile.scheduled += Number(g.rec_scheduled);
    st.discovered += Number(g.discovered);
    if (!active) continue;
    st.due += Number(g.due);
    st.oldestDueSeconds = Math.max(st.oldestDueSeconds, Math.round(Number(g.due_age ?? 0)));
    st.neverSynced += Number(g.never);
    st.reconcile.overdue += Number(g.rec_overdue);
    if (g.rec_age !== null) {
      const age = Math.round(Number(g.rec_age));
      st.reconcile.oldestOverdueSeconds = Math.max(st.reconcile.oldestOverdueSeconds ?? age, age);
    }
  }
  const replicas = await sql<{ replica_id: string; calls_per_second: number; age: number }>`
    SELECT replica_id, calls_per_second, extract(epoch FROM now() - heartbeat_at)::float8 AS age
    FROM tim.live_replicas ORDER BY replica_id`.execute(db);
  st.replicas = replicas.rows.map((r) => ({
    replicaId: r.replica_id,
    callsPerSecond: r.calls_per_second,
    heartbeatAgeSeconds: r.age,
  }));
  const errors = await latestErrors(db, 10).execute();
  st.recentErrors = errors.map((e) => ({
    accountId: e.account_id,
    status: e.status,
    lastError: e.last_error ?? '',
    lastAttemptAt: e.last_attempt_at,
  }));
  return st;
}

/** `status`: counts by state, how far behind the oldest due account is, and recent errors. */
export async function statusCommand(ctx: CommandContext, db: Kysely<Database>): Promise<number> {
  const s = await readStatus(db);
  const total = Object.values(s.byStatus).reduce((a, b) => a + b, 0);
  ctx.out(
    `accounts: ${total} (${Object.entries(s.byStatus)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')})`,
  );
  ctx.out(`due now: ${s.due}; oldest due for ${s.oldestDueSeconds}s`);
  ctx.out(`friend rows: ${s.friendRows}`);
  ctx.out(
    `pending: ${s.resyncRequests} resync request(s), ${s.neverSynced} never synced; syncing now: ${s.leased}`,
  );
  const rec = s.reconcile;
  ctx.out(
    `reconcile backlog: ${rec.overdue} account(s) overdue for a full read` +
      `${rec.oldestOverdueSeconds === null ? '' : ` (oldest by ${rec.oldestOverdueSeconds}s)`}; ${rec.scheduled} scheduled`,
  );
  ctx.out(`discovered accounts: ${s.discovered}`);
  ctx.out(`replicas running: ${s.replicas.length}`);
  for (const r of s.replicas) {
    ctx.out(
      `  ${r.replicaId}: ${r.callsPerSecond} calls/s share, heartbeat ${r.heartbeatAgeSeconds.toFixed(1)}s ago`,
    );
  }
  if (s.recentErrors.length > 0) {
    ctx.out('recent errors:');
    for (const e of s.recentErrors) {
      ctx.out(
        `  ${JSON.stringify(e.accountId)} ${e.status} ${e.lastAttemptAt?.toISOString() ?? ''}: ${e.lastError}`,
      );
    }
  }
  return EXIT.ok;
}

/**
 * `resync [--full] (<id...>|--all)`: see {@link requestResync}.
 */
export async function resyncCommand(
  ctx: CommandContext,
  db: Kysely<Database>,
  opts: { full: boolean; all: boolean; ids: string[] },
): Promise<number> {
  if (opts.all === opts.ids.length > 0) throw new UsageError('resync needs account ids or --all, not both');
  const { marked, unknown } = await requestResync(db, opts.all ? { all: true } : { ids: opts.ids }, opts);
  for (const id of unknown) ctx.out(`account ${JSON.stringify(id)} is not mirrored; skipped`);
  ctx.out(
    `marked ${marked} account(s) for ${opts.full ? 'full ' : ''}resync; running daemons start them now`,
  );
  return unknown.length > 0 ? EXIT.failed : EXIT.ok;
}
