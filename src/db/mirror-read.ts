/**
 * Reading an account's mirror back, friend by friend with its tags: for `verify`, the demo and tests.
 */
import { type Kysely, sql } from 'kysely';
import type { Database } from './schema.js';
import type { FriendRow } from './snapshot-types.js';

/** An account's mirrored friends with all their tag rows, as stored. */
export interface MirroredFriend extends FriendRow {
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
