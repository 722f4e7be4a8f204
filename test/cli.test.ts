/**
 * The command line as a new user meets it: env vars, `accounts import -` from stdin, `sync`, exit
 * codes, against a simulator configured away from the defaults (page size 3, the "omit-friend"
 * sequence reading, odd account ids, a 50 calls/s limit).
 */
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import { createDb } from '../src/db/pool.js';
import { type FriendStore, generateApp, ODD_ACCOUNT_IDS, Simulator } from '../src/simulator/index.js';
import { diffAccount } from '../src/verify.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000123;
const KEY = 'cli-test-key';
const silent = pino({ level: 'silent' });

describe('friend-mirror CLI', () => {
  let database: TestDatabase;
  let sim: Simulator;
  let env: Record<string, string>;

  async function run(argv: string[], stdin?: string) {
    const out: string[] = [];
    let err = '';
    const code = await main(argv, {
      env,
      log: silent,
      out: (l) => out.push(l),
      errOut: (t) => {
        err += t;
      },
      ...(stdin !== undefined ? { stdin: Readable.from([stdin]) } : {}),
    });
    return { code, out, err };
  }

  async function mirrorEqualsSource(): Promise<string[]> {
    const db = createDb(database.url, { maxConnections: 2 });
    try {
      const diffs: string[] = [];
      for (const id of sim.store.accountIds())
        diffs.push(...(await diffAccount(db, id, sim.store.truth(id).friends)));
      const rows = await db.selectFrom('tim.accounts').selectAll().execute();
      for (const r of rows) {
        const t = sim.store.truth(r.account_id);
        if (r.standard_sequence !== t.standardSequence || r.custom_sequence !== t.customSequence) {
          diffs.push(
            `${r.account_id}: sequences ${r.standard_sequence}/${r.custom_sequence} ≠ ${t.standardSequence}/${t.customSequence}`,
          );
        }
      }
      return diffs;
    } finally {
      await db.destroy();
    }
  }

  beforeAll(async () => {
    database = await createTestDatabase('cli');
    const store: FriendStore = generateApp({
      accounts: 25,
      meanFriends: 12,
      maxFriends: 40,
      seed: 3,
      oddIds: true,
    });
    sim = new Simulator({
      store,
      sdkAppId: APP,
      secretKey: KEY,
      pageSize: 3,
      sequenceReading: 'omit-friend',
      rateLimit: 50,
    });
    const baseUrl = await sim.listen();
    env = {
      DATABASE_URL: database.url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: baseUrl,
      TIM_RATE_LIMIT: '50',
      // The simulator runs on this test's event loop; cover its lag under a loaded test run.
      TIM_RATE_JITTER_MS: '100',
      SYNC_CONCURRENCY: '8',
    };
  });
  afterAll(async () => {
    await sim?.close();
    await database?.drop();
  });

  it('imports ids from stdin, reporting bad lines by number and keeping the rest', async () => {
    const ids = sim.store.accountIds();
    expect(ids.some((id) => ODD_ACCOUNT_IDS.includes(id))).toBe(true);
    const input = [...ids.slice(0, 10), '', ids[0]!, 'x'.repeat(33), ...ids.slice(10)].join('\n');
    const r = await run(['accounts', 'import', '-'], input);
    expect(r.code).toBe(1);
    expect(r.out).toContain('line 11: empty line; skipped');
    expect(r.out.some((l) => l.startsWith('line 12:') && l.includes('repeats'))).toBe(true);
    expect(r.out.some((l) => l.startsWith('line 13:') && l.includes('33 bytes'))).toBe(true);
    expect(r.out.at(-1)).toContain(`added ${ids.length}`);
    const list = await run(['accounts', 'list']);
    expect(list.out).toHaveLength(ids.length);
  });

  it('mirrors every account exactly, then incrementally, never above TIM_RATE_LIMIT', async () => {
    const first = await run(['sync', '--all']);
    expect(first.code, first.out.join('\n')).toBe(0);
    expect(first.out[0]).toMatch(/^synced 25\/25 account\(s\)/);
    expect(await mirrorEqualsSource()).toEqual([]);

    const changed = new Set(sim.store.mutateRandom({ fraction: 0.2, seed: 9 }));
    sim.clearCalls();
    const second = await run(['sync', '--all']);
    expect(second.code).toBe(0);
    expect(await mirrorEqualsSource()).toEqual([]);
    const perAccount = new Map<string, number>();
    for (const c of sim.calls()) perAccount.set(c.account!, (perAccount.get(c.account!) ?? 0) + 1);
    for (const id of sim.store.accountIds()) if (!changed.has(id)) expect(perAccount.get(id), id).toBe(1);
    expect(sim.stats().rateLimited).toBe(0);
    expect(sim.maxCallsInWindow(1000)).toBeLessThanOrEqual(50);
  });

  it('syncs only what is due by default, and resync makes accounts due again', async () => {
    const idle = await run(['sync']);
    expect(idle.code).toBe(0);
    expect(idle.out[0]).toMatch(/^synced 0\/0/);
    const id = sim.store.accountIds()[0]!;
    expect((await run(['resync', '--full', id])).code).toBe(0);
    const again = await run(['sync']);
    expect(again.out[0]).toMatch(/^synced 1\/1 account\(s\)/);
    expect(await mirrorEqualsSource()).toEqual([]);
    const status = await run(['status']);
    expect(status.out[0]).toMatch(/^accounts: 25 \(.*ok 25/);
  });

  it('exits 1 when an account is missing at Tencent, and marks it', async () => {
    expect((await run(['accounts', 'add', 'nobody-here'])).code).toBe(0);
    const r = await run(['sync', 'nobody-here']);
    expect(r.code).toBe(1);
    expect(r.out[0]).toContain('1 missing');
    expect((await run(['accounts', 'remove', 'nobody-here'])).code).toBe(0);
  });

  it('exits 2 with a one-line message naming the variable on bad configuration', async () => {
    const saved = { ...env };
    try {
      for (const [name, value] of [
        ['TIM_RATE_LIMIT', 'fast'],
        ['SYNC_INTERVAL', 'soon'],
        ['TIM_REGION', 'mars'],
        ['TIM_BASE_URL', 'http://example.com'],
        ['DATABASE_URL', 'mysql://x'],
        ['TIM_CALL_THREAD', 'maybe'],
        ['TIM_CALL_THREAD_NICE', '-30'],
      ] as const) {
        env = { ...saved, [name]: value };
        const r = await run(['sync', '--all']);
        expect(r.code, name).toBe(2);
        expect(r.err.trim().split('\n'), name).toHaveLength(1);
        expect(r.err, name).toContain(name);
      }
      env = { ...saved, TIM_USERSIG: 'also-set' };
      const both = await run(['sync']);
      expect(both.code).toBe(2);
      expect(both.err).not.toContain('also-set');
      expect(both.err).not.toContain(KEY);
    } finally {
      env = saved;
    }
  });

  it('exits 2 when Tencent reports a configuration error, and stops calling', async () => {
    const saved = { ...env };
    try {
      env = { ...saved, TIM_IDENTIFIER: 'not-an-admin' };
      sim.clearCalls();
      await run(['resync', '--all']);
      const r = await run(['sync']);
      expect(r.code).toBe(2);
      expect(r.out.join('\n')).toContain('30004');
      // The pass stops at the first such answer instead of trying every account.
      expect(sim.calls().length).toBeLessThan(10);
    } finally {
      env = saved;
    }
  });

  it('exits 1 when a proxy refuses the calls (HTTP 403): the pass stops and says why, no restart needed', async () => {
    await run(['resync', '--all']);
    sim.clearCalls();
    sim.injectFaults('http-403', 1);
    const r = await run(['sync']);
    expect(r.code).toBe(1);
    expect(r.out.join('\n')).toMatch(/stopped early: Tencent IM answered HTTP 403 \(fix: .*TIM_BASE_URL\)/);
    expect(sim.calls().length).toBeLessThan(10);
    // Once the proxy lets calls through, the next pass completes.
    expect((await run(['sync'])).code).toBe(0);
  });

  it('exits 2 on bad usage', async () => {
    expect((await run(['frobnicate'])).code).toBe(2);
    expect((await run(['sync', '--bogus'])).code).toBe(2);
    expect((await run(['resync'])).code).toBe(2);
    expect((await run(['accounts'])).code).toBe(2);
  });
});
