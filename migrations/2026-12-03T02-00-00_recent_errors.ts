/**
 * The status page, `status` and `/status.json` list the accounts that failed last, newest first
 * (`last_error IS NOT NULL ORDER BY last_attempt_at DESC LIMIT n`). Without an index that is a scan
 * of every account on each refresh; this partial index holds only the accounts with an error, so it
 * stays small however many accounts are healthy. Frozen in time: imports nothing from src/.
 */
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`CREATE INDEX accounts_recent_errors_idx ON tim.accounts (last_attempt_at DESC)
            WHERE last_error IS NOT NULL`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP INDEX IF EXISTS tim.accounts_recent_errors_idx`.execute(db);
}
