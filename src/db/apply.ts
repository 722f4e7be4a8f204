/**
 * The general apply: one account's pull written to `tim.friends` and `tim.friend_tags` in one
 * transaction, together with the account's sequences and its history (src/db/history.ts).
 *
 * Every write is set-based: the rows go as one json parameter per table and category (the
 * snapshot's row objects, stringified as they are), expanded server-side by `json_to_recordset`
 * into typed columns, so an account costs a handful of statements whatever its friend count.
 * Upserts skip rows whose values are unchanged (`IS DISTINCT FROM`), so an incremental pass
 * rewrites nothing it need not. A first sync normally goes by COPY instead (src/db/first-sync.ts);
 * it comes here when the account already holds rows. BENCHMARKS.md has the measurements behind
 * these choices.
 */
import { type Kysely, sql, type Transaction } from 'kysely';
import { friendChanges, friendJson, recordBaseline, recordEvents, tagEvents } from './history.js';
import type { Database } from './schema.js';
import {
  type ApplyResult,
  type JsonRows,
  type NextSync,
  SnapshotConflictError,
  type SnapshotHead,
} from './snapshot-types.js';
import { syncedColumns } from './synced.js';

/**
 * Applies a snapshot and stores its sequences in the same transaction, so the stored sequences
 * are never ahead of the data. Ungated: callers go through a FriendWriter (src/db/friend-writer.ts).
 *
 * @throws SnapshotConflictError when the account's stored sequences differ from the snapshot's base
 *   (someone else synced it meanwhile) or custom tags name friends the mirror lacks (drift);
 *   the transaction is rolled back and nothing is written.
 */
export async function applyInTransaction(
  db: Kysely<Database>,
  snap: SnapshotHead,
  rows: JsonRows,
  schedule: NextSync,
): Promise<ApplyResult> {
  return db.transaction().execute(async (trx) => {
    // Lock the account row: concurrent applies of one account serialise here, and the check below
    // refuses a snapshot pulled from sequences that are no longer the stored ones.
    //
    // The same statement asks which tables already hold rows of the account: with none there is
    // nothing to skip, update or delete, so plain INSERTs do (cheaper for Postgres than an upsert,
    // and no anti-joins). Every writer of an account's rows takes this lock and stores new
    // sequences in the same transaction, so rows committed while we waited for the lock (which the
    // EXISTS, reading the statement's snapshot, would miss) always come with moved sequences, and
    // the check below refuses the snapshot before the answer is used.
    const locked = await sql<{
      standard_sequence: number | null;
      custom_sequence: number | null;
      friend_count: number;
      has_friends: boolean;
      has_tags: boolean;
      first_sync: boolean;
    }>`
      SELECT a.standard_sequence, a.custom_sequence, a.friend_count, a.last_synced_at IS NULL AS first_sync,
             EXISTS (SELECT 1 FROM tim.friends f WHERE f.account_id = a.account_id) AS has_friends,
             EXISTS (SELECT 1 FROM tim.friend_tags t WHERE t.account_id = a.account_id) AS has_tags
      FROM tim.accounts a WHERE a.account_id = ${snap.accountId}
      FOR UPDATE OF a`.execute(trx);
    const current = locked.rows[0];
    if (!current)
      throw new SnapshotConflictError('gone', `account ${JSON.stringify(snap.accountId)} was removed`);
    if (
      current.standard_sequence !== snap.baseStandardSequence ||
      current.custom_sequence !== snap.baseCustomSequence
    ) {
      throw new SnapshotConflictError('stale', 'stored sequences changed while pulling');
    }
    const hasFriends = current.has_friends;
    const hasTags = current.has_tags;

    const result: ApplyResult = {
      friendsUpserted: 0,
      friendsDeleted: 0,
      tagsUpserted: 0,
      tagsDeleted: 0,
      friendCount: rows.standard ? rows.standard.friendCount : current.friend_count,
      events: 0,
    };
    // History starts with the account's first committed sync (never synced before; `resync --full`
    // keeps last_synced_at, so it is not a first sync): one baseline row, not a row per friend.
    const baseline = current.first_sync;
    if (rows.custom && !rows.standard) await assertFriendsKnown(trx, snap.accountId, rows.custom);
    // Each statement hands back its changes per friend (a json text, passed on untouched); one
    // statement then appends them, merged per friend, so a friend whose remark and custom tag both
    // changed is one event.
    const changes: string[] = [];
    if (rows.standard) {
      const f = await replaceFriends(trx, snap.accountId, rows.standard.friends, hasFriends);
      result.friendsUpserted = f.friendsUpserted;
      result.friendsDeleted = f.friendsDeleted;
      if (f.events) changes.push(f.events);
      const t = await replaceTags(trx, snap.accountId, 'standard', rows.standard, hasTags);
      result.tagsUpserted += t.upserted;
      result.tagsDeleted += t.deleted;
      if (t.events) changes.push(t.events);
    }
    if (rows.custom) {
      const t = await replaceTags(trx, snap.accountId, 'custom', rows.custom, hasTags);
      result.tagsUpserted += t.upserted;
      result.tagsDeleted += t.deleted;
      if (t.events) changes.push(t.events);
    }
    if (baseline) result.events = await recordBaseline(trx, snap, result.friendCount);
    else if (changes.length > 0) result.events = await recordEvents(trx, snap, changes);

    const changed =
      result.friendsUpserted + result.friendsDeleted + result.tagsUpserted + result.tagsDeleted > 0;
    await trx
      .updateTable('tim.accounts')
      .set({
        ...syncedColumns(snap, result.friendCount, schedule),
        ...(changed ? { last_changed_at: sql`now()` } : {}),
      })
      .where('account_id', '=', snap.accountId)
      .execute();
    return result;
  });
}

