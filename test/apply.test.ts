/**
 * The apply's first-sync path: one statement (one round trip) that writes everything or nothing,
 * and hands accounts that already hold rows to the general, multi-statement path.
 */
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { addAccounts, removeAccounts } from '../src/db/accounts.js';
import { type AccountSnapshot, applySnapshot, readMirror, SnapshotConflictError } from '../src/db/friends.js';
import { claimAccount } from '../src/db/leases.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

let database: TestDatabase;
let db: ReturnType<typeof createDb>;
/**
 * Round trips to Postgres, counted at the driver (BEGIN and COMMIT included): every query any pg
 * client of this process sends while `counting` is on.
 */
let statements = 0;
let counting = false;
/** The text of each statement counted, to tell the one-statement first sync (`ok AS (`) apart. */
let texts: string[] = [];
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  if (counting) {
    statements++;
    texts.push(typeof args[0] === 'string' ? args[0] : '');
  }
  return (query as (...a: unknown[]) => unknown).apply(this, args);
} as typeof query;

beforeAll(async () => {
  database = await createTestDatabase('apply');
  db = createDb(database.url, { maxConnections: 4 });
  await migrateToLatest(db);
});
afterAll(async () => {
  await db?.destroy();
  await database?.drop();
});
beforeEach(async () => {
  await db.deleteFrom('tim.accounts').execute();
  statements = 0;
  texts = [];
  counting = false;
});

const triedOneStatement = () => texts.some((t) => t.includes('ok AS ('));

/** Runs `work` with round trips counted. */
async function count<T>(work: () => Promise<T>): Promise<T> {
  counting = true;
  try {
    return await work();
  } finally {
    counting = false;
  }
}

function snapshot(
  accountId: string,
  friendIds: string[],
  base: number | null,
  next: number,
  neverSynced = base === null,
): AccountSnapshot {
  return {
    accountId,
    neverSynced,
    baseStandardSequence: base,
    baseCustomSequence: base,
    standardSequence: next,
    customSequence: next,
    standard: {
      friends: friendIds.map((id) => ({
        friendId: id,
        remark: `remark of ${id}`,
        groups: ['g'],
        addSource: 'AddSource_Type_Web',
        addWording: null,
        addTime: 1_700_000_000,
      })),
      tags: friendIds.map((id) => ({ friendId: id, tag: 'Tag_SNS_IM_Extra', value: { n: 1 } })),
    },
    custom: { tags: friendIds.map((id) => ({ friendId: id, tag: 'Tag_SNS_Custom_c', value: id })) },
  };
}

async function account(id: string) {
  return db.selectFrom('tim.accounts').selectAll().where('account_id', '=', id).executeTakeFirstOrThrow();
}

