/**
 * The statements that append to the change history, `tim.friend_events`: one row per friend added,
 * removed or changed (its column and tag changes together), derived from the very statements that
 * write the rows and run in their transaction, so history and mirror commit or vanish together.
 * An account's first sync records one `baseline` row instead of a row per friend.
 *
 * The history's `changed` column: {field: {"old": v, "new": v}}, a key left out where the field was
 * absent (a NULL column, a tag not set), so a tag whose value is JSON null stays distinct from no
 * tag. Fields are the friend columns (add_time as Unix seconds, as Tencent sends it) and tag names.
 */
import { type RawBuilder, sql, type Transaction } from 'kysely';
import type { Database } from './schema.js';
import type { SnapshotHead } from './snapshot-types.js';

/** A friend row's columns as a jsonb object; absent (NULL) columns are left out. */
export function friendJson(alias: 'c' | 'i' | 'o' | 'r') {
  const a = sql.raw(alias);
  return sql`jsonb_strip_nulls(jsonb_build_object('remark', ${a}.remark, 'groups', ${a}.groups,
    'add_source', ${a}.add_source, 'add_wording', ${a}.add_wording,
    'add_time', extract(epoch FROM ${a}.add_time)::bigint))`;
}

/** One field's change from jsonb `o` to jsonb `n`, SQL NULL meaning absent. */
function fieldChange(o: RawBuilder<unknown>, n: RawBuilder<unknown>) {
  return sql`(CASE WHEN ${o} IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('old', ${o}) END
    || CASE WHEN ${n} IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('new', ${n}) END)`;
}

/** The fields that differ between two {@link friendJson} objects, as {field: change}. */
export function friendChanges(oldJson: RawBuilder<unknown>, newJson: RawBuilder<unknown>) {
  return sql`(SELECT coalesce(jsonb_object_agg(key, ${fieldChange(sql.raw('o.value'), sql.raw('n.value'))}), '{}'::jsonb)
    FROM jsonb_each(${oldJson}) AS o FULL JOIN jsonb_each(${newJson}) AS n USING (key)
    WHERE o.value IS DISTINCT FROM n.value)`;
}

/**
 * Per-friend tag changes as the json text a replace statement hands back: `x` is a query with
 * columns friend_id, tag, ov and nv (old and new value, jsonb, NULL = not set).
 */
export function tagEvents(x: RawBuilder<unknown>) {
  return sql`(SELECT json_agg(json_build_object('f', friend_id, 'k', 'changed', 'c', c))::text
    FROM (SELECT friend_id, jsonb_object_agg(tag, ${fieldChange(sql.raw('ov'), sql.raw('nv'))}) AS c
          FROM (${x}) AS x GROUP BY friend_id) AS e)`;
}

/** The history's baseline row: the account's friend count, with the snapshot's sequences. */
export function baselineEvent(snap: SnapshotHead, friendCount: number) {
  return sql`INSERT INTO tim.friend_events (account_id, kind, changed, standard_sequence, custom_sequence)
    VALUES (${snap.accountId}, 'baseline', jsonb_build_object('friend_count', ${friendCount}::int),
            ${snap.standardSequence}, ${snap.customSequence})`;
}

/** The account's first sync: its history starts with one row holding the friend count. */
export async function recordBaseline(
  trx: Transaction<Database>,
  snap: SnapshotHead,
  friendCount: number,
): Promise<number> {
  await baselineEvent(snap, friendCount).execute(trx);
  return 1;
}

/**
 * Appends the changes the replace statements handed back, one row per friend: a friend's column
 * and tag changes merge into one `changed` object; a friend added in this apply stays `added` with
 * its tags in the same object; `removed` carries no fields (its tags went with it).
 */
export async function recordEvents(
  trx: Transaction<Database>,
  snap: SnapshotHead,
  changes: string[],
): Promise<number> {
  const res = await sql`
    INSERT INTO tim.friend_events (account_id, friend_id, kind, changed, standard_sequence, custom_sequence)
    SELECT ${snap.accountId}, g.f, g.kind, CASE WHEN g.kind = 'removed' THEN NULL ELSE coalesce(g.c, '{}'::jsonb) END,
           ${snap.standardSequence}, ${snap.customSequence}
    FROM (
      SELECT e.f,
             CASE WHEN bool_or(e.k = 'removed') THEN 'removed' WHEN bool_or(e.k = 'added') THEN 'added' ELSE 'changed' END AS kind,
             jsonb_object_agg(kv.key, kv.value) FILTER (WHERE kv.key IS NOT NULL) AS c
      FROM unnest(${changes}::text[]) AS j(t)
      CROSS JOIN LATERAL json_to_recordset(j.t::json) AS e(f text, k text, c jsonb)
      LEFT JOIN LATERAL jsonb_each(e.c) AS kv ON true
      GROUP BY e.f
    ) AS g
    ORDER BY g.f COLLATE "C"`.execute(trx);
  return Number(res.numAffectedRows ?? 0);
}
