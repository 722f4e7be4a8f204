/**
 * Analytics views over the mirror and its history (issue #6), and the indexes that keep them fast.
 * Frozen in time: imports nothing from src/.
 */
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  // Friends per account, from the count every apply keeps: one row per account, no scan of friends.
  await sql`
    CREATE VIEW tim.friend_counts AS
    SELECT account_id, friend_count, status, last_synced_at, last_changed_at
    FROM tim.accounts`.execute(db);
  await sql`COMMENT ON VIEW tim.friend_counts IS 'Friends per mirrored account (tim.accounts.friend_count, kept by every apply).'`.execute(
    db,
  );

  // Each pair of mirrored accounts that list each other once, the smaller id first (collation "C",
  // byte order, so the pair's order does not depend on the database's locale).
  await sql`
    CREATE VIEW tim.mutual_friendships AS
    SELECT a.account_id AS account_a, a.friend_id AS account_b,
           greatest(a.add_time, b.add_time) AS mutual_since
    FROM tim.friends a
    JOIN tim.friends b ON b.account_id = a.friend_id AND b.friend_id = a.account_id
    WHERE a.account_id COLLATE "C" < a.friend_id COLLATE "C"`.execute(db);
  await sql`COMMENT ON VIEW tim.mutual_friendships IS 'One row per unordered pair of mirrored accounts that are friends in both directions; mutual_since is the later Tag_SNS_IM_AddTime.'`.execute(
    db,
  );
  // The join above walks friends by (friend_id, account_id): with this index both sides are read in
  // the same order and merge. It replaces the (friend_id) index, which is its prefix, so an apply
  // still maintains the same number of indexes per friend row.
  await sql`CREATE INDEX friends_friend_account_idx ON tim.friends (friend_id, account_id)`.execute(db);
  await sql`DROP INDEX tim.friends_friend_id_idx`.execute(db);

  // Tag_SNS_IM_AddSource is a column of tim.friends (add_source), not a tag row.
  await sql`
    CREATE VIEW tim.add_sources AS
    SELECT add_source, count(*) AS friends,
           round(count(*)::numeric / sum(count(*)) OVER (), 4) AS share
    FROM tim.friends
    GROUP BY add_source`.execute(db);
  await sql`COMMENT ON VIEW tim.add_sources IS 'How current friendships were made (Tag_SNS_IM_AddSource): friends per value and their share, 0..1; NULL when Tencent sent none.'`.execute(
    db,
  );

  await sql`
    CREATE VIEW tim.daily_friend_changes AS
    SELECT (observed_at AT TIME ZONE 'UTC')::date AS day,
           count(*) FILTER (WHERE kind = 'added') AS added,
           count(*) FILTER (WHERE kind = 'removed') AS removed,
           count(*) FILTER (WHERE kind = 'changed') AS changed
    FROM tim.friend_events
    WHERE kind <> 'baseline'
    GROUP BY 1`.execute(db);
  await sql`COMMENT ON VIEW tim.daily_friend_changes IS 'Friends added, removed and changed per UTC day, as the mirror observed them (tim.friend_events; baselines left out).'`.execute(
    db,
  );
  // "WHERE day >= ..." on the view becomes a condition on this expression: an index range scan.
  await sql`CREATE INDEX friend_events_day_idx ON tim.friend_events (((observed_at AT TIME ZONE 'UTC')::date))`.execute(
    db,
  );

  await sql`
    CREATE VIEW tim.account_sync_health AS
    SELECT account_id, status, friend_count, last_synced_at,
           now() - last_synced_at AS since_last_sync,
           CASE WHEN status NOT IN ('disabled', 'missing') AND next_sync_at > '-infinity' AND next_sync_at < now()
                THEN now() - next_sync_at ELSE interval '0' END AS overdue,
           next_sync_at, last_attempt_at, failures AS consecutive_failures, last_error,
           lease_owner, lease_expires_at
    FROM tim.accounts`.execute(db);
  await sql`COMMENT ON VIEW tim.account_sync_health IS 'Per account: state, time since the last successful sync, how late it is, consecutive failures and the last error.'`.execute(
    db,
  );
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP VIEW IF EXISTS tim.account_sync_health`.execute(db);
  await sql`DROP INDEX IF EXISTS tim.friend_events_day_idx`.execute(db);
  await sql`DROP VIEW IF EXISTS tim.daily_friend_changes`.execute(db);
  await sql`DROP VIEW IF EXISTS tim.add_sources`.execute(db);
  await sql`CREATE INDEX IF NOT EXISTS friends_friend_id_idx ON tim.friends (friend_id)`.execute(db);
  await sql`DROP INDEX IF EXISTS tim.friends_friend_account_idx`.execute(db);
  await sql`DROP VIEW IF EXISTS tim.mutual_friendships`.execute(db);
  await sql`DROP VIEW IF EXISTS tim.friend_counts`.execute(db);
}