/*
 * The rows travel as JSON arrays of the snapshot's row objects (src/db/encoded-rows.ts): no per-row
 * mapping on our side, and `json_to_recordset` types the columns on the server (`groups` becomes text[]).
 * A tag's JSON null comes out of it as SQL NULL, so it is turned back into the jsonb null it was.
 */
const FRIEND_RECORD = sql`("friendId" text, remark text, groups text[], "addSource" text, "addWording" text, "addTime" bigint)`;
const FRIEND_VALUES = sql`u.remark, u.groups, u."addSource" AS add_source, u."addWording" AS add_wording,
  to_timestamp(u."addTime") AS add_time`;

function friendRows(friendsJson: string) {
  return sql`SELECT u."friendId" AS friend_id, ${FRIEND_VALUES}
    FROM json_to_recordset(${friendsJson}::json) AS u${FRIEND_RECORD}`;
}

function tagRows(tagsJson: string) {
  return sql`SELECT u."friendId" AS friend_id, u.tag, coalesce(u.value, 'null'::jsonb) AS value
    FROM json_to_recordset(${tagsJson}::json) AS u("friendId" text, tag text, value jsonb)`;
}

function counts(rows: { a?: string | number; b?: string | number }[]): [number, number] {
  return [Number(rows[0]?.a ?? 0), Number(rows[0]?.b ?? 0)];
}

/**
 * Standard data came back in full: upsert every friend, and delete the friends missing from it
 * (they are no longer friends; their tags go with them, by the set-based `friends_delete_cascade`
 * trigger at the end of the statement). One statement.
 *
 * The upsert's join drops unchanged rows first: ON CONFLICT would otherwise lock, and so dirty,
 * every unchanged row even though its WHERE skips the update. The WHERE stays as the rule. The
 * rows that join keeps, with their old values beside them, are also the history's added and
 * changed friends; the deleted rows are its removed ones.
 */
async function replaceFriends(
  trx: Transaction<Database>,
  accountId: string,
  friendsJson: string,
  hasFriends: boolean,
): Promise<{ friendsUpserted: number; friendsDeleted: number; events: string | null }> {
  if (!hasFriends) {
    const ins = await sql<{ a: string; e: string | null }>`
      WITH i AS (
        INSERT INTO tim.friends (account_id, friend_id, remark, groups, add_source, add_wording, add_time)
        SELECT ${accountId}, r.* FROM (${friendRows(friendsJson)}) AS r
        RETURNING friend_id, remark, groups, add_source, add_wording, add_time
      )
      SELECT count(*) AS a,
             json_agg(json_build_object('f', i.friend_id, 'k', 'added',
                                        'c', ${friendChanges(sql`'{}'::jsonb`, friendJson('i'))}))::text AS e
      FROM i`.execute(trx);
    return {
      friendsUpserted: Number(ins.rows[0]?.a ?? 0),
      friendsDeleted: 0,
      events: ins.rows[0]?.e ?? null,
    };
  }
  const res = await sql<{ a: string; b: string; e: string | null }>`
    WITH r AS MATERIALIZED (${friendRows(friendsJson)}),
    d AS (
      DELETE FROM tim.friends AS f
      WHERE f.account_id = ${accountId} AND NOT EXISTS (SELECT 1 FROM r WHERE r.friend_id = f.friend_id)
      RETURNING f.friend_id
    ), c AS MATERIALIZED (
      SELECT r.*, o.friend_id IS NULL AS added, ${friendJson('o')} AS prev
      FROM r
      LEFT JOIN tim.friends o ON o.account_id = ${accountId} AND o.friend_id = r.friend_id
      WHERE o.friend_id IS NULL
         OR (o.remark, o.groups, o.add_source, o.add_wording, o.add_time)
            IS DISTINCT FROM (r.remark, r.groups, r.add_source, r.add_wording, r.add_time)
    ), i AS (
      INSERT INTO tim.friends AS f (account_id, friend_id, remark, groups, add_source, add_wording, add_time)
      SELECT ${accountId}, c.friend_id, c.remark, c.groups, c.add_source, c.add_wording, c.add_time FROM c
      ON CONFLICT (account_id, friend_id) DO UPDATE SET
        remark = excluded.remark, groups = excluded.groups, add_source = excluded.add_source,
        add_wording = excluded.add_wording, add_time = excluded.add_time, updated_at = now()
      WHERE (f.remark, f.groups, f.add_source, f.add_wording, f.add_time)
            IS DISTINCT FROM (excluded.remark, excluded.groups, excluded.add_source, excluded.add_wording, excluded.add_time)
      RETURNING 1
    )
    SELECT (SELECT count(*) FROM i) AS a, (SELECT count(*) FROM d) AS b,
           (SELECT json_agg(e)::text FROM (
              SELECT d.friend_id AS f, 'removed' AS k, NULL::jsonb AS c FROM d
              UNION ALL
              SELECT c.friend_id, CASE WHEN c.added THEN 'added' ELSE 'changed' END,
                     ${friendChanges(sql`c.prev`, friendJson('c'))}
              FROM c) AS e) AS e`.execute(trx);
  const [friendsUpserted, friendsDeleted] = counts(res.rows);
  return { friendsUpserted, friendsDeleted, events: res.rows[0]?.e ?? null };
}

