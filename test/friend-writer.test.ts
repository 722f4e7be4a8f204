/**
 * A FriendWriter's state is its own (issue #18: no module-level state). Two writers on one database
 * handle each bound their applies by their own `applyConcurrency`: a gate or first-sync queue kept
 * per database handle (or per module) would make them share one bound.
 *
 * The applies are held inside their transactions by a lock on `tim.friends`, so Postgres itself
 * counts the transactions running at once: each one is a backend waiting for that lock.
 */
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { passDepsFrom } from '../src/app.js';
import { ConfigError, loadSyncConfig } from '../src/config.js';
import { addAccounts } from '../src/db/accounts.js';
import { FriendWriter } from '../src/db/friend-writer.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { readMirror } from '../src/db/mirror-read.js';
import { createDb } from '../src/db/pool.js';
import type { AccountSnapshot, ApplyResult } from '../src/db/snapshot-types.js';
import { createLogger } from '../src/log.js';
import { waitUntil } from './fixtures/daemon-process.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

let database: TestDatabase;
let db: ReturnType<typeof createDb>;

beforeAll(async () => {
  database = await createTestDatabase('friend_writer');
  // Room for every apply the writers below could start, were they to share no bound at all.
  db = createDb(database.url, { maxConnections: 16 });
  await migrateToLatest(db);
});
afterAll(async () => {
  await db?.destroy();
  await database?.drop();
});
beforeEach(async () => {
  await db.deleteFrom('tim.accounts').execute();
});

/** A pull of one friend; `firstSync` marks it as an account's first, which goes by COPY. */
function snapshot(accountId: string, firstSync: boolean): AccountSnapshot {
  return {
    accountId,
    neverSynced: firstSync,
    baseStandardSequence: null,
    baseCustomSequence: null,
    standardSequence: 1,
    customSequence: 1,
    standard: {
      friends: [
        { friendId: 'f', remark: null, groups: null, addSource: null, addWording: null, addTime: null },
      ],
      tags: [],
    },
  };
}

/** Transactions that wrote the account rows of `ids`: rows written by one transaction share its xmin. */
async function transactionsOf(ids: string[]): Promise<number> {
  const res = await sql<{ n: number }>`
    SELECT count(DISTINCT xmin::text)::int AS n FROM tim.accounts WHERE account_id = ANY(${ids})`.execute(db);
  return res.rows[0]!.n;
}

/** Backends of the test database waiting for a lock: the applies the held lock stopped. */
async function waitingApplies(): Promise<number> {
  const res = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock'`.execute(db);
  return res.rows[0]!.n;
}

/**
 * Waits until `n` applies are held, then gives any further apply time to start too (an apply let
 * through in excess would take its connection and block within this time), and returns the count.
 */
async function heldApplies(n: number): Promise<number> {
  await waitUntil(
    `${n} applies held`,
    async () => (await waitingApplies()) >= n,
    10_000,
    async () => String(await waitingApplies()),
  );
  await new Promise((r) => setTimeout(r, 500));
  return waitingApplies();
}

describe('FriendWriter', () => {
  for (const [kind, firstSync] of [
    ['first syncs (COPY)', true],
    ['general applies', false],
  ] as const) {
    it(`two writers on one database each honour their own applyConcurrency: ${kind}`, async () => {
      const aIds = Array.from({ length: 6 }, (_, i) => `a${i}`);
      const bIds = Array.from({ length: 6 }, (_, i) => `b${i}`);
      await addAccounts(db, [...aIds, ...bIds]);
      const one = new FriendWriter(db, { applyConcurrency: 1 });
      const two = new FriendWriter(db, { applyConcurrency: 2 });

      // Holds every apply at its first write of friend rows, inside its transaction.
      const holder = new pg.Client({ connectionString: database.url });
      await holder.connect();
      const applies: Promise<ApplyResult>[] = [];
      try {
        await holder.query('BEGIN; LOCK TABLE tim.friends IN SHARE MODE');
        applies.push(...aIds.map((id) => one.apply(snapshot(id, firstSync))));
        expect(await heldApplies(1)).toBe(1);
        applies.push(...bIds.map((id) => two.apply(snapshot(id, firstSync))));
        // 1 + 2: one shared bound would give 1, 2 or 4 (the old fixed default), never 3.
        expect(await heldApplies(3)).toBe(3);
      } finally {
        await holder.query('ROLLBACK').catch(() => {});
        await holder.end();
      }
      const results = await Promise.all(applies);
      expect(results.every((r) => r.friendCount === 1 && r.friendsUpserted === 1)).toBe(true);
      for (const id of [...aIds, ...bIds]) {
        expect(
          (await readMirror(db, id)).map((f) => f.friendId),
          id,
        ).toEqual(['f']);
      }
    });
  }

  it('refuses an applyConcurrency or firstSyncBatch that is not a positive whole number', () => {
    for (const bad of [0, -1, 1.5, Number.NaN]) {
      expect(() => new FriendWriter(db, { applyConcurrency: bad })).toThrow(/applyConcurrency/);
      expect(() => new FriendWriter(db, { firstSyncBatch: bad })).toThrow(/firstSyncBatch/);
    }
  });

  it('shares transactions among first syncs waiting together, and none with firstSyncBatch 1', async () => {
    const transactions = async (writer: FriendWriter, prefix: string) => {
      const ids = Array.from({ length: 24 }, (_, i) => `${prefix}${i}`);
      await addAccounts(db, ids);
      await Promise.all(ids.map((id) => writer.apply(snapshot(id, true))));
      for (const id of ids)
        expect(
          (await readMirror(db, id)).map((f) => f.friendId),
          id,
        ).toEqual(['f']);
      return transactionsOf(ids);
    };
    // Each writer's accounts queue behind one held apply slot, then go when it is free.
    expect(await transactions(new FriendWriter(db, { applyConcurrency: 1 }), 'shared')).toBeLessThan(24);
    expect(
      await transactions(new FriendWriter(db, { applyConcurrency: 1, firstSyncBatch: 1 }), 'alone'),
    ).toBe(24);
  });
});

describe('SYNC_APPLY_CONCURRENCY', () => {
  it('defaults to 4, takes 1 to 256, refuses the rest with the setting named, and reaches the pass', () => {
    expect(loadSyncConfig({}).applyConcurrency).toBe(4);
    expect(loadSyncConfig({ SYNC_APPLY_CONCURRENCY: '12' }).applyConcurrency).toBe(12);
    for (const bad of ['0', '257', 'two', '1.5']) {
      expect(() => loadSyncConfig({ SYNC_APPLY_CONCURRENCY: bad })).toThrow(ConfigError);
      expect(() => loadSyncConfig({ SYNC_APPLY_CONCURRENCY: bad })).toThrow(/SYNC_APPLY_CONCURRENCY/);
    }
    const calls = { client: {} as never, limiter: {} as never };
    const deps = passDepsFrom(
      db,
      calls,
      loadSyncConfig({ SYNC_APPLY_CONCURRENCY: '3' }),
      createLogger('silent'),
    );
    expect(deps.applyConcurrency).toBe(3);
  });
});
