/**
 * Missing accounts are re-checked (issue #17): the claim index takes them in, at a priority of their
 * own. Frozen in time: imports nothing from src/.
 *
 * A `missing` account (Tencent: 30003/70107) keeps `next_sync_at` at its re-check time, so the
 * claim finds it through the same (priority, next_sync_at) range scans as every other account.
 * Priority 3 comes after regular re-checks: a flood of friend ids that are not accounts (discovery)
 * only ever uses call budget the real accounts leave over.
 */
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`DROP INDEX tim.accounts_claim_idx`.execute(db);
  await sql`CREATE INDEX accounts_claim_idx ON tim.accounts (priority, next_sync_at)
            WHERE status <> 'disabled'`.execute(db);
  await sql`UPDATE tim.accounts SET priority = 3 WHERE status = 'missing' AND priority <> 0`.execute(db);
  await sql`COMMENT ON COLUMN tim.accounts.priority IS '0 resync requested, 1 never synced, 2 regular, 3 missing (re-checked at next_sync_at)'`.execute(
    db,
  );
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`UPDATE tim.accounts SET priority = 2 WHERE priority = 3`.execute(db);
  await sql`COMMENT ON COLUMN tim.accounts.priority IS '0 resync requested, 1 never synced, 2 regular'`.execute(
    db,
  );
  await sql`DROP INDEX tim.accounts_claim_idx`.execute(db);
  await sql`CREATE INDEX accounts_claim_idx ON tim.accounts (priority, next_sync_at)
            WHERE status NOT IN ('disabled', 'missing')`.execute(db);
}