/**
 * A category's tags came back in full: upsert them, and delete the category's tags missing from
 * them (cleared at the source). One statement, the same way as {@link replaceFriends}.
 */
async function replaceTags(
  trx: Transaction<Database>,
  accountId: string,
  category: 'standard' | 'custom',
  tags: { tags: string; tagCount: number },
  hasTags: boolean,
): Promise<{ upserted: number; deleted: number; events: string | null }> {
  if (!hasTags) {
    if (tags.tagCount === 0) return { upserted: 0, deleted: 0, events: null };
    const ins = await sql<{ a: string; e: string | null }>`
      WITH i AS (
        INSERT INTO tim.friend_tags (account_id, friend_id, tag, value, category)
        SELECT ${accountId}, r.friend_id, r.tag, r.value, ${category} FROM (${tagRows(tags.tags)}) AS r
        RETURNING friend_id, tag, value
      )
      SELECT (SELECT count(*) FROM i) AS a,
             ${tagEvents(sql`SELECT friend_id, tag, NULL::jsonb AS ov, value AS nv FROM i`)} AS e`.execute(
      trx,
    );
    return { upserted: Number(ins.rows[0]?.a ?? 0), deleted: 0, events: ins.rows[0]?.e ?? null };
  }
  const res = await sql<{ a: string; b: string; e: string | null }>`
    WITH r AS MATERIALIZED (${tagRows(tags.tags)}),
    d AS (
      DELETE FROM tim.friend_tags AS t
      WHERE t.account_id = ${accountId} AND t.category = ${category}
        AND NOT EXISTS (SELECT 1 FROM r WHERE r.friend_id = t.friend_id AND r.tag = t.tag)
      RETURNING t.friend_id, t.tag, t.value
    ), c AS MATERIALIZED (
      SELECT r.friend_id, r.tag, r.value, o.value AS ov
      FROM r
      LEFT JOIN tim.friend_tags o ON o.account_id = ${accountId} AND o.friend_id = r.friend_id AND o.tag = r.tag
      WHERE o.tag IS NULL OR (o.value, o.category) IS DISTINCT FROM (r.value, ${category}::text)
    ), i AS (
      INSERT INTO tim.friend_tags AS t (account_id, friend_id, tag, value, category)
      SELECT ${accountId}, c.friend_id, c.tag, c.value, ${category} FROM c
      ON CONFLICT (account_id, friend_id, tag) DO UPDATE SET
        value = excluded.value, category = excluded.category, updated_at = now()
      WHERE (t.value, t.category) IS DISTINCT FROM (excluded.value, excluded.category)
      RETURNING 1
    )
    SELECT (SELECT count(*) FROM i) AS a, (SELECT count(*) FROM d) AS b,
           ${tagEvents(sql`SELECT friend_id, tag, value AS ov, NULL::jsonb AS nv FROM d
                           UNION ALL
                           SELECT friend_id, tag, ov, value FROM c WHERE ov IS DISTINCT FROM value`)} AS e`.execute(
    trx,
  );
  const [upserted, deleted] = counts(res.rows);
  return { upserted, deleted, events: res.rows[0]?.e ?? null };
}

/**
 * With standard data unchanged the friend list is unchanged, so custom tags can only name friends
 * the mirror already has. One that does not means the mirror drifted from the source; refuse, and
 * let the caller pull everything.
 */
async function assertFriendsKnown(
  trx: Transaction<Database>,
  accountId: string,
  custom: { tags: string; tagCount: number },
): Promise<void> {
  if (custom.tagCount === 0) return;
  const res = await sql<{ n: string }>`
    SELECT count(*) AS n
    FROM (SELECT DISTINCT u."friendId" AS id FROM json_to_recordset(${custom.tags}::json) AS u("friendId" text)) AS t
    WHERE NOT EXISTS (SELECT 1 FROM tim.friends f WHERE f.account_id = ${accountId} AND f.friend_id = t.id)`.execute(
    trx,
  );
  const unknown = Number(res.rows[0]?.n ?? 0);
  if (unknown > 0) {
    throw new SnapshotConflictError(
      'drift',
      `custom data names ${unknown} friend(s) the mirror does not have`,
    );
  }
}
