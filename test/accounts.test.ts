/**
 * Account bookkeeping against real Postgres: claim order and leases, resync marking, and the
 * failure backoff.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { addAccounts, recordFailure, removeAccounts, requestResync } from '../src/db/accounts.js';
import { FriendWriter } from '../src/db/friend-writer.js';
import { claimAccount, claimDueAccounts, releaseLeases } from '../src/db/leases.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { heartbeat } from '../src/db/replicas.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

let database: TestDatabase;
let db: ReturnType<typeof createDb>;
/** The writer every apply of this file goes through, as one process's. */
let writer: FriendWriter;

beforeAll(async () => {
  database = await createTestDatabase('accounts');
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
});

describe('claiming', () => {
  it('claims resync requests first, then never-synced accounts, then the most overdue; never one twice', async () => {
    await addAccounts(db, ['new1', 'old-late', 'old-later', 'asked', 'not-due']);
    await db
      .updateTable('tim.accounts')
      .set({ priority: 2, last_synced_at: sql`now()` })
      .where('account_id', 'in', ['old-late', 'old-later', 'asked', 'not-due'])
      .execute();
    await db
      .updateTable('tim.accounts')
      .set({ next_sync_at: sql`now() - interval '1 hour'` })
      .where('account_id', '=', 'old-late')
      .execute();
    await db
      .updateTable('tim.accounts')
      .set({ next_sync_at: sql`now() - interval '2 hours'` })
      .where('account_id', '=', 'old-later')
      .execute();
    await db
      .updateTable('tim.accounts')
      .set({ next_sync_at: sql`now() + interval '1 hour'` })
      .where('account_id', 'in', ['not-due', 'asked'])
      .execute();
    await requestResync(db, { ids: ['asked'] }, { full: false });

    // Which accounts a claim takes shows the order (RETURNING itself is unordered).
    const first = await claimDueAccounts(db, { owner: 'r1', limit: 1, leaseMs: 60_000 });
    expect(first.map((a) => a.accountId)).toEqual(['asked']);
    const next = await claimDueAccounts(db, { owner: 'r1', limit: 1, leaseMs: 60_000 });
    expect(next.map((a) => a.accountId)).toEqual(['new1']);
    const overdue = await claimDueAccounts(db, { owner: 'r2', limit: 1, leaseMs: 60_000 });
    expect(overdue.map((a) => a.accountId)).toEqual(['old-later']);
    const second = await claimDueAccounts(db, { owner: 'r2', limit: 10, leaseMs: 60_000 });
    expect(second.map((a) => a.accountId)).toEqual(['old-late']);
    expect(await claimDueAccounts(db, { owner: 'r3', limit: 10, leaseMs: 60_000 })).toEqual([]);
    // A one-shot claim of an account a live replica leased is refused (test/leases.test.ts: a gone one's is not).
    await heartbeat(db, {
      replicaId: 'r1',
      hostname: 'h',
      pid: 1,
      ttlMs: 60_000,
      peers: 1,
      callsPerSecond: 0,
    });
    expect(await claimAccount(db, 'asked', { owner: 'sync', leaseMs: 60_000 })).toBe('busy');
    expect(await claimAccount(db, 'nobody', { owner: 'sync', leaseMs: 60_000 })).toBe('gone');

    // Handing leases back makes those accounts due at once for anyone.
    expect(await releaseLeases(db, 'r2', ['old-late'])).toBe(1);
    expect(await releaseLeases(db, 'r1', ['old-late'])).toBe(0); // only the owner's leases
    expect(
      (await claimDueAccounts(db, { owner: 'r3', limit: 10, leaseMs: 60_000 })).map((a) => a.accountId),
    ).toEqual(['old-late']);
  });

  it('concurrent claimers get disjoint accounts', async () => {
    await addAccounts(
      db,
      Array.from({ length: 300 }, (_, i) => `c${i}`),
    );
    const claims = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        claimDueAccounts(db, { owner: `r${i}`, limit: 60, leaseMs: 60_000 }),
      ),
    );
    const all = claims.flat().map((a) => a.accountId);
    expect(new Set(all).size).toBe(all.length);
    expect(all.length).toBe(300);
  });
});

