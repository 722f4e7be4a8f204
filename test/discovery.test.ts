/**
 * Discovery (SYNC_DISCOVER): a seed of 3 accounts grows into a simulated app's whole friend graph of
 * 50 accounts, the mirror equals the simulator for all of them, the cap stops the table at exactly
 * N accounts, and with the default configuration nothing is discovered.
 */
import { Writable } from 'node:stream';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { passDepsFrom, timCallsFrom } from '../src/app.js';
import { loadSyncConfig, loadTimConfig } from '../src/config.js';
import { addAccounts, removeAccounts, selectAccounts } from '../src/db/accounts.js';
import { accountTotal, discoverAccounts } from '../src/db/discovery.js';
import { claimDueAccounts, releaseLeases } from '../src/db/leases.js';
import { createLogger } from '../src/log.js';
import { createMetrics } from '../src/metrics.js';
import { FriendStore } from '../src/simulator/index.js';
import { discoverableIds } from '../src/sync/account-sync.js';
import { CAP_WARNING_INTERVAL_MS, createOutcomeReporter } from '../src/sync/outcome-report.js';
import { runPass } from '../src/sync/pass.js';
import { type MirrorFixture, mirrorFixture, SDK_APP_ID, SECRET } from './fixtures/mirror.js';

const GRAPH = 50;
const SEEDS = ['d_00', 'd_01', 'd_02'];

/** 50 accounts in a binary tree of mutual friendships (d_i ↔ d_2i+1, d_2i+2): all reachable from d_00. */
function graphApp(): FriendStore {
  const store = new FriendStore();
  const id = (i: number) => `d_${String(i).padStart(2, '0')}`;
  for (let i = 0; i < GRAPH; i++) store.addAccount(id(i));
  for (let i = 0; i < GRAPH; i++) {
    for (const c of [2 * i + 1, 2 * i + 2]) {
      if (c >= GRAPH) continue;
      const tags = (n: number) => ({
        standard: { Tag_SNS_IM_Remark: `friend ${n}`, Tag_SNS_IM_AddTime: 1_650_000_000 + n },
        custom: (n % 3 === 0 ? { Tag_SNS_Custom_Level: `L${n}` } : {}) as Record<string, string>,
      });
      store.addFriend(id(i), id(c), tags(c));
      store.addFriend(id(c), id(i), tags(i));
    }
  }
  return store;
}

async function accountCount(f: MirrorFixture): Promise<number> {
  const r = await sql<{ n: number }>`SELECT count(*)::int AS n FROM tim.accounts`.execute(f.db);
  return r.rows[0]!.n;
}

/** Passes over every active account until a pass adds none. */
async function passesUntilStable(
  f: MirrorFixture,
  opts: Parameters<MirrorFixture['syncAll']>[0],
): Promise<number> {
  for (let pass = 1; pass <= 20; pass++) {
    const before = await accountCount(f);
    const s = await f.syncAll(opts);
    expect(s.failed).toBe(0);
    if ((await accountCount(f)) === before) return pass;
  }
  throw new Error('discovery did not settle in 20 passes');
}

function captureLogs() {
  const lines: { level: number; msg: string; [k: string]: unknown }[] = [];
  const log = createLogger(
    'info',
    new Writable({
      write(chunk, _enc, done) {
        lines.push(JSON.parse(String(chunk)));
        done();
      },
    }),
  );
  return { log, lines };
}

/**
 * A fresh database per describe with the graph app and the 3 seeds listed (none synced yet).
 * Returns a getter, since the fixture exists only once beforeAll has run.
 */
function seededGraph(label: string): () => MirrorFixture {
  let f: MirrorFixture | undefined;
  beforeAll(async () => {
    f = await mirrorFixture(label, { store: graphApp(), pageSize: 2 });
    await addAccounts(f.db, SEEDS);
  });
  afterAll(async () => {
    await f?.close();
  });
  return () => f!;
}

describe('discovery', () => {
  const fixture = seededGraph('discovery');

  it('grows 3 seeds into the whole graph of 50, and the mirror equals the simulator for all', async () => {
    const f = fixture();
    const metrics = createMetrics();
    const passes = await passesUntilStable(f, {
      discover: { maxAccounts: 1_000_000 },
      onAccount: (o) => metrics.observeAccount(o),
    });
    expect(passes).toBeGreaterThan(2);
    expect(await accountCount(f)).toBe(GRAPH);
    // One more pass syncs the last ones discovered; then every account equals the source.
    await f.syncAll({ discover: { maxAccounts: 1_000_000 } });
    expect(await f.diffAll()).toEqual([]);
    expect(await f.sequenceMismatches()).toEqual([]);
    const bySource = await sql<{ source: string; n: number; from_known: number }>`
      SELECT source, count(*)::int AS n,
             count(*) FILTER (WHERE discovered_from IN (SELECT account_id FROM tim.accounts))::int AS from_known
      FROM tim.accounts GROUP BY 1 ORDER BY 1`.execute(f.db);
    expect(bySource.rows).toEqual([
      { source: 'discovered', n: GRAPH - 3, from_known: GRAPH - 3 },
      { source: 'listed', n: 3, from_known: 0 },
    ]);
    expect((await metrics.render()).body).toMatch(/^tim_mirror_discovered_accounts_total 47$/m);
    expect(await accountTotal(f.db)).toBe(GRAPH);
  });
});

