/**
 * Leases belong to live replicas (issue #17): a replica is live while its registry row is unexpired
 * and its registry session (which holds an advisory lock) is alive. A gone replica's leases are free
 * at once, to `claimAccount` and to `releaseDeadLeases`; a live one's are not. Against real Postgres.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { addAccounts } from '../src/db/accounts.js';
import { FriendWriter } from '../src/db/friend-writer.js';
import { claimAccount, claimDueAccounts, releaseDeadLeases } from '../src/db/leases.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { readMirror } from '../src/db/mirror-read.js';
import { createDb } from '../src/db/pool.js';
import { heartbeat, liveReplicas, ReplicaSession } from '../src/db/replicas.js';
import type { AccountSnapshot } from '../src/db/snapshot-types.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

let database: TestDatabase;
let db: ReturnType<typeof createDb>;
/** The writer every apply of this file goes through, as one process's. */
let writer: FriendWriter;

beforeAll(async () => {
  database = await createTestDatabase('leases');
  db = createDb(database.url, { maxConnections: 4 });
  writer = new FriendWriter(db);
  await migrateToLatest(db);
});
afterAll(async () => {
  await db?.destroy();
  await database?.drop();
});
beforeEach(async () => {
  await db.deleteFrom('tim.accounts').execute();
  await db.deleteFrom('tim.replicas').execute();
});

/** A session as a replica process holds one, and a way to end it as the server sees a crash. */
async function liveSession(replicaId: string): Promise<{ session: ReplicaSession; lost: Error[] }> {
  const lost: Error[] = [];
  const session = new ReplicaSession(db, {
    replicaId,
    hostname: 'test',
    pid: 1,
    ttlMs: 60_000,
    onLost: (e) => lost.push(e),
  });
  await session.heartbeat(1, 0);
  return { session, lost };
}

