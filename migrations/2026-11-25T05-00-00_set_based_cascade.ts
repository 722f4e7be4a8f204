/**
 * Foreign keys out, set-based cascades in.
 *
 * The foreign keys friends → accounts and friend_tags → friends checked every inserted row on its
 * own: one index probe and one row lock per row, through a trigger per row. On a first sync, which
 * inserts every row of an account, those checks took more Postgres CPU than the inserts themselves
 * (225,000 tag rows: 1.51 s with the key, 0.55 s without; PostgreSQL 15), and the full sweep is
 * CPU-bound on a 2-core machine (BENCHMARKS.md). The only writer of these rows is the apply, which
 * writes an account's friends and tags in one transaction under the account's row lock, so the
 * checks never found anything.
 *
 * What the keys also did, deleting a friend's tags with the friend and an account's rows with the
 * account (also when someone deletes accounts by hand in SQL), is kept by statement-level triggers:
 * one set-based DELETE per statement, over the rows that statement deleted.
 *
 * Frozen in time: imports nothing from src/.
 */
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE tim.friend_tags DROP CONSTRAINT IF EXISTS friend_tags_account_id_friend_id_fkey`.execute(
    db,
  );
  await sql`ALTER TABLE tim.friends DROP CONSTRAINT IF EXISTS friends_account_id_fkey`.execute(db);

  await sql`
    CREATE FUNCTION tim.delete_rows_of_deleted_accounts() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      DELETE FROM tim.friends f USING gone g WHERE f.account_id = g.account_id;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE TRIGGER accounts_delete_cascade AFTER DELETE ON tim.accounts
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION tim.delete_rows_of_deleted_accounts()`.execute(db);

  // Tags of removed friends go with them, whichever statement removed the friends (the apply, the
  // account cascade above, or someone's hand-written DELETE).
  await sql`
    CREATE FUNCTION tim.delete_tags_of_deleted_friends() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      DELETE FROM tim.friend_tags t USING gone g
      WHERE t.account_id = g.account_id AND t.friend_id = g.friend_id;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE TRIGGER friends_delete_cascade AFTER DELETE ON tim.friends
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION tim.delete_tags_of_deleted_friends()`.execute(db);

  // TRUNCATE fires no DELETE triggers; with the keys it refused to run without CASCADE. Now it
  // takes the dependent tables along.
  await sql`
    CREATE FUNCTION tim.truncate_rows_of_truncated_accounts() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      TRUNCATE tim.friends; -- whose own trigger below empties friend_tags
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE TRIGGER accounts_truncate_cascade AFTER TRUNCATE ON tim.accounts
    FOR EACH STATEMENT EXECUTE FUNCTION tim.truncate_rows_of_truncated_accounts()`.execute(db);
  await sql`
    CREATE FUNCTION tim.truncate_tags_of_truncated_friends() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      TRUNCATE tim.friend_tags;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE TRIGGER friends_truncate_cascade AFTER TRUNCATE ON tim.friends
    FOR EACH STATEMENT EXECUTE FUNCTION tim.truncate_tags_of_truncated_friends()`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TRIGGER IF EXISTS friends_truncate_cascade ON tim.friends`.execute(db);
  await sql`DROP TRIGGER IF EXISTS accounts_truncate_cascade ON tim.accounts`.execute(db);
  await sql`DROP TRIGGER IF EXISTS friends_delete_cascade ON tim.friends`.execute(db);
  await sql`DROP TRIGGER IF EXISTS accounts_delete_cascade ON tim.accounts`.execute(db);
  await sql`DROP FUNCTION IF EXISTS tim.truncate_tags_of_truncated_friends()`.execute(db);
  await sql`DROP FUNCTION IF EXISTS tim.truncate_rows_of_truncated_accounts()`.execute(db);
  await sql`DROP FUNCTION IF EXISTS tim.delete_tags_of_deleted_friends()`.execute(db);
  await sql`DROP FUNCTION IF EXISTS tim.delete_rows_of_deleted_accounts()`.execute(db);
  // Rows that would violate the keys (none, if only the mirror wrote) must go before they return.
  await sql`DELETE FROM tim.friends f WHERE NOT EXISTS (SELECT 1 FROM tim.accounts a WHERE a.account_id = f.account_id)`.execute(
    db,
  );
  await sql`
    DELETE FROM tim.friend_tags t
    WHERE NOT EXISTS (SELECT 1 FROM tim.friends f WHERE f.account_id = t.account_id AND f.friend_id = t.friend_id)`.execute(
    db,
  );
  await sql`ALTER TABLE tim.friends ADD FOREIGN KEY (account_id) REFERENCES tim.accounts (account_id) ON DELETE CASCADE`.execute(
    db,
  );
  await sql`
    ALTER TABLE tim.friend_tags ADD FOREIGN KEY (account_id, friend_id)
    REFERENCES tim.friends (account_id, friend_id) ON DELETE CASCADE`.execute(db);
}
