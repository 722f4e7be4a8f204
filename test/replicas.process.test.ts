/**
 * Three `friend-mirror run` processes against one database and the simulator, with a 200 calls/s
 * budget: no one-second window over the limit and no 60007, for first syncs and for unchanged
 * accounts; every account synced exactly once per sweep; resync requests picked up within about a
 * second; and a SIGKILLed replica's accounts synced by the others at once (not when its leases end),
 * while the survivors take back its share of the budget within 3 s, never above the limit.
 *
 * How much of the budget the replicas use is a speed, measured by `npm run bench:ci` (the replicas
 * scenario, bench/scenarios/replicas.ts), not asserted here: on a shared 2-core machine it says more
 * about the machine than about the mirror. The rate of each sweep is printed for the log.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import { addAccounts } from '../src/db/accounts.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { maxInWindow } from '../src/simulator/index.js';
import {
  controlRequest,
  type SimulatorCallLog,
  type SimulatorProcess,
  simulatorCallLog,
  spawnSimulator,
} from '../src/simulator/process.js';
import { buildCli } from './fixtures/build.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000777;
const KEY = 'replica-test-key';
const ACCOUNTS = 2400;
/**
 * Accounts the replicas sync before sweep 1's accounts are added, so those arrive at replicas that
 * are already running and sharing the budget, as new accounts do in a deployment.
 */
const WARM_ACCOUNTS = 1000;
/** Every account in `tim.accounts` once the measured accounts are added. */
const ALL_ACCOUNTS = WARM_ACCOUNTS + ACCOUNTS;
const LIMIT = 200;

/**
 * Issue #17: after a replica dies, each survivor's share of the budget is LIMIT / 2 within this of
 * its death (dropGraceMs after they see it gone), not after the settle rule's wait.
 */
const RECOVERY_MS = 3_000;

interface Replica {
  child: ChildProcess;
  adminUrl: Promise<string>;
  exited: Promise<number | null>;
  logs: string[];
}

