/**
 * `sync` and leases (issue #17): exit 0 means every selected account was synced by this command,
 * started after it started. A gone replica's leases do not hold it up at all; an account a live
 * replica holds is waited for and then synced here; one still held after SYNC_LEASE (and a margin)
 * makes it exit 1 naming the account. In-process `main`, the simulator, real Postgres.
 */
import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import { addAccounts } from '../src/db/accounts.js';
import { claimDueAccounts, releaseLeases } from '../src/db/leases.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { ReplicaSession } from '../src/db/replicas.js';
import { generateApp, Simulator } from '../src/simulator/index.js';
import { ReplicaBudget } from '../src/sync/budget.js';
import { sleep } from '../src/sync/limiter.js';
import { diffAccount } from '../src/verify.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000171;
const KEY = 'sync-leases-key';
const ACCOUNTS = 12;

describe('sync and leases', () => {
  let database: TestDatabase;
  let db: ReturnType<typeof createDb>;
  let sim: Simulator;
  let env: Record<string, string>;
  const closers: Array<() => Promise<void>> = [];
  let seed = 1;

  async function sync(extraEnv: Record<string, string> = {}, signal?: AbortSignal) {
    const out: string[] = [];
    const started = Date.now();
    const code = await main(['sync', '--all'], {
      env: { ...env, ...extraEnv },
      log: pino({ level: 'silent' }),
      out: (l) => out.push(l),
      errOut: (t) => out.push(t),
      ...(signal ? { signal } : {}),
    });
    return { code, out: out.join('\n'), ms: Date.now() - started };
  }

  /**
   * A replica process's registration and budget, run by this test: it heartbeats and agrees on the
   * replica count like a daemon (so `sync` gets its share), and is live until closed.
   */
  async function replica(id: string) {
    const s = new ReplicaSession(db, { replicaId: id, hostname: 'test', pid: 1, ttlMs: 5_000 });
    const budget = new ReplicaBudget({
      replicaId: id,
      limit: 200,
      heartbeat: (peers, cps) => s.heartbeat(peers, cps),
      setRate: () => {},
      now: () => performance.now(),
      sleep,
    });
    const stop = new AbortController();
    const running = budget.run(stop.signal);
    await s.whenRegistered();
    const close = async () => {
      stop.abort();
      await running;
      await s.close();
    };
    closers.push(close);
    /** Dies as a SIGKILLed process does: no more heartbeats, and the server ends its session. */
    const kill = async () => {
      stop.abort();
      await running;
      await sql`SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN tim.replicas r
                  ON ((l.classid::bigint << 32) | l.objid::bigint) = r.lock_key
                WHERE l.locktype = 'advisory' AND r.replica_id = ${id}`.execute(db);
    };
    return { session: s, close, kill };
  }

  /** Leases `ids` (or every account) to `owner` for five minutes, as a daemon's claim does. */
  async function lease(owner: string, ids?: string[]) {
    await db.updateTable('tim.accounts').set({ next_sync_at: sql`now()` }).execute();
    const claimed = await claimDueAccounts(db, { owner, limit: 1_000, leaseMs: 300_000 });
    if (ids)
      await db
        .updateTable('tim.accounts')
        .set({ lease_owner: null, lease_expires_at: null, leased_at: null })
        .where('lease_owner', '=', owner)
        .where('account_id', 'not in', ids)
        .execute();
    return ids ?? claimed.map((c) => c.accountId);
  }

  async function syncedSince(since: Date): Promise<string[]> {
    const rows = await db
      .selectFrom('tim.accounts')
      .select('account_id')
      .where('last_synced_at', '>=', since)
      .orderBy('account_id')
      .execute();
    return rows.map((r) => r.account_id);
  }

  async function diffs(): Promise<string[]> {
    const out: string[] = [];
    for (const id of sim.store.accountIds())
      out.push(...(await diffAccount(db, id, sim.store.truth(id).friends)));
    return out;
  }

  beforeAll(async () => {
    database = await createTestDatabase('sync_leases');
    db = createDb(database.url, { maxConnections: 4 });
    await migrateToLatest(db);
    const store = generateApp({ accounts: ACCOUNTS, meanFriends: 10, maxFriends: 30, seed: 17 });
    await addAccounts(db, store.accountIds());
    sim = new Simulator({ store, sdkAppId: APP, secretKey: KEY, rateLimit: 200 });
    env = {
      DATABASE_URL: database.url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: await sim.listen(),
      TIM_RATE_LIMIT: '200',
      SYNC_LEASE: '5m',
    };
    expect((await sync()).code).toBe(0);
  }, 60_000);

  afterAll(async () => {
    for (const close of closers) await close();
    await sim?.close();
    await db?.destroy();
    await database?.drop();
  });

  beforeEach(() => {
    sim.store.mutateRandom({ fraction: 0.5, seed: seed++ });
  });

  it("a gone replica's leases do not hold sync up: every account synced, exit 0, long before SYNC_LEASE", async () => {
    const dead = await replica('daemon-killed');
    const held = await lease('daemon-killed');
    expect(held.length).toBe(ACCOUNTS);
    // Its process is SIGKILLed: the server ends its session; its row stays unexpired for a while.
    await dead.kill();
    const since = new Date();
    const r = await sync();
    expect(r.code, r.out).toBe(0);
    expect(r.ms).toBeLessThan(5_000); // SYNC_LEASE is 5 minutes
    expect(await syncedSince(since)).toEqual([...sim.store.accountIds()].sort());
    expect(await diffs()).toEqual([]);
  });

  it('waits for an account a live replica holds, then syncs it itself, and exits 0', async () => {
    const live = await replica('daemon-busy');
    const held = await lease('daemon-busy', sim.store.accountIds().slice(0, 2));
    const since = new Date();
    const running = sync();
    // The live replica finishes its syncs a moment later and releases the leases.
    await new Promise((r) => setTimeout(r, 1_500));
    const releasedAt = new Date();
    await releaseLeases(db, 'daemon-busy');
    const r = await running;
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain('2 of them after waiting for a running replica');
    expect(await syncedSince(since)).toEqual([...sim.store.accountIds()].sort());
    // Synced by this command after the replica let go, not counted from the replica's sync.
    expect(await syncedSince(releasedAt)).toEqual(expect.arrayContaining(held));
    expect(await diffs()).toEqual([]);
    await live.close();
  });

  it('exits 1 naming the account when a live replica still holds it after SYNC_LEASE and a margin', async () => {
    await replica('daemon-stuck');
    const [stuck] = await lease('daemon-stuck', [sim.store.accountIds()[3]!]);
    const since = new Date();
    const r = await sync({ SYNC_LEASE: '5s' });
    expect(r.code, r.out).toBe(1);
    expect(r.out).toContain('1 NOT synced');
    expect(r.out).toContain(`${stuck} (daemon-stuck)`);
    expect(r.ms).toBeGreaterThanOrEqual(5_000);
    expect(r.ms).toBeLessThan(20_000);
    // Everything else was synced all the same.
    expect(await syncedSince(since)).toEqual([...sim.store.accountIds()].filter((id) => id !== stuck).sort());
  }, 30_000);

  it('stops waiting on SIGINT, with exit 1', async () => {
    await releaseLeases(db, 'daemon-stuck');
    await lease('daemon-stuck', [sim.store.accountIds()[4]!]);
    const since = new Date();
    const ac = new AbortController();
    const running = sync({}, ac.signal);
    // Interrupted while it waits for the last account (SYNC_LEASE is 5 minutes).
    while ((await syncedSince(since)).length < ACCOUNTS - 1) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 500));
    const interruptedAt = Date.now();
    ac.abort();
    const r = await running;
    expect(r.code, r.out).toBe(1);
    expect(r.out).toContain(`synced ${ACCOUNTS - 1}/${ACCOUNTS}`);
    expect(r.out).toContain('1 not started');
    expect(Date.now() - interruptedAt).toBeLessThan(2_000);
  }, 30_000);
});