describe('discovery off', () => {
  const fixture = seededGraph('discovery_off');

  it('is off by default: a pass with the default configuration adds nothing', async () => {
    const f = fixture();
    const env = { TIM_SDKAPPID: String(SDK_APP_ID), TIM_SECRET_KEY: SECRET, TIM_BASE_URL: f.baseUrl };
    const syncCfg = loadSyncConfig(env);
    expect(syncCfg.discover).toBe(false);
    const log = captureLogs().log;
    const calls = timCallsFrom(loadTimConfig(env), syncCfg, log);
    const deps = passDepsFrom(f.db, calls, syncCfg, log);
    try {
      const s = await runPass(deps, await selectAccounts(f.db, { kind: 'all' }));
      expect(s.done).toBe(3);
      expect(s.failed).toBe(0);
    } finally {
      await calls.close();
    }
    expect(await accountCount(f)).toBe(3);
  });
});

describe('discovery cap', () => {
  const fixture = seededGraph('discovery_cap');

  it('stops at exactly SYNC_DISCOVER_MAX_ACCOUNTS, warns once and counts what it left out', async () => {
    const f = fixture();
    const { log, lines } = captureLogs();
    const report = createOutcomeReporter(log, { discoverMaxAccounts: 20 });
    const metrics = createMetrics();
    await passesUntilStable(f, {
      discover: { maxAccounts: 20 },
      concurrency: 8,
      onAccount: (o) => {
        metrics.observeAccount(o);
        report(o);
      },
    });
    expect(await accountCount(f)).toBe(20);
    expect(await accountTotal(f.db)).toBe(20);
    const capWarnings = lines.filter((l) => l.level === 40 && l.msg.startsWith('discovery stopped'));
    expect(capWarnings).toHaveLength(1);
    const capped = /^tim_mirror_discovery_capped_total (\d+)$/m.exec((await metrics.render()).body);
    expect(Number(capped?.[1])).toBeGreaterThan(0);
    // Whatever was added is mirrored exactly.
    await f.syncAll({ discover: { maxAccounts: 20 } });
    expect(await accountCount(f)).toBe(20);
    expect(await f.diffAll()).toEqual([]);
  });

  it('keeps the counter exact through adds, removes and truncation, and finds room again', async () => {
    const f = fixture();
    await removeAccounts(f.db, ['d_49', 'd_48', 'nope']);
    const present = await accountCount(f);
    expect(await accountTotal(f.db)).toBe(present);
    const r = await discoverAccounts(f.db, 'd_00', ['new_a', 'new_b', 'new_c', 'd_00', 'new_a'], present + 2);
    expect(r).toEqual({ candidates: 3, added: 2, capped: 1 });
    expect(await accountCount(f)).toBe(present + 2);
    expect(await accountTotal(f.db)).toBe(present + 2);
    const again = await discoverAccounts(f.db, 'd_00', ['new_a', 'new_b'], present + 2);
    expect(again).toEqual({ candidates: 0, added: 0, capped: 0 });
    // Many replicas discovering at once near the cap: the counter row lock keeps the total exact.
    const cap = present + 12;
    const results = await Promise.all(
      Array.from({ length: 16 }, (_, k) =>
        discoverAccounts(f.db, 'd_00', [`race_${k}_a`, `race_${k}_b`, `race_${k}_c`], cap),
      ),
    );
    expect(results.reduce((sum, r) => sum + r.added, 0)).toBe(10);
    expect(await accountCount(f)).toBe(cap);
    expect(await accountTotal(f.db)).toBe(cap);
    await sql`TRUNCATE tim.accounts CASCADE`.execute(f.db);
    expect(await accountTotal(f.db)).toBe(0);
  });
});

describe('discoverableIds', () => {
  it('skips ids that cannot be accounts, and the account itself', () => {
    const long = 'x'.repeat(33);
    expect(discoverableIds('me', ['me', 'ok', '', long, 'nul\u0000id', '\uD800lone', '用户 "q"'])).toEqual([
      'ok',
      '用户 "q"',
    ]);
  });
});

describe('the discovery cap warning', () => {
  it('is logged once when outcomes arrive out of order, and again only after an hour of capping', () => {
    const { log, lines } = captureLogs();
    let now = 0;
    const report = createOutcomeReporter(log, { discoverMaxAccounts: 20, now: () => now });
    const outcome = (id: string, added: number, capped: number) => ({
      accountId: id,
      result: 'changed' as const,
      calls: 1,
      friendsWritten: 1,
      tagsWritten: 0,
      durationMs: 1,
      discovery: { candidates: added + capped, added, capped },
    });
    const warnings = () =>
      lines.filter((l) => l.level === 40 && l.msg.startsWith('discovery stopped')).length;
    report(outcome('a', 0, 3));
    // An account whose discovery added rows before the cap was reached reports after one that hit it.
    report(outcome('b', 2, 0));
    report(outcome('c', 0, 1));
    expect(warnings()).toBe(1);
    now = CAP_WARNING_INTERVAL_MS - 1;
    report(outcome('d', 0, 1));
    expect(warnings()).toBe(1);
    now = CAP_WARNING_INTERVAL_MS;
    report(outcome('e', 0, 1));
    expect(warnings()).toBe(2);
  });
});

