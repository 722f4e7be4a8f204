/**
 * Change history: `tim.friend_events`, one append-only row per friend added, removed or changed,
 * written in the same transaction as the change (issue #6). Frozen in time: imports nothing from
 * src/.
 */
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  // No foreign key to tim.accounts: the history outlives the account. Removing an account deletes
  // its friends but keeps its events; mirroring it again starts a new baseline.
  await sql`
    CREATE TABLE tim.friend_events (
      id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      account_id        text NOT NULL,
      friend_id         text,
      kind              text NOT NULL CHECK (kind IN ('baseline', 'added', 'removed', 'changed')),
      changed           jsonb,
      observed_at       timestamptz NOT NULL DEFAULT now(),
      standard_sequence bigint,
      custom_sequence   bigint,
      CHECK ((kind = 'baseline') = (friend_id IS NULL))
    )`.execute(db);
  await sql`COMMENT ON TABLE tim.friend_events IS 'Append-only history: one row per friend added, removed or changed per committed pull, and one baseline row per account''s first sync.'`.execute(
    db,
  );
  await sql`COMMENT ON COLUMN tim.friend_events.changed IS 'added/changed: {field: {"old": v, "new": v}}, a key left out where the field was absent; fields are remark, groups, add_source, add_wording, add_time (Unix seconds) and tag names. removed: null. baseline: {"friend_count": n}.'`.execute(
    db,
  );
  await sql`COMMENT ON COLUMN tim.friend_events.observed_at IS 'start of the transaction that applied the pull; every event of one apply has the same value'`.execute(
    db,
  );
  // Daily counts and "what happened lately" scan by time; one account's history by account.
  await sql`CREATE INDEX friend_events_observed_at_idx ON tim.friend_events (observed_at)`.execute(db);
  await sql`CREATE INDEX friend_events_account_idx ON tim.friend_events (account_id, observed_at)`.execute(
    db,
  );

  // Accounts synced before the history existed get their baseline now, so every account's history
  // starts with one.
  await sql`
    INSERT INTO tim.friend_events (account_id, kind, changed, standard_sequence, custom_sequence)
    SELECT account_id, 'baseline', jsonb_build_object('friend_count', friend_count), standard_sequence, custom_sequence
    FROM tim.accounts WHERE last_synced_at IS NOT NULL
    ORDER BY account_id`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS tim.friend_events`.execute(db);
}
