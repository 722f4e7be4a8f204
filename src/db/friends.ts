/**
 * Applying one account's pull to `tim.friends` and `tim.friend_tags`, in one transaction, together
 * with the account's sequences.
 *
 * Every write is set-based: the rows travel as ONE jsonb parameter and are expanded server-side,
 * so an account costs a handful of statements whatever its friend count. Upserts skip rows whose
 * values are unchanged (`IS DISTINCT FROM`), so an incremental pass rewrites nothing it need not.
 */
import { type Kysely, sql, type Transaction } from 'kysely';
import { afterSync } from './accounts.js';
import type { Database } from './schema.js';

/** A friend's standard fields, as columns. `addTime` is Unix seconds. */
export interface FriendRow {
  friendId: string;
  remark: string | null;
  groups: string[] | null;
  addSource: string | null;
  addWording: string | null;
  addTime: number | null;
}

/** One tag row; `value` is any JSON value and is stored with its JSON type. */
export interface TagRow {
  friendId: string;
  tag: string;
  value: unknown;
}

/**
 * What one complete pull of an account says. A category is present only when the server sent it,
 * and then it is the FULL set: anything of that category not in it is gone at the source.
 * An absent category was unchanged and must be left exactly as it is.
 */
export interface AccountSnapshot {
  accountId: string;
  /** The sequences the pull was made with (what the mirror held when it started). */
  baseStandardSequence: number | null;
  baseCustomSequence: number | null;
  /** The sequences the server reported for this pull. */
  standardSequence: number;
  customSequence: number;
  /** Every friend with its standard fields, and every standard-category tag we keep as a row. */
  standard?: { friends: FriendRow[]; tags: TagRow[] };
  /** Every custom-category tag of every friend. */
  custom?: { tags: TagRow[] };
}

/** When a synced account is due again. */
export interface NextSync {
  /** `SYNC_INTERVAL` in ms. */
  intervalMs: number;
  /** ± this fraction of random spread, so accounts synced together do not come due together. Default 0.1. */
  jitter?: number;
}

const DEFAULT_NEXT_SYNC: NextSync = { intervalMs: 3_600_000 };

function nextSyncAt(s: NextSync) {
  const jitter = s.jitter ?? 0.1;
  return sql<Date>`now() + ${s.intervalMs}::float8 * (1 - ${jitter}::float8 + random() * 2 * ${jitter}::float8) * interval '1 millisecond'`;
}

/** Row counts written by one apply. */
export interface ApplyResult {
  friendsUpserted: number;
  friendsDeleted: number;
  tagsUpserted: number;
  tagsDeleted: number;
  friendCount: number;
}

/**
 * The mirror no longer matches what the pull was based on: another writer committed first, or the
 * custom data names friends the mirror does not have. Nothing was written; pull again.
 */
export class SnapshotConflictError extends Error {
  readonly code = 'SNAPSHOT_CONFLICT';
  /** `stale`: the stored sequences moved; `drift`: the custom data names unknown friends. */
  readonly reason: 'stale' | 'drift' | 'gone';
  constructor(reason: 'stale' | 'drift' | 'gone', message: string) {
    super(message);
    this.reason = reason;
  }
}

/**
 * Applies a snapshot and stores its sequences in the same transaction, so the stored sequences
 * are never ahead of the data.
 *
 * @throws SnapshotConflictError when the account's stored sequences differ from the snapshot's base
 *   (someone else synced it meanwhile) or custom tags name friends the mirror lacks (drift);
 *   the transaction is rolled back and nothing is written.
 */
