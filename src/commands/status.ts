/**
 * `friend-mirror status` and `friend-mirror resync`.
 */
import { type Kysely, sql } from 'kysely';
import { countByStatus, unknownAccountIds } from '../db/accounts.js';
import type { Database } from '../db/schema.js';
import { type CommandContext, EXIT, UsageError } from './context.js';

/** Postgres channel a running daemon may LISTEN on to start resyncs at once. */
export const RESYNC_CHANNEL = 'tim_friend_mirror_resync';

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
 * `resync [--full] (<id...>|--all)`: makes accounts due now. `--full` also forgets their stored
 * sequences, so the next pull reads everything and replaces what the mirror holds.
 */
export async function resyncCommand(
  ctx: CommandContext,
  db: Kysely<Database>,
  opts: { full: boolean; all: boolean; ids: string[] },
): Promise<number> {
  if (opts.all === opts.ids.length > 0) throw new UsageError('resync needs account ids or --all, not both');
  const unknown = opts.all ? [] : await unknownAccountIds(db, opts.ids);
  for (const id of unknown) ctx.out(`account ${JSON.stringify(id)} is not mirrored; skipped`);
  const res = await db
    .updateTable('tim.accounts')
    .set({
      next_sync_at: sql`'-infinity'`,
      // Asking for a missing account by hand means "look again", so it rejoins the active ones.
      status: sql`CASE WHEN status = 'missing' THEN 'pending' ELSE status END`,
      ...(opts.full ? { standard_sequence: null, custom_sequence: null } : {}),
    })
    .$if(!opts.all, (q) => q.where('account_id', '=', sql<string>`ANY(${opts.ids}::text[])`))
    .where('status', '<>', 'disabled')
    .executeTakeFirst();
  await sql`SELECT pg_notify(${RESYNC_CHANNEL}, '')`.execute(db);
  ctx.out(`marked ${Number(res.numUpdatedRows)} account(s) for ${opts.full ? 'full ' : ''}resync`);
  return unknown.length > 0 ? EXIT.failed : EXIT.ok;
}