describe('three replicas sharing one budget', () => {
  let database: TestDatabase;
  let sim: SimulatorProcess;
  let cli: string;
  const replicas: Replica[] = [];
  let env: Record<string, string>;
  let ids: string[];

  /** The simulator's calls since the last clear, over its control API (set once it is started). */
  let log: SimulatorCallLog;
  const simCalls = () => log.calls();
  const busiestSecond = async () => (await log.stats()).maxCallsInWindow;
  const clearCalls = () => log.clearCalls();

  function startReplica(n: number): Replica {
    const child = spawn(process.execPath, [cli, 'run'], {
      env: { ...process.env, ...env, REPLICA_ID: `replica-${n}` },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const logs: string[] = [];
    let resolveUrl: (u: string) => void = () => {};
    const adminUrl = new Promise<string>((r) => {
      resolveUrl = r;
    });
    createInterface({ input: child.stderr! }).on('line', (line) => {
      logs.push(line);
      try {
        const j = JSON.parse(line) as { msg?: string; admin?: string };
        if (j.msg === 'daemon started' && j.admin) resolveUrl(j.admin);
      } catch {
        // not JSON: kept in logs for the failure message
      }
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const replica = { child, adminUrl, exited, logs };
    replicas.push(replica);
    return replica;
  }

  // One small pool for the test's own polling: opening a connection per poll would fork a Postgres
  // backend five times a second and take CPU from the replicas being measured.
  let poll: ReturnType<typeof createDb>;
  async function syncedSince(since: Date): Promise<number> {
    const r = await poll
      .selectFrom('tim.accounts')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('last_synced_at', '>=', since)
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      if (await cond()) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(
      `timed out waiting for ${what}\n${replicas.map((r) => r.logs.slice(-5).join('\n')).join('\n---\n')}`,
    );
  }

  beforeAll(async () => {
    cli = await buildCli();
    database = await createTestDatabase('replicas');
    const db = createDb(database.url, { maxConnections: 2 });
    await migrateToLatest(db);
    // The simulator runs in its own process, as Tencent is not on our event loop: in this test's
    // process a stall stamped calls late, two seconds' worth into one. Its accounts have about one
    // friend each (a few odd ids among them); the first WARM_ACCOUNTS are the warm-up's.
    sim = await spawnSimulator(cli, {
      SIM_PORT: '0',
      SIM_ACCOUNTS: String(ALL_ACCOUNTS),
      SIM_MEAN_FRIENDS: '1',
      SIM_MAX_FRIENDS: '3',
      SIM_RATE_LIMIT: String(LIMIT),
      SIM_LATENCY_MS: '25',
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      LOG_LEVEL: 'warn',
    });
    log = simulatorCallLog(sim.baseUrl);
    const all = (await controlRequest<{ accounts: string[] }>(sim.baseUrl, 'GET', '/__sim/accounts'))
      .accounts;
    const warmIds = all.slice(0, WARM_ACCOUNTS);
    ids = all.slice(WARM_ACCOUNTS);
    // Only the warm-up's accounts for now: sweep 1 adds the measured ones to running replicas.
    await addAccounts(db, warmIds);
    await db.destroy();
    poll = createDb(database.url, { maxConnections: 1 });
    const baseUrl = sim.baseUrl;
    env = {
      DATABASE_URL: database.url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: baseUrl,
      TIM_RATE_LIMIT: String(LIMIT),
      // Three replicas, Postgres, the simulator and other test files share two cores in CI, and the
      // simulator stamps a call when its own event loop gets to it, at normal priority (the bench
      // raises it; tests do not). At 40 ms, CI saw 60007s in the warm-up even with the simulator in
      // its own process: seven, within 40 ms of each other. The allowance covers stamps that late,
      // which Tencent's would not be; what it costs in rate is the bench's to measure.
      TIM_RATE_JITTER_MS: '150',
      // SYNC_CONCURRENCY is left at its default (64). With 24 per replica the first syncs ran at
      // 92.3-94.0% with 1.8 cores busy (2 runs); with 64, at 95.8-96.0% with 1.56-1.71 (4 runs).
      SYNC_INTERVAL: '1h',
      // Longer than any sync takes on a loaded machine, or a slow sync's account would be claimed twice.
      SYNC_LEASE: '20s',
      HTTP_PORT: '0',
      LOG_LEVEL: 'info',
      LOG_SUMMARY_INTERVAL: '5s',
      SHUTDOWN_TIMEOUT: '5s',
      ADMIN_TOKEN: 'replica-test-admin-token',
    };
  }, 180_000);

  afterAll(async () => {
    for (const r of replicas) r.child.kill('SIGKILL');
    await Promise.all(replicas.map((r) => r.exited));
    sim?.child.kill('SIGTERM');
    await poll?.destroy();
    await database?.drop();
  });

  /**
   * Calls per second while work remained: the middle 80% of the calls, which leaves out the ramp (the
   * replicas raise their shares within a heartbeat of each other) and the tail (the last accounts run
   * out before the in-flight slots do).
   */
  function sustainedRate(calls: readonly { at: number }[]): number {
    const times = calls.map((c) => c.at).sort((a, b) => a - b);
    const lo = Math.floor(times.length * 0.1);
    const hi = Math.floor(times.length * 0.9);
    return (hi - lo) / ((times[hi]! - times[lo]!) / 1000);
  }

  /** `accounts` accounts each answered exactly once, no 60007, no one-second window over the limit. */
  async function expectCleanSweep(accounts: number): Promise<void> {
    const calls = await simCalls();
    const perAccount = new Map<string, number>();
    // Answered pulls per account (a call retried after a transient failure is still one sync).
    for (const c of calls)
      if (c.errorCode === 0) perAccount.set(c.account!, (perAccount.get(c.account!) ?? 0) + 1);
    expect(perAccount.size).toBe(accounts);
    expect([...perAccount.values()].filter((n) => n !== 1)).toEqual([]);
    expect(calls.filter((c) => c.errorCode === 60007)).toEqual([]);
    expect(await busiestSecond()).toBeLessThanOrEqual(LIMIT);
  }

  /**
   * Runs `sweep` (which must leave `accounts` accounts synced since it started), checks it was clean,
   * and prints its rate for the log: the rate is the bench's to judge (see the header).
   */
  async function checkedSweep(label: string, accounts: number, sweep: () => Promise<void>): Promise<void> {
    await sweep();
    const calls = await simCalls();
    const rate = sustainedRate(calls);
    console.log(
      `[replicas] ${label}: ${new Set(calls.map((c) => c.account)).size} accounts, ${calls.length} calls, ${rate.toFixed(1)} calls/s in the middle 80% (${((100 * rate) / LIMIT).toFixed(1)}% of ${LIMIT}), busiest second ${await busiestSecond()}`,
    );
    await expectCleanSweep(accounts);
  }

  /** The last summary lines of each replica, for a failure message. */
  function summaries(): string {
    return replicas
      .map((r) =>
        r.logs
          .filter((l) => l.includes('sync summary'))
          .slice(-3)
          .join('\n'),
      )
      .join('\n');
  }

  /** `resync --all`, then waits until every account has synced since. */
  async function resyncAll(): Promise<void> {
    const since = new Date();
    const args = ['resync', '--all'];
    expect(await main(args, { env, log: pino({ level: 'silent' }), out: () => {} })).toBe(0);
    await waitFor(args.join(' '), async () => (await syncedSince(since)) === ALL_ACCOUNTS, 90_000);
  }

  it('sweep 1: every account exactly once, never above the limit', async () => {
    const warmFrom = new Date();
    for (let n = 1; n <= 3; n++) startReplica(n);
    await waitFor('the warm-up', async () => (await syncedSince(warmFrom)) === WARM_ACCOUNTS, 90_000);
    await expectCleanSweep(WARM_ACCOUNTS);

    // First syncs: the measured accounts arrive at running replicas, which pick them up within
    // their idle wait. Every account is read and written in full, the heaviest work per call.
    await clearCalls();
    const started = new Date();
    const addMeasured = async () => {
      await addAccounts(poll, ids);
      await waitFor('the first sweep', async () => (await syncedSince(started)) === ACCOUNTS, 90_000);
    };
    await checkedSweep('sweep 1, first syncs', ACCOUNTS, addMeasured);

    // The steady state of a deployment: every account due again and unchanged, one call each.
    await clearCalls();
    await checkedSweep('sweep 1, unchanged', ALL_ACCOUNTS, () => resyncAll());

    // Health, readiness and metrics of a replica.
    const admin = await replicas[0]!.adminUrl;
    expect((await fetch(`${admin}/healthz`)).status).toBe(200);
    const ready = await fetch(`${admin}/readyz`);
    expect(ready.status).toBe(200);
    const metrics = await (await fetch(`${admin}/metrics`)).text();
    expect(metrics).toMatch(/tim_mirror_calls_total\{[^}]*outcome="ok"[^}]*\} \d+/);
    // Nothing was refused for being too frequent, so no complaint was counted.
    expect(metrics).toMatch(/^tim_mirror_rate_complaints_total\{verdict="slip"\} 0$/m);
    expect(metrics).toMatch(/^tim_mirror_rate_complaints_total\{verdict="slowdown"\} 0$/m);
  });

  it("sweep 2: a resync starts within ~1 s; a SIGKILLed replica's accounts and budget share are taken over within seconds", async () => {
    await clearCalls();
    const requested = new Date();
    const r = await main(['resync', '--all'], { env, log: pino({ level: 'silent' }), out: () => {} });
    expect(r).toBe(0);
    await waitFor('the first resync call', async () => (await simCalls()).length > 0, 5_000);
    expect((await simCalls())[0]!.at - requested.getTime()).toBeLessThan(1_500);

    await waitFor(
      'a third of the sweep',
      async () => (await syncedSince(requested)) > ALL_ACCOUNTS / 3,
      30_000,
    );
    const victim = replicas[1]!;
    // The database's clock at this read: the victim may still finish some of these accounts in the
    // moment before the kill lands, and those need no takeover.
    const leased = await poll
      .selectFrom('tim.accounts')
      .select(['account_id', sql<Date>`now()`.as('at')])
      .where('lease_owner', '=', 'replica-2')
      .execute();
    const victimLeases = leased.map((r) => r.account_id);
    const leasesReadAt = leased[0]?.at ?? new Date();
    const survivorAdmins = await Promise.all([replicas[0]!.adminUrl, replicas[2]!.adminUrl]);
    victim.child.kill('SIGKILL');
    const killedAt = Date.now();
    // Each survivor's share as its own /metrics reports it, polled from the kill on.
    const sharesBack = survivorsTakeTheBudget(survivorAdmins, killedAt);
    expect(await victim.exited).toBe(null);
    expect(victimLeases.length).toBeGreaterThan(0);

    // Issue #17: its leases (SYNC_LEASE is 20 s here) are free as soon as its session is gone, and
    // its accounts are synced by the others within this sweep.
    const leasesOf = async (owner: string) =>
      Number(
        (
          await poll
            .selectFrom('tim.accounts')
            .select((eb) => eb.fn.countAll<number>().as('n'))
            .where('lease_owner', '=', owner)
            .executeTakeFirstOrThrow()
        ).n,
      );
    await waitFor(
      "the killed replica's leases freed",
      async () => (await leasesOf('replica-2')) === 0,
      10_000,
    );
    const freedMs = Date.now() - killedAt;
    await waitFor(
      "the killed replica's accounts, synced by the others",
      async () =>
        Number(
          (
            await poll
              .selectFrom('tim.accounts')
              .select((eb) => eb.fn.countAll<number>().as('n'))
              .where('account_id', 'in', victimLeases)
              .where('last_synced_at', '>=', leasesReadAt)
              .executeTakeFirstOrThrow()
          ).n,
        ) === victimLeases.length,
      30_000,
    );
    const takeoverMs = Date.now() - killedAt;
    await waitFor('the second sweep', async () => (await syncedSince(requested)) === ALL_ACCOUNTS, 90_000);
    const calls = await simCalls();
    expect(await busiestSecond()).toBeLessThanOrEqual(LIMIT);
    expect(calls.filter((c) => c.errorCode === 60007)).toEqual([]);
    expect(
      maxInWindow(
        calls.map((c) => c.at),
        1000,
      ),
    ).toBeLessThanOrEqual(LIMIT);

    // The survivors take back its share of the budget within RECOVERY_MS: both at LIMIT / 2.
    const back = await sharesBack;
    // Calls per second after the kill, for the log: how fast the pipe refills is the bench's to judge.
    const times = calls.map((c) => c.at).sort((a, b) => a - b);
    const inSecondBefore = (t: number) => {
      let n = 0;
      for (const x of times) if (x > t - 1000 && x <= t) n++;
      return n;
    };
    const perSecond = Array.from({ length: 8 }, (_, i) => inSecondBefore(killedAt + (i + 1) * 1000));
    console.log(
      `[replicas] SIGKILL of replica-2 (holding ${victimLeases.length} leases): leases free ${(freedMs / 1000).toFixed(1)} s and its accounts synced by the others ${(takeoverMs / 1000).toFixed(1)} s after the kill (SYNC_LEASE 20 s); survivors' shares ${back.shares.join(' + ')} ${back.at === undefined ? 'never at the whole budget' : `at ${((back.at - killedAt) / 1000).toFixed(2)} s`}; calls/s: ${inSecondBefore(killedAt)} in the second before the kill, then per second ${perSecond.join(', ')}`,
    );
    expect(freedMs).toBeLessThan(5_000);
    expect(takeoverMs).toBeLessThan(20_000);
    expect(back.shares, `replica summaries:\n${summaries()}`).toEqual([LIMIT / 2, LIMIT / 2]);
    expect(back.at! - killedAt).toBeLessThanOrEqual(RECOVERY_MS);
  });

  /**
   * Polls the survivors' `call_share_per_second` until both hold half the budget (or 10 s passed),
   * and says when that was seen and what they last reported.
   */
  async function survivorsTakeTheBudget(
    adminUrls: string[],
    killedAt: number,
  ): Promise<{ at: number | undefined; shares: number[] }> {
    const shareOf = async (url: string) =>
      Number(
        /^tim_mirror_call_share_per_second (\S+)$/m.exec(await (await fetch(`${url}/metrics`)).text())?.[1],
      );
    let shares: number[] = [];
    while (Date.now() - killedAt < 10_000) {
      shares = await Promise.all(adminUrls.map(shareOf));
      if (shares.every((x) => x === LIMIT / 2)) return { at: Date.now(), shares };
      await new Promise((r) => setTimeout(r, 50));
    }
    return { at: undefined, shares };
  }

  it('SIGTERM: the others stop cleanly, releasing leases and leaving the registry', async () => {
    const alive = [replicas[0]!, replicas[2]!];
    for (const r of alive) r.child.kill('SIGTERM');
    expect(await Promise.all(alive.map((r) => r.exited))).toEqual([0, 0]);
    const db = createDb(database.url, { maxConnections: 1 });
    try {
      const rows = await db
        .selectFrom('tim.replicas')
        .select('replica_id')
        .where('expires_at', '>', new Date())
        .execute();
      expect(rows.map((x) => x.replica_id)).not.toContain('replica-1');
      expect(rows.map((x) => x.replica_id)).not.toContain('replica-3');
      const leased = await db
        .selectFrom('tim.accounts')
        .select('account_id')
        .where('lease_owner', 'in', ['replica-1', 'replica-3'])
        .execute();
      expect(leased).toEqual([]);
    } finally {
      await db.destroy();
    }
  });
});