export async function applySnapshot(
  db: Kysely<Database>,
  snap: AccountSnapshot,
  schedule: NextSync = DEFAULT_NEXT_SYNC,
): Promise<ApplyResult> {
  return db.transaction().execute(async (trx) => {
    // Lock the account row: concurrent applies of one account serialise here, and the check below
    // refuses a snapshot pulled from sequences that are no longer the stored ones.
    const current = await trx
      .selectFrom('tim.accounts')
      .select(['standard_sequence', 'custom_sequence', 'friend_count'])
      .where('account_id', '=', snap.accountId)
      .forUpdate()
      .executeTakeFirst();
    if (!current)
      throw new SnapshotConflictError('gone', `account ${JSON.stringify(snap.accountId)} was removed`);
    if (
      current.standard_sequence !== snap.baseStandardSequence ||
      current.custom_sequence !== snap.baseCustomSequence
    ) {
      throw new SnapshotConflictError('stale', 'stored sequences changed while pulling');
    }

    const result: ApplyResult = {
      friendsUpserted: 0,
      friendsDeleted: 0,
      tagsUpserted: 0,
      tagsDeleted: 0,
      friendCount: current.friend_count,
    };
    if (snap.standard) {
      Object.assign(result, await replaceFriends(trx, snap.accountId, snap.standard.friends));
      result.friendCount = snap.standard.friends.length;
      const t = await replaceTags(trx, snap.accountId, 'standard', snap.standard.tags);
      result.tagsUpserted += t.upserted;
      result.tagsDeleted += t.deleted;
    }
    if (snap.custom) {
      if (!snap.standard) await assertFriendsKnown(trx, snap.accountId, snap.custom.tags);
      const t = await replaceTags(trx, snap.accountId, 'custom', snap.custom.tags);
      result.tagsUpserted += t.upserted;
      result.tagsDeleted += t.deleted;
    }

    const changed =
      result.friendsUpserted + result.friendsDeleted + result.tagsUpserted + result.tagsDeleted > 0;
    await trx
      .updateTable('tim.accounts')
      .set({
        standard_sequence: snap.standardSequence,
        custom_sequence: snap.customSequence,
        friend_count: result.friendCount,
        status: 'ok',
        last_error: null,
        failures: 0,
        last_synced_at: sql`now()`,
        last_attempt_at: sql`now()`,
        ...afterSync(nextSyncAt(schedule)),
        ...(changed ? { last_changed_at: sql`now()` } : {}),
      })
      .where('account_id', '=', snap.accountId)
      .execute();
    return result;
  });
}

/**
 * Records a pull that found both sequences unchanged: bookkeeping only, no data rows touched.
 * Refuses (returns false) if the stored sequences moved meanwhile, like {@link applySnapshot}.
 */
export async function recordUnchanged(
  db: Kysely<Database>,
  accountId: string,
  standardSequence: number,
  customSequence: number,
  schedule: NextSync = DEFAULT_NEXT_SYNC,
): Promise<boolean> {
  const res = await db
    .updateTable('tim.accounts')
    .set({
      status: 'ok',
      last_error: null,
      failures: 0,
      last_synced_at: sql`now()`,
      last_attempt_at: sql`now()`,
      ...afterSync(nextSyncAt(schedule)),
    })
    .where('account_id', '=', accountId)
    .where('standard_sequence', '=', standardSequence)
    .where('custom_sequence', '=', customSequence)
    .executeTakeFirst();
  return Number(res.numUpdatedRows) === 1;
}

async function replaceFriends(
  trx: Transaction<Database>,
  accountId: string,
  friends: FriendRow[],
): Promise<{ friendsUpserted: number; friendsDeleted: number }> {
  // Compact positional rows keep the parameter small: [id, remark, groups, source, wording, time].
  const rows = JSON.stringify(
    friends.map((f) => [f.friendId, f.remark, f.groups, f.addSource, f.addWording, f.addTime]),
  );
  const upsert = await sql`
    INSERT INTO tim.friends AS f (account_id, friend_id, remark, groups, add_source, add_wording, add_time)
    SELECT ${accountId}, e->>0, e->>1,
           CASE WHEN jsonb_typeof(e->2) = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(e->2)) END,
           e->>3, e->>4, to_timestamp((e->>5)::bigint)
    FROM jsonb_array_elements(${rows}::jsonb) AS e
    ON CONFLICT (account_id, friend_id) DO UPDATE SET
      remark = excluded.remark, groups = excluded.groups, add_source = excluded.add_source,
      add_wording = excluded.add_wording, add_time = excluded.add_time, updated_at = now()
    WHERE (f.remark, f.groups, f.add_source, f.add_wording, f.add_time)
          IS DISTINCT FROM (excluded.remark, excluded.groups, excluded.add_source, excluded.add_wording, excluded.add_time)`.execute(
    trx,
  );
  // Standard data came back in full, so a friend missing from it is no longer a friend. Its tags go
  // with it (ON DELETE CASCADE).
  const del = await sql`
    DELETE FROM tim.friends
    WHERE account_id = ${accountId} AND friend_id <> ALL(${friends.map((f) => f.friendId)}::text[])`.execute(
    trx,
  );
  return {
    friendsUpserted: Number(upsert.numAffectedRows ?? 0),
    friendsDeleted: Number(del.numAffectedRows ?? 0),
  };
}