/** Ends the registry backend of `replicaId` from the server side, as when its process is killed. */
async function killSession(): Promise<void> {
  await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE application_name = 'tim-friend-mirror registry' AND datname = current_database()`.execute(
    db,
  );
}

const lease = { leaseMs: 60_000 };

describe('leases of live and gone replicas', () => {
  it('a live session keeps its leases; once it ends they are free at once', async () => {
    await addAccounts(db, ['a', 'b']);
    const { session, lost } = await liveSession('r1');
    try {
      expect((await claimDueAccounts(db, { owner: 'r1', limit: 10, ...lease })).length).toBe(2);
      expect(await claimAccount(db, 'a', { owner: 'sync-x', ...lease })).toBe('busy');
      expect(await releaseDeadLeases(db)).toBe(0);
      expect((await liveReplicas(db)).map((r) => r.replicaId)).toEqual(['r1']);

      await killSession();
      // The row has not expired (60 s ttl): only the ended session says r1 is gone.
      await waitFor(async () => (await liveReplicas(db)).length === 0);
      await heartbeat(db, {
        replicaId: 'sync-x',
        hostname: 'h',
        pid: 2,
        ttlMs: 60_000,
        peers: 1,
        callsPerSecond: 0,
      });
      expect(await claimAccount(db, 'a', { owner: 'sync-x', ...lease })).toMatchObject({ accountId: 'a' });
      // The other lease: freed and due now, for any replica's next claim.
      expect(await releaseDeadLeases(db)).toBe(1);
      const b = await db
        .selectFrom('tim.accounts')
        .select(['lease_owner', sql<boolean>`next_sync_at <= now()`.as('due')])
        .where('account_id', '=', 'b')
        .executeTakeFirstOrThrow();
      expect(b).toEqual({ lease_owner: null, due: true });
      await waitFor(async () => lost.length > 0);
      expect(session.registered).toBe(false);

      // The next heartbeat registers again under a new key: live, but a newcomer (peers_since anew).
      await session.heartbeat(1, 0);
      const [again] = await liveReplicas(db);
      expect(again?.replicaId).toBe('r1');
      expect(again!.settledMs).toBeLessThan(1_000);
    } finally {
      await session.close();
    }
  });

  it('an owner with no registry row, or an expired one, is gone; a row without a key is live by its ttl', async () => {
    await addAccounts(db, ['a', 'b', 'c']);
    await heartbeat(db, {
      replicaId: 'old-version',
      hostname: 'h',
      pid: 1,
      ttlMs: 60_000,
      peers: 1,
      callsPerSecond: 0,
    });
    await heartbeat(db, {
      replicaId: 'expired',
      hostname: 'h',
      pid: 2,
      ttlMs: 60_000,
      peers: 1,
      callsPerSecond: 0,
    });
    await db
      .updateTable('tim.replicas')
      .set({ expires_at: sql`now() - interval '1 second'` })
      .where('replica_id', '=', 'expired')
      .execute();
    for (const [id, owner] of [
      ['a', 'old-version'],
      ['b', 'expired'],
      ['c', 'never-registered'],
    ] as const) {
      await db
        .updateTable('tim.accounts')
        .set({
          lease_owner: owner,
          leased_at: sql`now()`,
          lease_expires_at: sql`now() + interval '5 minutes'`,
          next_sync_at: sql`now() + interval '5 minutes'`,
        })
        .where('account_id', '=', id)
        .execute();
    }
    expect(await claimAccount(db, 'a', { owner: 's', ...lease })).toBe('busy');
    expect(await releaseDeadLeases(db)).toBe(2);
    const rows = await db
      .selectFrom('tim.accounts')
      .select(['account_id', 'lease_owner'])
      .orderBy('account_id')
      .execute();
    expect(rows).toEqual([
      { account_id: 'a', lease_owner: 'old-version' },
      { account_id: 'b', lease_owner: null },
      { account_id: 'c', lease_owner: null },
    ]);
    expect(
      (await claimDueAccounts(db, { owner: 's', limit: 10, ...lease })).map((x) => x.accountId).sort(),
    ).toEqual(['b', 'c']);
  });

  it('a stalled owner whose lease was taken over cannot overwrite the newer sync', async () => {
    await addAccounts(db, ['a']);
    await writer.apply(snapshot('a', ['x'], null, 1));
    const { session } = await liveSession('stalled');
    try {
      await db.updateTable('tim.accounts').set({ next_sync_at: sql`now()` }).execute();
      const [claimed] = await claimDueAccounts(db, { owner: 'stalled', limit: 1, ...lease });
      expect(claimed?.standardSequence).toBe(1);
      // It pulled (sequence 2) and then stalled; its registry session ended meanwhile.
      const stale = snapshot('a', ['x', 'y'], 1, 2);
      await killSession();
      await waitFor(async () => (await liveReplicas(db)).length === 0);
      // Another replica takes the account over and commits a newer pull.
      expect(await claimAccount(db, 'a', { owner: 'taker', ...lease })).toMatchObject({
        standardSequence: 1,
      });
      await writer.apply(snapshot('a', ['z'], 1, 3));
      // The stalled owner wakes up: refused, nothing of its pull written.
      await expect(writer.apply(stale)).rejects.toMatchObject({ reason: 'stale' });
      expect((await readMirror(db, 'a')).map((f) => f.friendId)).toEqual(['z']);
    } finally {
      await session.close();
    }
  });
});

function snapshot(
  accountId: string,
  friendIds: string[],
  base: number | null,
  next: number,
): AccountSnapshot {
  return {
    accountId,
    neverSynced: base === null,
    baseStandardSequence: base,
    baseCustomSequence: base,
    standardSequence: next,
    customSequence: next,
    standard: {
      friends: friendIds.map((id) => ({
        friendId: id,
        remark: null,
        groups: null,
        addSource: 'AddSource_Type_Web',
        addWording: null,
        addTime: 1_700_000_000,
      })),
      tags: [],
    },
    custom: { tags: [] },
  };
}

async function waitFor(cond: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
