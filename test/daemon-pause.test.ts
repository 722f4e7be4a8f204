/**
 * The daemon (`run`, in this process) against the simulator when calls stop getting through: a
 * proxy's HTTP 403 pauses claiming (unready, a metric, one warning a minute), a probe account tries
 * again with backoff, and the daemon resumes by itself; a configuration error that no retry fixes
 * stops claiming for good, and the log line names the variable to fix.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import { addAccounts } from '../src/db/accounts.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { createLogger } from '../src/log.js';
import { generateApp, Simulator } from '../src/simulator/index.js';
import { generateUserSig } from '../src/tim/usersig.js';
import { diffAccount } from '../src/verify.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000777;
const KEY = 'pause-test-key';

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** `run` in this process, its JSON log lines, its admin URL, and a way to stop it. */
function startDaemon(env: Record<string, string>) {
  const lines: LogLine[] = [];
  const log = createLogger('debug', {
    write: (s: string) => {
      for (const l of s.split('\n')) if (l.trim()) lines.push(JSON.parse(l) as LogLine);
    },
  });
  const stop = new AbortController();
  const exited = main(['run'], { env, log, signal: stop.signal, out: () => {}, errOut: () => {} });
  const admin = async (): Promise<string> => {
    for (;;) {
      const started = lines.find((l) => l.msg === 'daemon started');
      if (started) return started.admin as string;
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return { lines, stop, exited, admin };
}

async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function readyz(
  url: string,
): Promise<{ status: number; body: { checks: Record<string, { ok: boolean; detail?: string }> } }> {
  const res = await fetch(`${url}/readyz`);
  return { status: res.status, body: (await res.json()) as never };
}

async function metric(url: string, line: RegExp): Promise<string | undefined> {
  const body = await (await fetch(`${url}/metrics`)).text();
  return line.exec(body)?.[1];
}

describe('daemon: calls that do not get through', () => {
  let database: TestDatabase;
  let db: ReturnType<typeof createDb>;
  let sim: Simulator;
  let env: Record<string, string>;

  beforeAll(async () => {
    database = await createTestDatabase('daemon_pause');
    db = createDb(database.url, { maxConnections: 4 });
    await migrateToLatest(db);
    sim = new Simulator({
      store: generateApp({ accounts: 6, meanFriends: 4, maxFriends: 8, seed: 7 }),
      sdkAppId: APP,
      secretKey: KEY,
      rateLimit: 0,
    });
    const baseUrl = await sim.listen();
    await addAccounts(db, sim.store.accountIds());
    env = {
      DATABASE_URL: database.url,
      DATABASE_POOL_SIZE: '4',
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: baseUrl,
      TIM_RATE_LIMIT: '100',
      TIM_CALL_THREAD: 'false',
      HTTP_PORT: '0',
      // One account at a time: the injected faults meet the calls in a known order.
      SYNC_CONCURRENCY: '1',
      LOG_SUMMARY_INTERVAL: '1h',
    };
  });
  afterAll(async () => {
    await sim?.close();
    await db?.destroy();
    await database?.drop();
  });

  const okCount = async () =>
    (
      await sql<{
        n: number;
      }>`SELECT count(*)::int AS n FROM tim.accounts WHERE status = 'ok' AND priority = 2`.execute(db)
    ).rows[0]!.n;

  it('pauses on a proxy 403 (unready, metric, one warning), probes, and resumes by itself', async () => {
    const d = startDaemon(env);
    try {
      const url = await d.admin();
      await until('the first sweep', async () => (await okCount()) === 6);
      expect((await readyz(url)).status).toBe(200);

      // A proxy in between refuses the next two calls, then lets calls through again.
      sim.injectFaults('http-403', 2);
      await db.updateTable('tim.accounts').set({ priority: 0, next_sync_at: sql`'-infinity'` }).execute();
      await sql`SELECT pg_notify('tim_friend_mirror_resync', '')`.execute(db);

      const paused = await until('readiness to report the pause', async () => {
        const r = await readyz(url);
        return r.status === 503 ? r.body : undefined;
      });
      expect(paused.checks.tencent?.ok).toBe(false);
      expect(paused.checks.tencent?.detail).toMatch(
        /calls paused since .* \(refused\): .*HTTP 403.*TIM_BASE_URL/,
      );
      expect(await metric(url, /^tim_mirror_claims_paused (\d+)$/m)).toBe('1');

      const resumed = await until('claiming to resume', async () =>
        d.lines.find((l) => l.msg === 'calls to Tencent go through again; claiming resumed'),
      );
      // The first probe met the second 403 and waited longer; the next one went through.
      expect(resumed).toMatchObject({ reason: 'refused', failedProbes: 1 });
      expect(sim.stats().byFault).toEqual({ 'http-403': 2 });
      await until('every account synced again', async () => (await okCount()) === 6);
      expect((await readyz(url)).status).toBe(200);
      expect(await metric(url, /^tim_mirror_claims_paused (\d+)$/m)).toBe('0');
      expect(await metric(url, /^tim_mirror_claim_pauses_total\{reason="refused"\} (\d+)$/m)).toBe('1');
      // The probe met the second 403: two pauses' worth of waiting, one warning within the minute.
      const warnings = d.lines.filter(
        (l) => l.level === 40 && l.msg.startsWith('calls to Tencent do not get through'),
      );
      expect(warnings).toHaveLength(1);
      expect(warnings[0]!.msg).toMatch(/\(refused\): Tencent IM answered HTTP 403/);
      expect(d.lines.some((l) => l.level >= 50)).toBe(false);
      // Nobody's fault but the proxy's: no account was marked failing, and the mirror is exact.
      const failures = await sql<{
        n: number;
      }>`SELECT count(*)::int AS n FROM tim.accounts WHERE failures > 0`.execute(db);
      expect(failures.rows[0]!.n).toBe(0);
      for (const id of sim.store.accountIds()) {
        expect(await diffAccount(db, id, sim.store.truth(id).friends)).toEqual([]);
      }
    } finally {
      d.stop.abort();
      expect(await d.exited).toBe(0);
    }
  });

  const expiredSig = () =>
    generateUserSig({
      secretKey: KEY,
      sdkAppId: APP,
      identifier: 'administrator',
      expireSeconds: 60,
      now: Math.floor(Date.now() / 1000) - 3_600,
    });
  it.each([
    ['a key of another app', 'TIM_SECRET_KEY', () => ({ TIM_SECRET_KEY: 'not-the-app-key' })],
    [
      'a fixed UserSig that expired',
      'TIM_USERSIG',
      () => ({ TIM_SECRET_KEY: '', TIM_USERSIG: expiredSig() }),
    ],
  ])('stops claiming for good on a configuration error (%s), naming %s', async (_what, variable, over) => {
    await db.updateTable('tim.accounts').set({ priority: 0, next_sync_at: sql`'-infinity'` }).execute();
    const d = startDaemon({ ...env, ...over() });
    try {
      const url = await d.admin();
      const fatal = await until('the fatal line', async () => d.lines.find((l) => l.level === 60));
      expect(fatal.msg).toMatch(/^stopped calling Tencent: Tencent IM error 700\d\d.*; fix it and restart$/);
      expect(fatal.msg).toContain(variable);
      const r = await readyz(url);
      expect(r.status).toBe(503);
      expect(r.body.checks.tencent?.detail).toContain(variable);
      const calls = sim.calls().length;
      await new Promise((res) => setTimeout(res, 1_500));
      expect(sim.calls().length).toBe(calls);
      expect(await metric(url, /^tim_mirror_claims_paused (\d+)$/m)).toBe('0');
    } finally {
      d.stop.abort();
      expect(await d.exited).toBe(2);
    }
  });
});