describe('resync', () => {
  it('waits for an account being synced, and --full forgets sequences; missing accounts rejoin', async () => {
    await addAccounts(db, ['busy', 'gone']);
    await db
      .updateTable('tim.accounts')
      .set({ standard_sequence: 5, custom_sequence: 6, status: 'missing' })
      .where('account_id', '=', 'gone')
      .execute();
    await claimDueAccounts(db, { owner: 'r1', limit: 1, leaseMs: 60_000 });
    const { marked, unknown } = await requestResync(db, { ids: ['busy', 'gone', 'nope'] }, { full: true });
    expect(marked).toBe(2);
    expect(unknown).toEqual(['nope']);
    const rows = await db.selectFrom('tim.accounts').selectAll().orderBy('account_id').execute();
    const busy = rows.find((r) => r.account_id === 'busy')!;
    const gone = rows.find((r) => r.account_id === 'gone')!;
    // The leased account keeps its lease and is not made due under the other replica's feet...
    expect(busy.lease_owner).toBe('r1');
    expect(new Date(busy.next_sync_at).getTime()).toBeGreaterThan(Date.now());
    // ...and the missing one is active again, due now, with no sequences.
    expect(gone).toMatchObject({
      status: 'pending',
      priority: 0,
      standard_sequence: null,
      custom_sequence: null,
    });
    const due = await sql<{
      due: boolean;
    }>`SELECT next_sync_at <= now() AS due FROM tim.accounts WHERE account_id = 'gone'`.execute(db);
    expect(due.rows[0]?.due).toBe(true);
  });
});

describe('failure backoff', () => {
  it('waits longer after each consecutive failure, with jitter, up to the cap', async () => {
    await addAccounts(db, ['flaky']);
    const delays: number[] = [];
    for (let i = 0; i < 8; i++) {
      await recordFailure(db, 'flaky', {
        status: 'failing',
        error: 'TIM_ERR_TIMEOUT: x',
        retryAfter: { baseMs: 60_000, capMs: 600_000 },
      });
      const r = await db
        .selectFrom('tim.accounts')
        .select([
          sql<number>`extract(epoch FROM next_sync_at - last_attempt_at)::float8 * 1000`.as('ms'),
          'failures',
          'status',
        ])
        .where('account_id', '=', 'flaky')
        .executeTakeFirstOrThrow();
      delays.push(r.ms);
      expect(r.failures).toBe(i + 1);
      expect(r.status).toBe('failing');
    }
    // base × 2^(failures before this one) × [0.5, 1), capped at 10 min × [0.5, 1).
    const bounds = [1, 2, 4, 8, 10, 10, 10, 10].map((m) => [30_000 * m, 60_000 * m]);
    delays.forEach((d, i) => {
      expect(d, `failure ${i + 1}`).toBeGreaterThanOrEqual(bounds[i]![0]!);
      expect(d, `failure ${i + 1}`).toBeLessThan(bounds[i]![1]!);
    });
  });
});

describe('missing accounts', () => {
  it('stay missing (priority 3, behind real accounts) when a re-check fails for another reason', async () => {
    await addAccounts(db, ['ghost']);
    const state = () =>
      db
        .selectFrom('tim.accounts')
        .select([
          'status',
          'priority',
          'failures',
          sql<number>`extract(epoch FROM next_sync_at - now())::float8`.as('due_in_s'),
        ])
        .where('account_id', '=', 'ghost')
        .executeTakeFirstOrThrow();
    await recordFailure(db, 'ghost', {
      status: 'missing',
      error: 'TIM_ERR_API: 30003',
      retryAfter: { fixedMs: 100_000, jitter: 0.1 },
    });
    const missing = await state();
    expect(missing).toMatchObject({ status: 'missing', priority: 3, failures: 1 });
    expect(missing.due_in_s).toBeGreaterThan(89);
    expect(missing.due_in_s).toBeLessThanOrEqual(100);
    await recordFailure(db, 'ghost', {
      status: 'failing',
      error: 'TIM_ERR_TIMEOUT: x',
      retryAfter: { baseMs: 60_000, capMs: 600_000 },
    });
    expect(await state()).toMatchObject({ status: 'missing', priority: 3, failures: 2 });
  });
});

