/**
 * Issue #17: a dead process's leases do not outlive it. `friend-mirror run` daemons are SIGKILLed
 * (several right after they start, as a crash-looping container does, and one in the middle of a
 * pass); SYNC_LEASE is 5 minutes, so waiting for the leases to run out would take that long.
 * - `sync --all` with no daemon alive syncs every account and exits 0, the mirror equal to the source,
 *   in seconds;
 * - a `run` started after a kill frees the dead daemon's leases within 10 s of its start (at its
 *   first claim) and syncs those accounts once its budget share has settled.
 */
import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import { addAccounts, requestResync } from '../src/db/accounts.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { generateApp, Simulator } from '../src/simulator/index.js';
import { diffAccount } from '../src/verify.js';
import { buildCli } from './fixtures/build.js';
import { type DaemonProcess, spawnDaemon, waitUntil } from './fixtures/daemon-process.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000417;
const KEY = 'takeover-test-key';
const ACCOUNTS = 400;
const STARTUP_KILLS = 6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a dead daemon’s leases', () => {
  let database: TestDatabase;
  let db: ReturnType<typeof createDb>;
  let sim: Simulator;
  let cli: string;
  let env: Record<string, string>;
  const daemons: DaemonProcess[] = [];

  async function diffs(): Promise<string[]> {
    const out: string[] = [];
    for (const id of sim.store.accountIds())
      out.push(...(await diffAccount(db, id, sim.store.truth(id).friends)));
    return out;
  }

  async function leasesHeld(): Promise<{ owner: string; account_id: string }[]> {
    const r = await sql<{ owner: string; account_id: string }>`
      SELECT lease_owner AS owner, account_id FROM tim.accounts WHERE lease_owner IS NOT NULL`.execute(db);
    return r.rows;
  }

  async function syncedSince(since: Date, ids?: readonly string[]): Promise<number> {
    let q = db
      .selectFrom('tim.accounts')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('last_synced_at', '>=', since);
    if (ids) q = q.where('account_id', 'in', [...ids]);
    return Number((await q.executeTakeFirstOrThrow()).n);
  }

  async function kill(d: DaemonProcess): Promise<Date> {
    d.child.kill('SIGKILL');
    await d.exited;
    return new Date();
  }

  beforeAll(async () => {
    cli = await buildCli();
    database = await createTestDatabase('takeover');
    db = createDb(database.url, { maxConnections: 2 });
    await migrateToLatest(db);
    const store = generateApp({ accounts: ACCOUNTS, meanFriends: 20, maxFriends: 60, seed: 17 });
    await addAccounts(db, store.accountIds());
    sim = new Simulator({ store, sdkAppId: APP, secretKey: KEY, rateLimit: 200, latencyMs: [5, 20] });
    env = {
      DATABASE_URL: database.url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: await sim.listen(),
      TIM_RATE_LIMIT: '200',
      SYNC_INTERVAL: '1h',
      // Five minutes: nothing here may wait for a lease to run out.
      SYNC_LEASE: '5m',
      HTTP_PORT: '0',
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'json',
      SHUTDOWN_TIMEOUT: '10s',
    };
  }, 120_000);

  afterAll(async () => {
    for (const d of daemons) if (d.running()) d.child.kill('SIGKILL');
    await Promise.all(daemons.map((d) => d.exited));
    await sim?.close();
    await db?.destroy();
    await database?.drop();
  });

  it('sync --all after daemons were SIGKILLed right after start: every account synced, exit 0, in seconds', async () => {
    for (let i = 0; i < STARTUP_KILLS; i++) {
      const d = spawnDaemon(cli, env);
      daemons.push(d);
      await d.adminUrl;
      await sleep(300 + Math.random() * 800);
      await kill(d);
    }
    // The dead daemons claimed accounts (their limiter was still waiting for its budget share).
    const held = await leasesHeld();
    expect(held.length, 'the killed daemons held no leases: the test tests nothing').toBeGreaterThan(0);
    sim.store.mutateRandom({ fraction: 0.05, seed: 5 });

    const out: string[] = [];
    const started = new Date();
    const code = await main(['sync', '--all'], {
      env,
      log: pino({ level: 'silent' }),
      out: (l) => out.push(l),
    });
    const seconds = (Date.now() - started.getTime()) / 1000;
    console.log(
      `[takeover] ${STARTUP_KILLS} daemons killed at start left ${held.length} leases (${new Set(held.map((h) => h.owner)).size} owners); sync --all: ${out.join(' | ')} (exit ${code}, ${seconds.toFixed(1)} s)`,
    );
    expect(code, out.join('\n')).toBe(0);
    expect(await syncedSince(started)).toBe(ACCOUNTS);
    expect(await diffs()).toEqual([]);
    expect(seconds).toBeLessThan(60); // SYNC_LEASE is 300 s
    expect(await leasesHeld()).toEqual([]);
  }, 180_000);

  it('a run started after a daemon was SIGKILLed mid-pass takes the dead one’s accounts within 10 s', async () => {
    sim.store.mutateRandom({ fraction: 0.05, seed: 6 });
    const requested = new Date();
    await requestResync(db, { all: true }, { full: false });
    const a = spawnDaemon(cli, env);
    daemons.push(a);
    const callsBefore = sim.stats().calls;
    await a.waitForLog('a non-zero budget share', (j) => typeof j.rate === 'number' && j.rate > 0, 30_000);
    await waitUntil(
      'the first daemon’s calls',
      () => sim.stats().calls - callsBefore >= 40,
      20_000,
      () => a.tail(),
      5,
    );
    const killedAt = await kill(a);
    const leases = await leasesHeld();
    const held = leases.map((h) => h.account_id);
    const deadOwner = leases[0]?.owner ?? '';
    expect(held.length, 'the killed daemon held no leases').toBeGreaterThan(0);

    const b = spawnDaemon(cli, env);
    daemons.push(b);
    const bStarted = Date.now();
    // Freed by the new daemon at its first claim (the dead one's leases would end in 5 minutes)...
    await waitUntil(
      'the dead daemon’s leases freed by the new one',
      async () => {
        const r = await sql<{ n: number }>`
          SELECT count(*)::int AS n FROM tim.accounts
          WHERE account_id = ANY(${held}::text[])
            AND lease_owner IS DISTINCT FROM ${deadOwner}`.execute(db);
        return r.rows[0]?.n === held.length;
      },
      10_000,
      () => b.tail(),
      100,
    );
    const claimMs = Date.now() - bStarted;
    // ...and synced once its budget share has settled (5 s for a replica that joins).
    await waitUntil(
      'the dead daemon’s accounts synced by the new one',
      async () => (await syncedSince(killedAt, held)) === held.length,
      15_000,
      () => b.tail(),
      100,
    );
    const takeoverMs = Date.now() - bStarted;
    await waitUntil(
      'every account synced',
      async () => (await syncedSince(requested)) === ACCOUNTS,
      60_000,
      () => b.tail(),
    );
    b.child.kill('SIGTERM');
    expect((await b.exited).code, b.tail()).toBe(0);
    console.log(
      `[takeover] daemon killed mid-pass held ${held.length} leases; a new run freed them ${(claimMs / 1000).toFixed(1)} s and synced them ${(takeoverMs / 1000).toFixed(1)} s after its start (budget settle 5 s included)`,
    );
    expect(await diffs()).toEqual([]);
  }, 120_000);
});
