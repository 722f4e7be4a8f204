/**
 * The status page's data: the call history ring, and the database overview against real Postgres
 * with timestamps set by hand, so each figure can be checked against a known answer.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addAccounts, requestResync } from '../src/db/accounts.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { readOverview } from '../src/db/overview.js';
import { createDb } from '../src/db/pool.js';
import { createMetrics } from '../src/metrics.js';
import { createStatusReport } from '../src/status-report.js';
import { CallHistory } from '../src/sync/call-history.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

describe('CallHistory', () => {
  it('counts calls per bucket, zeroes the buckets it skips, and keeps only the last N', () => {
    let now = 1_000_000;
    const h = new CallHistory({ bucketMs: 1_000, buckets: 4, now: () => now });
    h.record();
    h.record();
    now += 1_000;
    h.record();
    now += 2_000; // one bucket with no call
    h.record();
    expect(h.series().map((b) => b.calls)).toEqual([2, 1, 0, 1]);
    expect(h.series().map((b) => b.startMs)).toEqual([1_000_000, 1_001_000, 1_002_000, 1_003_000]);
    now += 2_000; // the oldest two leave, the two new ones start at 0
    expect(h.series().map((b) => b.calls)).toEqual([0, 1, 0, 0]);
    now += 60_000; // a long silence clears everything
    expect(h.series().map((b) => b.calls)).toEqual([0, 0, 0, 0]);
  });

  it('gives calls per second over finished buckets only', () => {
    let now = 0;
    const h = new CallHistory({ bucketMs: 1_000, buckets: 10, now: () => now });
    for (let s = 0; s < 5; s++) {
      for (let i = 0; i < 10 * (s + 1); i++) h.record();
      now += 1_000;
    }
    h.record(); // in the bucket still filling: not counted
    // Finished buckets hold 10, 20, 30, 40, 50: the last 3 s average 40/s.
    expect(h.ratePerSecond(3_000)).toBe(40);
  });
});

describe('readOverview', () => {
  let database: TestDatabase;
  let db: ReturnType<typeof createDb>;
  const HOUR = 3_600_000;

  beforeAll(async () => {
    database = await createTestDatabase('status_report');
    db = createDb(database.url, { maxConnections: 4 });
    await migrateToLatest(db);
    // 20 accounts synced 1..20 minutes ago, not due; then special cases.
    const synced = Array.from({ length: 20 }, (_, i) => `s${String(i + 1).padStart(2, '0')}`);
    await addAccounts(db, [...synced, 'due-old', 'never', 'gone', 'off', 'asked']);
    for (const [i, id] of synced.entries()) {
      await sql`UPDATE tim.accounts SET status = 'ok', last_synced_at = now() - ${i + 1} * interval '1 minute',
                  last_attempt_at = now() - ${i + 1} * interval '1 minute',
                  next_sync_at = now() + interval '1 hour', priority = 2
                WHERE account_id = ${id}`.execute(db);
    }
    // Synced 3 h ago (over twice the 1 h interval), due for 2 h, and its last attempt 10 s ago failed.
    await sql`UPDATE tim.accounts SET status = 'failing', last_synced_at = now() - interval '3 hours',
                next_sync_at = now() - interval '2 hours', priority = 2,
                last_attempt_at = now() - interval '10 seconds', last_error = 'TIM_ERR_HTTP: 502'
              WHERE account_id = 'due-old'`.execute(db);
    // Never synced, added 5 h ago: overdue too.
    await sql`UPDATE tim.accounts SET created_at = now() - interval '5 hours' WHERE account_id = 'never'`.execute(
      db,
    );
    await sql`UPDATE tim.accounts SET status = 'missing', last_error = 'TIM_ERR_API: 30003',
                last_attempt_at = now() - interval '20 seconds', next_sync_at = now() - interval '1 hour'
              WHERE account_id = 'gone'`.execute(db);
    await sql`UPDATE tim.accounts SET status = 'disabled' WHERE account_id = 'off'`.execute(db);
    await sql`UPDATE tim.accounts SET status = 'ok', last_synced_at = now(), priority = 2,
                next_sync_at = now() + interval '1 hour' WHERE account_id = 'asked'`.execute(db);
    await requestResync(db, { ids: ['asked'] }, { full: false });
  });
  afterAll(async () => {
    await db?.destroy();
    await database?.drop();
  });

  it('counts, sweep, lag and errors match the rows', async () => {
    const o = await readOverview(db, { intervalMs: HOUR });
    expect(o.accounts.byStatus).toEqual({ pending: 1, ok: 21, missing: 1, failing: 1, disabled: 1 });
    expect(o.accounts.total).toBe(25);
    expect(o.accounts.active).toBe(23);
    // 20 synced in the last 20 minutes plus 'asked' just now; 'due-old' 3 h ago; 'never' not at all.
    expect(o.sweep.syncedWithinInterval).toBe(21);
    // Due: 'due-old', 'never' (new accounts are due at once) and 'asked' (a resync); not 'gone'.
    expect(o.sweep.dueNow).toBe(3);
    // Attempts in the last minute: s01 (1 min ago is the edge, so not), 'due-old', 'gone'.
    expect(o.sweep.accountsPerSecond).toBeCloseTo(2 / 60, 5);
    expect(o.sweep.etaSeconds).toBeCloseTo(3 / (2 / 60), 3);
    // Ages in minutes: 0 ('asked'), 1..20, 180 ('due-old'): 22 values, median between 10 and 11.
    expect(o.lag.p50Seconds! / 60).toBeCloseTo(10.5, 1);
    expect(o.lag.p95Seconds! / 60).toBeGreaterThan(19.9);
    expect(o.lag.p95Seconds! / 60).toBeLessThan(180);
    expect(o.lag.oldestDueSeconds / 3600).toBeCloseTo(2, 2);
    expect(o.lag.overdue).toBe(2);
    expect(o.pendingResyncs).toBe(1);
    expect(o.errors.map((e) => e.accountId)).toEqual(['due-old', 'gone']);
    expect(o.errors[0]).toMatchObject({ status: 'failing', error: 'TIM_ERR_HTTP: 502' });
  });

  it('a report reuses the overview within its cache time, and reports a database failure', async () => {
    let now = 0;
    const broken = createDb('postgres://nobody@127.0.0.1:1/none', { maxConnections: 1 });
    try {
      const report = createStatusReport({
        db: broken,
        replicaId: 'r1',
        rateLimit: 200,
        intervalMs: HOUR,
        budget: () => ({ share: 100, peers: 2 }),
        calls: new CallHistory(),
        metrics: createMetrics(),
        webhooksEnabled: false,
        ready: async () => false,
        now: () => now,
      });
      const r = await report();
      expect(r.overview).toBeNull();
      expect(r.overviewError).toBeTruthy();
      expect(r.replica).toMatchObject({ id: 'r1', rateLimit: 200, share: 100, peers: 2 });
      now += 1;
      expect((await report()).overview).toBeNull();
    } finally {
      await broken.destroy();
    }

    const report = createStatusReport({
      db,
      replicaId: 'r1',
      rateLimit: 200,
      intervalMs: HOUR,
      budget: () => ({ share: 200, peers: 1 }),
      calls: new CallHistory(),
      metrics: createMetrics(),
      webhooksEnabled: false,
      ready: async () => true,
      cacheMs: 5_000,
      now: () => now,
    });
    expect((await report()).overview?.accounts.total).toBe(25);
    await addAccounts(db, ['late-comer']);
    try {
      now += 4_000;
      expect((await report()).overview?.accounts.total).toBe(25);
      now += 2_000;
      expect((await report()).overview?.accounts.total).toBe(26);
    } finally {
      await db.deleteFrom('tim.accounts').where('account_id', '=', 'late-comer').execute();
    }
  });
});