describe('removing rows takes their dependants along (set-based cascade triggers)', () => {
  const friend = (id: string) => ({
    friendId: id,
    remark: null,
    groups: null,
    addSource: 'AddSource_Type_Web',
    addWording: null,
    addTime: 1_700_000_000,
  });
  /** A first sync of `account` with friends f1..fN, a standard-category and a custom tag on each. */
  async function mirror(account: string, n: number): Promise<void> {
    const ids = Array.from({ length: n }, (_, i) => `f${i + 1}`);
    await writer.apply({
      accountId: account,
      baseStandardSequence: null,
      baseCustomSequence: null,
      standardSequence: 1,
      customSequence: 1,
      standard: {
        friends: ids.map(friend),
        tags: ids.map((id) => ({ friendId: id, tag: 'Tag_SNS_IM_Unknown', value: 1 })),
      },
      custom: { tags: ids.map((id) => ({ friendId: id, tag: 'Tag_SNS_Custom_x', value: id })) },
    });
  }
  async function rows(account: string): Promise<{ friends: number; tags: number }> {
    const r = await sql<{ friends: string; tags: string }>`
      SELECT (SELECT count(*) FROM tim.friends WHERE account_id = ${account}) AS friends,
             (SELECT count(*) FROM tim.friend_tags WHERE account_id = ${account}) AS tags`.execute(db);
    return { friends: Number(r.rows[0]!.friends), tags: Number(r.rows[0]!.tags) };
  }

  it('a removed account loses its friends and tags; others keep theirs', async () => {
    await addAccounts(db, ['a', 'b']);
    await mirror('a', 3);
    await mirror('b', 2);
    expect(await rows('a')).toEqual({ friends: 3, tags: 6 });
    expect(await removeAccounts(db, ['a'])).toBe(1);
    expect(await rows('a')).toEqual({ friends: 0, tags: 0 });
    expect(await rows('b')).toEqual({ friends: 2, tags: 4 });
    // By hand in SQL, too.
    await sql`DELETE FROM tim.accounts WHERE account_id = 'b'`.execute(db);
    expect(await rows('b')).toEqual({ friends: 0, tags: 0 });
  });

  it('a friend removed by a standard-only pull loses its custom tags too', async () => {
    await addAccounts(db, ['a']);
    await mirror('a', 3);
    // Standard data changed (f2 is gone), custom reported unchanged: custom tags are not re-sent.
    await writer.apply({
      accountId: 'a',
      baseStandardSequence: 1,
      baseCustomSequence: 1,
      standardSequence: 2,
      customSequence: 1,
      standard: {
        friends: ['f1', 'f3'].map(friend),
        tags: ['f1', 'f3'].map((id) => ({ friendId: id, tag: 'Tag_SNS_IM_Unknown', value: 1 })),
      },
    });
    const left = await db
      .selectFrom('tim.friend_tags')
      .select(['friend_id', 'tag'])
      .where('account_id', '=', 'a')
      .orderBy('friend_id')
      .orderBy('tag')
      .execute();
    expect(left.map((t) => `${t.friend_id}/${t.tag}`)).toEqual([
      'f1/Tag_SNS_Custom_x',
      'f1/Tag_SNS_IM_Unknown',
      'f3/Tag_SNS_Custom_x',
      'f3/Tag_SNS_IM_Unknown',
    ]);
    // A friend deleted by hand takes its tags along as well.
    await sql`DELETE FROM tim.friends WHERE account_id = 'a' AND friend_id = 'f1'`.execute(db);
    expect(await rows('a')).toEqual({ friends: 1, tags: 2 });
  });

  it('TRUNCATE of accounts or friends empties the tables that depend on them', async () => {
    await addAccounts(db, ['a', 'b']);
    await mirror('a', 2);
    await sql`TRUNCATE tim.friends`.execute(db);
    expect(await rows('a')).toEqual({ friends: 0, tags: 0 });
    await mirror('b', 2);
    await sql`TRUNCATE tim.accounts`.execute(db);
    expect(await rows('b')).toEqual({ friends: 0, tags: 0 });
  });
});
