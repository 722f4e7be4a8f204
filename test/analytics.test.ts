/**
 * The analytics views and `friend-mirror stats`, on a mirrored simulator app (mostly mutual
 * friendships): every number is checked against the simulator's own truth, computed here in
 * JavaScript, not against the same SQL.
 */
import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import type { MirrorStats } from '../src/commands/stats.js';
import { addAccounts } from '../src/db/accounts.js';
import { generateApp } from '../src/simulator/index.js';
import { STANDARD_TAGS } from '../src/tim/friend-get.js';
import { type MirrorFixture, mirrorFixture, SDK_APP_ID, SECRET } from './fixtures/mirror.js';

const COLUMN_TAGS = new Set<string>(Object.values(STANDARD_TAGS));
const silent = pino({ level: 'silent' });

describe('analytics views and stats', () => {
  let f: MirrorFixture;

  async function stats(args: string[] = []): Promise<{ code: number; out: string[] }> {
    const out: string[] = [];
    const code = await main(['stats', ...args], {
      env: { DATABASE_URL: f.url, TIM_SDKAPPID: String(SDK_APP_ID), TIM_SECRET_KEY: SECRET },
      log: silent,
      out: (l) => out.push(l),
      errOut: () => {},
    });
    return { code, out };
  }

  /** What the views must say, from the simulator's truth. */
  function expected() {
    const ids = f.store.accountIds();
    const friendsOf = new Map(ids.map((id) => [id, f.store.truth(id).friends]));
    const sources = new Map<string | null, number>();
    const pairs: string[] = [];
    let friends = 0;
    let tags = 0;
    for (const [id, list] of friendsOf) {
      friends += list.length;
      for (const fr of list) {
        const src = (fr.standard[STANDARD_TAGS.addSource] as string | undefined) ?? null;
        sources.set(src, (sources.get(src) ?? 0) + 1);
        tags +=
          Object.keys(fr.custom).length + Object.keys(fr.standard).filter((t) => !COLUMN_TAGS.has(t)).length;
        const back = friendsOf.get(fr.friendId);
        if (id < fr.friendId && back?.some((b) => b.friendId === id)) pairs.push(`${id}|${fr.friendId}`);
      }
    }
    return { ids, friendsOf, sources, pairs: pairs.sort(), friends, tags };
  }

  beforeAll(async () => {
    const store = generateApp({ accounts: 60, meanFriends: 20, maxFriends: 50, seed: 42 });
    f = await mirrorFixture('analytics', { store });
    await f.addAllAccounts();
    expect((await f.syncAll()).failed).toBe(0);
  });
  afterAll(async () => {
    await f?.close();
  });

  it('counts friends per account, mutual pairs once each, and add sources with their share', async () => {
    const want = expected();
    const counts = await sql<{ account_id: string; friend_count: number }>`
      SELECT account_id, friend_count FROM tim.friend_counts`.execute(f.db);
    expect(new Map(counts.rows.map((r) => [r.account_id, r.friend_count]))).toEqual(
      new Map(want.ids.map((id) => [id, want.friendsOf.get(id)!.length])),
    );

    const mutual = await sql<{ account_a: string; account_b: string }>`
      SELECT account_a, account_b FROM tim.mutual_friendships`.execute(f.db);
    expect(want.pairs.length).toBeGreaterThan(50);
    expect(mutual.rows.map((r) => `${r.account_a}|${r.account_b}`).sort()).toEqual(want.pairs);

    const sources = await sql<{ add_source: string | null; friends: string; share: string }>`
      SELECT add_source, friends, share FROM tim.add_sources`.execute(f.db);
    expect(new Map(sources.rows.map((r) => [r.add_source, Number(r.friends)]))).toEqual(want.sources);
    for (const r of sources.rows) expect(Number(r.share)).toBeCloseTo(Number(r.friends) / want.friends, 3);
  });

  it('counts each day’s adds, removes and changes from the history, and reports sync health', async () => {
    // The first sync wrote baselines only: no changes yet.
    expect((await sql`SELECT * FROM tim.daily_friend_changes`.execute(f.db)).rows).toEqual([]);
    const [a, b] = f.store.accountIds();
    const friendsOfA = f.store.truth(a!).friends;
    f.store.removeFriend(a!, friendsOfA[0]!.friendId);
    f.store.setStandardTag(a!, friendsOfA[1]!.friendId, STANDARD_TAGS.remark, 'renamed');
    f.store.addFriend(a!, 'new-friend-1');
    f.store.addFriend(b!, 'new-friend-2');
    expect((await f.syncAll()).failed).toBe(0);
    await addAccounts(f.db, ['nobody-here']);
    await f.syncAll({ ids: ['nobody-here'] });

    const daily = await sql<{ day: string; added: number; removed: number; changed: number }>`
      SELECT day::text AS day, added, removed, changed FROM tim.daily_friend_changes`.execute(f.db);
    const today = (await sql<{ d: string }>`SELECT (now() AT TIME ZONE 'UTC')::date::text AS d`.execute(f.db))
      .rows[0]!.d;
    expect(daily.rows).toEqual([{ day: today, added: 2, removed: 1, changed: 1 }]);

    const health = await sql<{
      account_id: string;
      status: string;
      consecutive_failures: number;
      last_error: string;
    }>`
      SELECT account_id, status, consecutive_failures, last_error FROM tim.account_sync_health
      WHERE consecutive_failures > 0 OR status <> 'ok'`.execute(f.db);
    expect(health.rows).toHaveLength(1);
    expect(health.rows[0]).toMatchObject({
      account_id: 'nobody-here',
      status: 'missing',
      consecutive_failures: 1,
    });
    expect(health.rows[0]!.last_error).toContain('30003');
  });

  it('`stats --json` prints the headline numbers', async () => {
    const want = expected();
    const r = await stats(['--json']);
    expect(r.code).toBe(0);
    expect(r.out).toHaveLength(1);
    const s = JSON.parse(r.out[0]!) as MirrorStats;
    expect(s.accounts).toEqual({
      total: want.ids.length + 1,
      byStatus: { pending: 0, ok: want.ids.length, missing: 1, failing: 0, disabled: 0 },
    });
    expect(s.friends).toBe(want.friends);
    expect(s.tags).toBe(want.tags);
    expect(s.mutualPairs).toBe(want.pairs.length);
    const top = [...want.sources.entries()].sort((x, y) => y[1] - x[1])[0]!;
    expect(s.topAddSources[0]).toMatchObject({ addSource: top[0], friends: top[1] });
    expect(s.topAddSources.length).toBeLessThanOrEqual(5);
    expect(s.changes).toEqual({
      last24h: { added: 2, removed: 1, changed: 1 },
      last7d: { added: 2, removed: 1, changed: 1 },
    });
    expect(s.sync).toMatchObject({ due: 0, lagSeconds: 0, failing: 0 });
    expect(s.sync.oldestSyncSeconds).toBeGreaterThanOrEqual(0);
  });

  it('`stats` prints them as text', async () => {
    const want = expected();
    const r = await stats();
    expect(r.code).toBe(0);
    expect(r.out[0]).toBe(
      `accounts: ${want.ids.length + 1} (pending 0, ok ${want.ids.length}, missing 1, failing 0, disabled 0)`,
    );
    expect(r.out).toContain(
      `friends: ${want.friends}; tags: ${want.tags}; mutual pairs: ${want.pairs.length}`,
    );
    expect(r.out).toContain('last 24 h: 2 added, 1 removed, 1 changed');
    expect(r.out.some((l) => l.startsWith('top add sources: AddSource_Type_'))).toBe(true);
  });

  // Last: it changes what the tests above count.
  it('`stats` counts never-synced and resync-requested accounts as due, as `status` does', async () => {
    await addAccounts(f.db, ['fresh-1', 'fresh-2']);
    const r = await stats(['--json']);
    const s = JSON.parse(r.out[0]!) as MirrorStats;
    expect(s.sync.due).toBe(2);
    const resync = await main(['resync', expected().ids[0]!], {
      env: { DATABASE_URL: f.url, TIM_SDKAPPID: String(SDK_APP_ID), TIM_SECRET_KEY: SECRET },
      log: silent,
      out: () => {},
    });
    expect(resync).toBe(0);
    expect((JSON.parse((await stats(['--json'])).out[0]!) as MirrorStats).sync.due).toBe(3);
  });
});
