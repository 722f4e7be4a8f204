/**
 * The process part `run` and `sync` share (src/daemon.ts), against real Postgres: started, it
 * registers and takes its share of the budget; stopped, it gives back its leases while it is still
 * a live replica, then leaves the registry and closes its call path; stopping twice (or before
 * starting) is safe. No call reaches Tencent here, so none is faked.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadSyncConfig, loadTimConfig } from '../src/config.js';
import { openDaemon } from '../src/daemon.js';
import { addAccounts } from '../src/db/accounts.js';
import { claimAccount } from '../src/db/leases.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { createLogger } from '../src/log.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

let database: TestDatabase;
let db: ReturnType<typeof createDb>;
const log = createLogger('silent');
const settings = {
  tim: loadTimConfig({
    TIM_SDKAPPID: '1400000001',
    TIM_SECRET_KEY: 'daemon-test-key',
    // Never called: nothing here syncs.
    TIM_BASE_URL: 'http://127.0.0.1:9',
    TIM_RATE_LIMIT: '50',
  }),
  sync: loadSyncConfig({}),
};

beforeAll(async () => {
  database = await createTestDatabase('daemon');
  db = createDb(database.url, { maxConnections: 4 });
  await migrateToLatest(db);
  // Notes, for every lease given back, whether its owner was a live replica at that moment.
  await sql`CREATE TABLE public.lease_releases (account_id text, owner text, owner_live boolean)`.execute(db);
  await sql`
    CREATE FUNCTION public.note_lease_release() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO public.lease_releases VALUES (OLD.account_id, OLD.lease_owner,
        EXISTS (SELECT 1 FROM tim.live_replicas l WHERE l.replica_id = OLD.lease_owner));
      RETURN NEW;
    END $$`.execute(db);
  await sql`
    CREATE TRIGGER note_lease_release AFTER UPDATE OF lease_owner ON tim.accounts FOR EACH ROW
    WHEN (OLD.lease_owner IS NOT NULL AND NEW.lease_owner IS NULL)
    EXECUTE FUNCTION public.note_lease_release()`.execute(db);
});
afterAll(async () => {
  await db?.destroy();
  await database?.drop();
});
beforeEach(async () => {
  await db.deleteFrom('tim.accounts').execute();
  await db.deleteFrom('tim.replicas').execute();
  await sql`DELETE FROM public.lease_releases`.execute(db);
});

async function until(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Ids of the registry rows, live or not. */
async function registryRows(): Promise<string[]> {
  return (await db.selectFrom('tim.replicas').select('replica_id').execute()).map((r) => r.replica_id);
}

async function leaseOwners(): Promise<(string | null)[]> {
  const rows = await db.selectFrom('tim.accounts').select('lease_owner').orderBy('account_id').execute();
  return rows.map((r) => r.lease_owner);
}

describe('daemon', () => {
  it('stop gives back its leases while still registered, then leaves the registry and closes its calls; stopping again is safe', async () => {
    await addAccounts(db, ['a1', 'a2', 'a3']);
    const daemon = openDaemon({ log }, db, settings, { oneShot: true });
    expect(daemon.replicaId).toMatch(/^sync-/);
    expect(daemon.metrics).toBeUndefined();
    daemon.start();
    daemon.start();
    // Alone, a one-shot pass takes the whole budget at its first heartbeat.
    await until(
      'registered at the whole budget',
      () => daemon.session.registered && daemon.calls.limiter.rate === 50,
    );
    expect(await registryRows()).toEqual([daemon.replicaId]);
    for (const id of ['a1', 'a2']) {
      expect(await claimAccount(db, id, { owner: daemon.replicaId, leaseMs: 60_000 })).toMatchObject({
        accountId: id,
      });
    }

    const first = daemon.stop();
    const second = daemon.stop();
    expect(await Promise.all([first, second])).toEqual([2, 2]);
    expect(await daemon.stop()).toBe(2);

    const released = await sql<{ account_id: string; owner: string; owner_live: boolean }>`
      SELECT * FROM public.lease_releases ORDER BY account_id`.execute(db);
    expect(released.rows).toEqual([
      { account_id: 'a1', owner: daemon.replicaId, owner_live: true },
      { account_id: 'a2', owner: daemon.replicaId, owner_live: true },
    ]);
    expect(await leaseOwners()).toEqual([null, null, null]);
    expect(await registryRows()).toEqual([]);
    expect(daemon.session.registered).toBe(false);
    await expect(daemon.calls.limiter.schedule(async () => 'called')).rejects.toThrow('limiter stopped');
  });

  it('a daemon (not one-shot) keeps its id and metrics, waits for the others before calling, and stops cleanly', async () => {
    const daemon = openDaemon({ log }, db, settings, { replicaId: 'daemon-test-run', metrics: true });
    expect((await daemon.metrics.render()).body).toMatch(/^tim_mirror_call_budget_per_second 50$/m);
    daemon.start();
    await until('registered', () => daemon.session.registered);
    expect(await registryRows()).toEqual(['daemon-test-run']);
    // No fast start: a daemon raises its rate only once every replica has agreed for a while.
    expect(daemon.calls.limiter.rate).toBe(0);
    expect(await daemon.stop()).toBe(0);
    expect(await registryRows()).toEqual([]);
  });

  it('waitRegistered says whether the first heartbeat came, and ends with its wait, its signal or the daemon', async () => {
    const daemon = openDaemon({ log }, db, settings);
    try {
      expect(await daemon.waitRegistered(50)).toBe(false);
      expect(await daemon.waitRegistered(60_000, AbortSignal.abort())).toBe(false);
      daemon.start();
      expect(await daemon.waitRegistered(10_000)).toBe(true);
    } finally {
      await daemon.stop();
    }
    expect(await daemon.waitRegistered(60_000)).toBe(false);
  });

  it('stop before start registers nothing and closes the call path; start after stop does nothing', async () => {
    const daemon = openDaemon({ log }, db, settings);
    expect(await daemon.stop()).toBe(0);
    await expect(daemon.calls.limiter.schedule(async () => 'called')).rejects.toThrow('limiter stopped');
    daemon.start();
    await new Promise((r) => setTimeout(r, 200));
    expect(daemon.session.registered).toBe(false);
    expect(await registryRows()).toEqual([]);
  });
});
