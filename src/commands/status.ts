/**
 * `friend-mirror status` and `friend-mirror resync`.
 */
import { type Kysely, sql } from 'kysely';
import { countByStatus, requestResync } from '../db/accounts.js';
import type { Database } from '../db/schema.js';
import { type CommandContext, EXIT, UsageError } from './context.js';

/** `status`: counts by state, how far behind the oldest due account is, and recent errors. */
export async function statusCommand(ctx: CommandContext, db: Kysely<Database>): Promise<number> {
  const counts = await countByStatus(db);
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  ctx.out(
    `accounts: ${total} (${Object.entries(counts)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')})`,
  );
  const lag = await sql<{ due: string; lag_seconds: number | null; friends: string }>`
    SELECT (SELECT count(*) FROM tim.accounts WHERE next_sync_at <= now() AND status NOT IN ('disabled', 'missing')) AS due,
           (SELECT extract(epoch FROM now() - min(next_sync_at)) FROM tim.accounts
             WHERE next_sync_at <= now() AND next_sync_at > '-infinity' AND status NOT IN ('disabled', 'missing')) AS lag_seconds,
           (SELECT count(*) FROM tim.friends) AS friends`.execute(db);
  const row = lag.rows[0]!;
  ctx.out(
    `due now: ${row.due}; oldest due for ${row.lag_seconds === null ? 0 : Math.round(Number(row.lag_seconds))}s`,
  );
  ctx.out(`friend rows: ${row.friends}`);
  const pending = await sql<{ resync: string; never: string; leased: string }>`
    SELECT count(*) FILTER (WHERE priority = 0) AS resync,
           count(*) FILTER (WHERE priority = 1 AND status NOT IN ('disabled', 'missing')) AS never,
           count(*) FILTER (WHERE lease_expires_at > now()) AS leased
    FROM tim.accounts`.execute(db);
  const p = pending.rows[0]!;
  ctx.out(`pending: ${p.resync} resync request(s), ${p.never} never synced; syncing now: ${p.leased}`);
  const rec = await sql<{ overdue: string; oldest: number | null; scheduled: string; discovered: string }>`
    SELECT count(*) FILTER (WHERE reconcile_due_at <= now() AND status NOT IN ('disabled', 'missing')) AS overdue,
           extract(epoch FROM now() - min(reconcile_due_at) FILTER (
             WHERE reconcile_due_at <= now() AND reconcile_due_at > '-infinity' AND status NOT IN ('disabled', 'missing')))::float8 AS oldest,
           count(reconcile_due_at) AS scheduled,
           count(*) FILTER (WHERE source = 'discovered') AS discovered
    FROM tim.accounts`.execute(db);
  const r = rec.rows[0]!;
  ctx.out(
    `reconcile backlog: ${r.overdue} account(s) overdue for a full read` +
      `${r.oldest === null ? '' : ` (oldest by ${Math.round(Number(r.oldest))}s)`}; ${r.scheduled} scheduled`,
  );
  ctx.out(`discovered accounts: ${r.discovered}`);
  const replicas = await sql<{ replica_id: string; calls_per_second: number; age: number }>`
    SELECT replica_id, calls_per_second, extract(epoch FROM now() - heartbeat_at)::float8 AS age
    FROM tim.live_replicas ORDER BY replica_id`.execute(db);
  ctx.out(`replicas running: ${replicas.rows.length}`);
  for (const r of replicas.rows) {
    ctx.out(`  ${r.replica_id}: ${r.calls_per_second} calls/s share, heartbeat ${r.age.toFixed(1)}s ago`);
  }
  const errors = await db
    .selectFrom('tim.accounts')
    .select(['account_id', 'status', 'last_error', 'last_attempt_at'])
    .where('last_error', 'is not', null)
    .orderBy('last_attempt_at', 'desc')
    .limit(10)
    .execute();
  if (errors.length > 0) {
    ctx.out('recent errors:');
    for (const e of errors) {
      ctx.out(
        `  ${JSON.stringify(e.account_id)} ${e.status} ${e.last_attempt_at?.toISOString() ?? ''}: ${e.last_error}`,
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
