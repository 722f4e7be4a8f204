/**
 * Discovery (`SYNC_DISCOVER`): friends of mirrored accounts become mirrored accounts themselves, so
 * a seed list grows into the whole friend graph, up to a cap on the table's size.
 */
import { type Kysely, sql } from 'kysely';
import type { Database } from './schema.js';

/** What one {@link discoverAccounts} call did. */
export interface DiscoveryResult {
  /** Ids not yet in `tim.accounts` when the statement ran. */
  candidates: number;
  /** Ids inserted as `discovered` accounts. */
  added: number;
  /** Candidates left out because `tim.accounts` reached `maxAccounts`. */
  capped: number;
}

/**
 * Adds `friendIds` that are not yet accounts as new accounts (`source = 'discovered'`,
 * `discovered_from = fromAccount`, never synced, so they are claimed next) while the table holds
 * fewer than `maxAccounts` rows. The caller passes only valid account ids.
 *
 * One statement. Ids that are already accounts, the usual case once the graph is known, are
 * filtered first with primary-key probes and take no lock. Only when there is something new is the
 * `tim.account_totals` row locked and read: that serialises inserts near the cap, so the table
 * stops at exactly `maxAccounts` however many replicas discover at once, without counting millions
 * of rows (the triggers keep that row exact).
 */
export async function discoverAccounts(
  db: Kysely<Database>,
  fromAccount: string,
  friendIds: readonly string[],
  maxAccounts: number,
): Promise<DiscoveryResult> {
  if (friendIds.length === 0) return { candidates: 0, added: 0, capped: 0 };
  const res = await sql<{ candidates: string; room: string | null; added: string }>`
    WITH cand AS MATERIALIZED (
      SELECT DISTINCT t.id FROM unnest(${[...friendIds]}::text[]) AS t(id)
      WHERE NOT EXISTS (SELECT 1 FROM tim.accounts a WHERE a.account_id = t.id)
    ), room AS MATERIALIZED (
      SELECT greatest(0, ${maxAccounts}::bigint - total) AS n FROM tim.account_totals
      WHERE EXISTS (SELECT 1 FROM cand)
      FOR UPDATE
    ), ins AS (
      INSERT INTO tim.accounts (account_id, source, discovered_from)
      SELECT id, 'discovered', ${fromAccount} FROM cand ORDER BY id
      LIMIT coalesce((SELECT n FROM room), 0)
      ON CONFLICT (account_id) DO NOTHING
      RETURNING 1
    )
    SELECT (SELECT count(*) FROM cand) AS candidates, (SELECT n FROM room) AS room,
           (SELECT count(*) FROM ins) AS added`.execute(db);
  const row = res.rows[0];
  const candidates = Number(row?.candidates ?? 0);
  const room = row?.room === null || row?.room === undefined ? 0 : Number(row.room);
  return { candidates, added: Number(row?.added ?? 0), capped: Math.max(0, candidates - room) };
}

/** Rows in `tim.accounts`, from the trigger-kept counter (one row read). */
export async function accountTotal(db: Kysely<Database>): Promise<number> {
  const row = await db.selectFrom('tim.account_totals').select('total').executeTakeFirst();
  return Number(row?.total ?? 0);
}