describe('first sync', () => {
  it('writes friends, tags and sequences in one statement', async () => {
    await addAccounts(db, ['a']);
    const r = await count(() => applySnapshot(db, snapshot('a', ['x', 'y'], null, 5)));
    expect(statements).toBe(1);
    expect(triedOneStatement()).toBe(true);
    expect(r).toEqual({
      friendsUpserted: 2,
      friendsDeleted: 0,
      tagsUpserted: 4,
      tagsDeleted: 0,
      friendCount: 2,
      events: 1,
    });
    const events = await db
      .selectFrom('tim.friend_events')
      .select(['kind', 'changed', 'standard_sequence'])
      .execute();
    expect(events).toEqual([{ kind: 'baseline', changed: { friend_count: 2 }, standard_sequence: 5 }]);
    const mirrored = await readMirror(db, 'a');
    expect(mirrored.map((f) => [f.friendId, f.remark, f.tags.length])).toEqual([
      ['x', 'remark of x', 2],
      ['y', 'remark of y', 2],
    ]);
    const acct = await account('a');
    expect([acct.standard_sequence, acct.custom_sequence, acct.friend_count, acct.status]).toEqual([
      5,
      5,
      2,
      'ok',
    ]);
    expect(acct.last_changed_at).not.toBeNull();
  });

  it('an empty friend list stores the sequences and counts as no change', async () => {
    await addAccounts(db, ['a']);
    const r = await applySnapshot(db, snapshot('a', [], null, 1));
    expect(r.friendsUpserted + r.tagsUpserted).toBe(0);
    const acct = await account('a');
    expect([acct.standard_sequence, acct.last_changed_at]).toEqual([1, null]);
  });

  it('refuses, writing nothing, when someone stored sequences meanwhile', async () => {
    await addAccounts(db, ['a']);
    await db.updateTable('tim.accounts').set({ standard_sequence: 9, custom_sequence: 9 }).execute();
    await expect(applySnapshot(db, snapshot('a', ['x'], null, 5))).rejects.toMatchObject({
      reason: 'stale',
    });
    expect(await readMirror(db, 'a')).toEqual([]);
    expect((await account('a')).standard_sequence).toBe(9);
  });

  it('refuses when the account was removed', async () => {
    await addAccounts(db, ['a']);
    await removeAccounts(db, ['a']);
    const err = await applySnapshot(db, snapshot('a', ['x'], null, 5)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SnapshotConflictError);
    expect((err as SnapshotConflictError).reason).toBe('gone');
    const left = await sql<{ n: string }>`SELECT count(*) AS n FROM tim.friends`.execute(db);
    expect(Number(left.rows[0]!.n)).toBe(0);
  });

  it('a resync --full (synced before, sequences forgotten) goes the general way only, and ends exact', async () => {
    await addAccounts(db, ['a']);
    await applySnapshot(db, snapshot('a', ['x', 'y'], null, 5));
    // `resync --full` forgets the sequences but keeps the rows; the claim says it was synced before.
    await db.updateTable('tim.accounts').set({ standard_sequence: null, custom_sequence: null }).execute();
    expect((await claimAccount(db, 'a', { owner: 't', leaseMs: 60_000 })) as object).toMatchObject({
      neverSynced: false,
    });
    const r = await count(() => applySnapshot(db, snapshot('a', ['y', 'z'], null, 6, false)));
    expect(triedOneStatement()).toBe(false);
    expect(r.friendsDeleted).toBe(1);
    expect((await readMirror(db, 'a')).map((f) => f.friendId)).toEqual(['y', 'z']);
    const tags = await db
      .selectFrom('tim.friend_tags')
      .select('friend_id')
      .where('account_id', '=', 'a')
      .execute();
    expect(tags.map((t) => t.friend_id).sort()).toEqual(['y', 'y', 'z', 'z']);
    expect((await account('a')).standard_sequence).toBe(6);
  });

  it('a snapshot wrongly marked never synced, onto rows, still ends exact by the general way', async () => {
    await addAccounts(db, ['a']);
    await applySnapshot(db, snapshot('a', ['x', 'y'], null, 5));
    await db.updateTable('tim.accounts').set({ standard_sequence: null, custom_sequence: null }).execute();
    const r = await count(() => applySnapshot(db, snapshot('a', ['y', 'z'], null, 6, true)));
    expect(triedOneStatement()).toBe(true);
    expect(statements).toBeGreaterThan(1);
    expect(r.friendsDeleted).toBe(1);
    expect((await readMirror(db, 'a')).map((f) => f.friendId)).toEqual(['y', 'z']);
  });

  it('claims say whether the account was ever synced', async () => {
    await addAccounts(db, ['a']);
    expect(await claimAccount(db, 'a', { owner: 't', leaseMs: 60_000 })).toMatchObject({ neverSynced: true });
    await applySnapshot(db, snapshot('a', ['x'], null, 5));
    expect(await claimAccount(db, 'a', { owner: 't', leaseMs: 60_000 })).toMatchObject({
      neverSynced: false,
    });
  });
});