async function replaceTags(
  trx: Transaction<Database>,
  accountId: string,
  category: 'standard' | 'custom',
  tags: TagRow[],
): Promise<{ upserted: number; deleted: number }> {
  const rows = JSON.stringify(tags.map((t) => [t.friendId, t.tag, t.value]));
  // The category's tags came back in full: anything of it not in the set was cleared at the source.
  const del = await sql`
    DELETE FROM tim.friend_tags AS t
    WHERE t.account_id = ${accountId} AND t.category = ${category}
      AND NOT EXISTS (
        SELECT 1 FROM jsonb_array_elements(${rows}::jsonb) AS e
        WHERE e->>0 = t.friend_id AND e->>1 = t.tag)`.execute(trx);
  if (tags.length === 0) return { upserted: 0, deleted: Number(del.numAffectedRows ?? 0) };
  const upsert = await sql`
    INSERT INTO tim.friend_tags AS t (account_id, friend_id, tag, value, category)
    SELECT ${accountId}, e->>0, e->>1, e->2, ${category}
    FROM jsonb_array_elements(${rows}::jsonb) AS e
    ON CONFLICT (account_id, friend_id, tag) DO UPDATE SET
      value = excluded.value, category = excluded.category, updated_at = now()
    WHERE (t.value, t.category) IS DISTINCT FROM (excluded.value, excluded.category)`.execute(trx);
  return { upserted: Number(upsert.numAffectedRows ?? 0), deleted: Number(del.numAffectedRows ?? 0) };
}

/**
 * With standard data unchanged the friend list is unchanged, so custom tags can only name friends
 * the mirror already has. One that does not means the mirror drifted from the source; refuse, and
 * let the caller pull everything.
 */
async function assertFriendsKnown(
  trx: Transaction<Database>,
  accountId: string,
  tags: TagRow[],
): Promise<void> {
  if (tags.length === 0) return;
  const ids = [...new Set(tags.map((t) => t.friendId))];
  const res = await sql<{ n: string }>`
    SELECT count(*) AS n FROM unnest(${ids}::text[]) AS t(id)
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

/** An account's mirrored friends with all their tag rows, as stored. */
export interface MirroredFriend {
  friendId: string;
  remark: string | null;
  groups: string[] | null;
  addSource: string | null;
  addWording: string | null;
  /** Unix seconds. */
  addTime: number | null;
  tags: { tag: string; value: unknown; category: 'standard' | 'custom' }[];
}

/** Reads an account's mirror, sorted by friend id (code-point order of the ids' UTF-8 bytes). */
export async function readMirror(db: Kysely<Database>, accountId: string): Promise<MirroredFriend[]> {
  const res = await sql<{
    friend_id: string;
    remark: string | null;
    groups: string[] | null;
    add_source: string | null;
    add_wording: string | null;
    add_time: number | null;
    tags: { tag: string; value: unknown; category: 'standard' | 'custom' }[];
  }>`
    SELECT f.friend_id, f.remark, f.groups, f.add_source, f.add_wording,
           extract(epoch FROM f.add_time)::float8 AS add_time,
           coalesce((SELECT jsonb_agg(jsonb_build_object('tag', t.tag, 'value', t.value, 'category', t.category)
                                      ORDER BY t.tag COLLATE "C")
                     FROM tim.friend_tags t
                     WHERE t.account_id = f.account_id AND t.friend_id = f.friend_id), '[]'::jsonb) AS tags
    FROM tim.friends f
    WHERE f.account_id = ${accountId}
    ORDER BY f.friend_id COLLATE "C"`.execute(db);
  return res.rows.map((r) => ({
    friendId: r.friend_id,
    remark: r.remark,
    groups: r.groups,
    addSource: r.add_source,
    addWording: r.add_wording,
    addTime: r.add_time,
    tags: r.tags,
  }));
}
