/**
 * Comparing the mirror with a source of truth, friend by friend and tag by tag. Used by the demo
 * and the tests to prove "the mirror equals the source after a completed sync".
 */
import type { Kysely } from 'kysely';
import { readMirror } from './db/mirror-read.js';
import type { Database } from './db/schema.js';
import { type JsonValue, STANDARD_TAGS } from './tim/friend-get.js';

/** One friend as the source has it: tags by category, only tags that are set. */
export interface TruthFriend {
  friendId: string;
  standard: Record<string, JsonValue>;
  custom: Record<string, JsonValue>;
}

/** The mirror's view of an account, rebuilt into Tencent's tag shape. */
export async function mirrorAsTags(db: Kysely<Database>, accountId: string): Promise<TruthFriend[]> {
  const rows = await readMirror(db, accountId);
  return rows.map((r) => {
    const standard: Record<string, JsonValue> = {};
    if (r.groups !== null) standard[STANDARD_TAGS.group] = r.groups;
    if (r.remark !== null) standard[STANDARD_TAGS.remark] = r.remark;
    if (r.addSource !== null) standard[STANDARD_TAGS.addSource] = r.addSource;
    if (r.addWording !== null) standard[STANDARD_TAGS.addWording] = r.addWording;
    if (r.addTime !== null) standard[STANDARD_TAGS.addTime] = r.addTime;
    const custom: Record<string, JsonValue> = {};
    for (const t of r.tags) {
      (t.category === 'standard' ? standard : custom)[t.tag] = t.value as JsonValue;
    }
    return { friendId: r.friendId, standard, custom };
  });
}

/** Canonical JSON: object keys sorted, so equal values compare equal as strings. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/**
 * Differences between the mirror and the truth for one account, as readable lines (empty = equal).
 * Capped at `max` lines.
 */
export async function diffAccount(
  db: Kysely<Database>,
  accountId: string,
  truth: readonly TruthFriend[],
  max = 20,
): Promise<string[]> {
  const mirror = new Map((await mirrorAsTags(db, accountId)).map((f) => [f.friendId, f]));
  const diffs: string[] = [];
  const acc = JSON.stringify(accountId);
  for (const t of truth) {
    const m = mirror.get(t.friendId);
    mirror.delete(t.friendId);
    if (!m) diffs.push(`${acc}: friend ${JSON.stringify(t.friendId)} missing from the mirror`);
    else {
      for (const cat of ['standard', 'custom'] as const) {
        if (canonical(m[cat]) !== canonical(t[cat])) {
          diffs.push(
            `${acc}: friend ${JSON.stringify(t.friendId)} ${cat} differs: mirror ${canonical(m[cat])} source ${canonical(t[cat])}`,
          );
        }
      }
    }
    if (diffs.length >= max) return diffs;
  }
  for (const id of mirror.keys()) {
    diffs.push(`${acc}: friend ${JSON.stringify(id)} in the mirror but not at the source`);
    if (diffs.length >= max) break;
  }
  return diffs;
}