describe('discovered ids that are not accounts (missing)', () => {
  let f: MirrorFixture | undefined;
  beforeAll(async () => {
    const store = new FriendStore();
    for (const id of ['m_seed', 'm_real']) store.addAccount(id);
    store.addFriend('m_seed', 'm_real', {});
    // Tencent lists a friend that is no account of the app (yet).
    store.addFriend('m_seed', 'm_ghost', {});
    f = await mirrorFixture('discovery_missing', { store, pageSize: 2 });
    await addAccounts(f.db, ['m_seed']);
  });
  afterAll(async () => {
    await f?.close();
  });

  const row = (id: string) =>
    f!.db
      .selectFrom('tim.accounts')
      .select([
        'status',
        'priority',
        'friend_count',
        sql<number>`extract(epoch FROM next_sync_at - now())::float8`.as('due_in_s'),
      ])
      .where('account_id', '=', id)
      .executeTakeFirstOrThrow();

  it('are re-checked every SYNC_MISSING_RECHECK, after the real accounts, and rejoin once Tencent knows them', async () => {
    const env = {
      TIM_SDKAPPID: String(SDK_APP_ID),
      TIM_SECRET_KEY: SECRET,
      TIM_BASE_URL: f!.baseUrl,
      SYNC_DISCOVER: 'true',
      // Long enough that a loaded machine's slow passes still leave the re-check clearly ahead.
      SYNC_MISSING_RECHECK: '6s',
    };
    const syncCfg = loadSyncConfig(env);
    expect(syncCfg.missingRecheckMs).toBe(6_000);
    const log = captureLogs().log;
    const calls = timCallsFrom(loadTimConfig(env), syncCfg, log);
    const deps = passDepsFrom(f!.db, calls, syncCfg, log);
    const claim = async (limit: number) =>
      (await claimDueAccounts(f!.db, { owner: 'test', limit, leaseMs: 60_000 })).map((a) => a.accountId);
    try {
      // The seed discovers both ids; each is tried; the ghost is missing, due again in 5.4-6 s.
      await runPass(deps, await selectAccounts(f!.db, { kind: 'due' }));
      const second = await runPass(deps, await selectAccounts(f!.db, { kind: 'due' }));
      expect(second.missing).toBe(1);
      const ghost = await row('m_ghost');
      expect(ghost).toMatchObject({ status: 'missing', priority: 3 });
      expect(ghost.due_in_s).toBeGreaterThan(3);
      expect(ghost.due_in_s).toBeLessThanOrEqual(6);
      // Not due yet: no claim, no one-shot pass picks it up.
      expect(await claim(10)).toEqual([]);
      expect((await selectAccounts(f!.db, { kind: 'all' })).map((a) => a.accountId)).not.toContain('m_ghost');

      await new Promise((r) => setTimeout(r, (ghost.due_in_s + 0.2) * 1000));
      // Due again, and still unknown to Tencent: the re-check finds it missing, next one 6 s later.
      expect((await selectAccounts(f!.db, { kind: 'all' })).map((a) => a.accountId).at(-1)).toBe('m_ghost');
      // A real account due at the same time is claimed first.
      await f!.db
        .updateTable('tim.accounts')
        .set({ next_sync_at: sql`now() - interval '1 second'` })
        .where('account_id', '=', 'm_real')
        .execute();
      expect(await claim(1)).toEqual(['m_real']);
      expect(await claim(1)).toEqual(['m_ghost']);
      await releaseLeases(f!.db, 'test');
      const recheck = await runPass(deps, await selectAccounts(f!.db, { kind: 'due' }));
      expect(recheck).toMatchObject({ missing: 1, failed: 0 });
      expect(await row('m_ghost')).toMatchObject({ status: 'missing', priority: 3 });

      // Tencent knows the id now: at its next re-check it becomes an account like any other.
      f!.store.addAccount('m_ghost');
      f!.store.addFriend('m_ghost', 'm_seed', { standard: { Tag_SNS_IM_Remark: 'back' } });
      await f!.db
        .updateTable('tim.accounts')
        .set({ next_sync_at: sql`now()` })
        .where('account_id', '=', 'm_ghost')
        .execute();
      const back = await runPass(deps, await selectAccounts(f!.db, { kind: 'due' }));
      expect(back).toMatchObject({ changed: 1, missing: 0 });
      expect(await row('m_ghost')).toMatchObject({ status: 'ok', priority: 2, friend_count: 1 });
      expect(await f!.diffAll()).toEqual([]);
    } finally {
      await calls.close();
    }
  });
});
