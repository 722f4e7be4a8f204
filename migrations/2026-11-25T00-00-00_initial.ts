/**
 * The public tables (design.md, "Tables") and the bookkeeping the sync needs.
 * Frozen in time: imports nothing from src/ and uses Kysely<any>, so later code changes can never
 * change what this migration does.
 */
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`CREATE SCHEMA IF NOT EXISTS tim`.execute(db);

  await sql`
    CREATE TABLE tim.accounts (
      account_id        text PRIMARY KEY,
      standard_sequence bigint,
      custom_sequence   bigint,
      friend_count      integer NOT NULL DEFAULT 0,
      status            text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'ok', 'missing', 'failing', 'disabled')),
      last_synced_at    timestamptz,
      last_error        text,
      -- bookkeeping
      created_at        timestamptz NOT NULL DEFAULT now(),
      last_attempt_at   timestamptz,
      last_changed_at   timestamptz,
      failures          integer NOT NULL DEFAULT 0,
      next_sync_at      timestamptz NOT NULL DEFAULT '-infinity'
    )`.execute(db);
  await sql`COMMENT ON TABLE tim.accounts IS 'Accounts whose friend lists are mirrored, with the sequences of the last committed pull.'`.execute(
    db,
  );
  // The scheduler asks "which accounts are due?" by next_sync_at; keep that an index range scan.
  await sql`CREATE INDEX accounts_due_idx ON tim.accounts (next_sync_at) WHERE status <> 'disabled'`.execute(
    db,
  );

  await sql`
    CREATE TABLE tim.friends (
      account_id    text NOT NULL REFERENCES tim.accounts (account_id) ON DELETE CASCADE,
      friend_id     text NOT NULL,
      remark        text,
      groups        text[],
      add_source    text,
      add_wording   text,
      add_time      timestamptz,
      first_seen_at timestamptz NOT NULL DEFAULT now(),
      updated_at    timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (account_id, friend_id)
    )`.execute(db);
  await sql`COMMENT ON TABLE tim.friends IS 'One row per current friendship, standard fields as columns.'`.execute(
    db,
  );
  // "Who has X as a friend?" and mutual-friendship joins go through friend_id.
  await sql`CREATE INDEX friends_friend_id_idx ON tim.friends (friend_id)`.execute(db);

  await sql`
    CREATE TABLE tim.friend_tags (
      account_id text NOT NULL,
      friend_id  text NOT NULL,
      tag        text NOT NULL,
      value      jsonb NOT NULL,
      category   text NOT NULL CHECK (category IN ('standard', 'custom')),
      updated_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (account_id, friend_id, tag),
      FOREIGN KEY (account_id, friend_id) REFERENCES tim.friends (account_id, friend_id) ON DELETE CASCADE
    )`.execute(db);
  await sql`COMMENT ON TABLE tim.friend_tags IS 'Custom (Tag_SNS_Custom_*) and unknown friend tags; value keeps the JSON type Tencent sent.'`.execute(
    db,
  );
  await sql`COMMENT ON COLUMN tim.friend_tags.category IS 'Which sequence covers the tag: standard (Tag_SNS_IM_* we do not map to a column) or custom.'`.execute(
    db,
  );
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS tim.friend_tags`.execute(db);
  await sql`DROP TABLE IF EXISTS tim.friends`.execute(db);
  await sql`DROP TABLE IF EXISTS tim.accounts`.execute(db);
}
