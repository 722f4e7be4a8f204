/**
 * Periodic full reconciliation and friend-graph discovery (issue #6, parts 3 and 4).
 * Frozen in time: imports nothing from src/.
 *
 * - `reconcile_due_at`: when the account is next read in full (every page, no sequences), to catch
 *   changes the sequences missed. NULL until the scheduler first claims the account, which then
 *   picks a uniformly random moment within the first interval, so accounts imported together do
 *   not all come due together. Not indexed: the claim finds reconcile-due accounts through
 *   `next_sync_at` (the sync that schedules a reconcile also pulls `next_sync_at` in to it).
 * - `reconcile_next_at`: the reconcile time a claim proposed; it becomes `reconcile_due_at` only
 *   when that sync succeeds, in the same statement that releases the lease.
 * - `source`, `discovered_from`: whether an operator listed the account or discovery added it as a
 *   friend of another account, and of which.
 * - `tim.account_totals`: the number of rows in `tim.accounts`, kept exact by statement triggers,
 *   so the discovery cap is checked with one row read instead of a count over millions of rows.
 */
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE tim.accounts
    ADD COLUMN reconcile_due_at timestamptz,
    ADD COLUMN reconcile_next_at timestamptz,
    ADD COLUMN source text NOT NULL DEFAULT 'listed' CHECK (source IN ('listed', 'discovered')),
    ADD COLUMN discovered_from text`.execute(db);
  await sql`COMMENT ON COLUMN tim.accounts.reconcile_due_at IS 'next full read (all pages, no sequences) to repair what the sequences missed; NULL until first scheduled'`.execute(
    db,
  );
  await sql`COMMENT ON COLUMN tim.accounts.source IS 'listed: added by an operator; discovered: added as a friend of discovered_from (SYNC_DISCOVER)'`.execute(
    db,
  );

  await sql`
    CREATE TABLE tim.account_totals (
      one   boolean PRIMARY KEY DEFAULT true CHECK (one),
      total bigint NOT NULL
    )`.execute(db);
  await sql`COMMENT ON TABLE tim.account_totals IS 'Rows in tim.accounts, kept exact by triggers; the discovery cap reads it'`.execute(
    db,
  );
  await sql`
    CREATE FUNCTION tim.account_totals_add() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE n bigint;
    BEGIN
      IF TG_OP = 'INSERT' THEN
        SELECT count(*) INTO n FROM new_rows;
      ELSE
        SELECT -count(*) INTO n FROM old_rows;
      END IF;
      -- A statement that added or removed nothing (e.g. ON CONFLICT DO NOTHING on known ids) does
      -- not touch, and so does not lock, the counter row.
      IF n <> 0 THEN
        UPDATE tim.account_totals SET total = total + n;
      END IF;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE FUNCTION tim.account_totals_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      UPDATE tim.account_totals SET total = 0;
      RETURN NULL;
    END $$`.execute(db);
  // The count and the triggers start together: no insert can slip between them.
  await sql`LOCK TABLE tim.accounts IN SHARE ROW EXCLUSIVE MODE`.execute(db);
  await sql`INSERT INTO tim.account_totals (total) SELECT count(*) FROM tim.accounts`.execute(db);
  await sql`CREATE TRIGGER account_totals_insert AFTER INSERT ON tim.accounts
            REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tim.account_totals_add()`.execute(
    db,
  );
  await sql`CREATE TRIGGER account_totals_delete AFTER DELETE ON tim.accounts
            REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION tim.account_totals_add()`.execute(
    db,
  );
  await sql`CREATE TRIGGER account_totals_truncate AFTER TRUNCATE ON tim.accounts
            FOR EACH STATEMENT EXECUTE FUNCTION tim.account_totals_truncate()`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TRIGGER IF EXISTS account_totals_insert ON tim.accounts`.execute(db);
  await sql`DROP TRIGGER IF EXISTS account_totals_delete ON tim.accounts`.execute(db);
  await sql`DROP TRIGGER IF EXISTS account_totals_truncate ON tim.accounts`.execute(db);
  await sql`DROP FUNCTION IF EXISTS tim.account_totals_add()`.execute(db);
  await sql`DROP FUNCTION IF EXISTS tim.account_totals_truncate()`.execute(db);
  await sql`DROP TABLE IF EXISTS tim.account_totals`.execute(db);
  await sql`ALTER TABLE tim.accounts DROP COLUMN reconcile_due_at, DROP COLUMN reconcile_next_at,
            DROP COLUMN source, DROP COLUMN discovered_from`.execute(db);
}
