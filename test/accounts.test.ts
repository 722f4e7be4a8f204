/**
 * Account bookkeeping against real Postgres: claim order and leases, resync marking, and the
 * failure backoff.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { addAccounts, recordFailure, requestResync } from '../src/db/accounts.js';
import { claimAccount, claimDueAccounts, releaseLeases } from '../src/db/leases.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

let database: TestDatabase;
let db: ReturnType<typeof createDb>;

beforeAll(async () => {
  database = await createTestDatabase('accounts');
  db = createDb(database.url, { maxConnections: 4 });
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
    // A one-shot claim of a leased account is refused.
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
