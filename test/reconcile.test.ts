/**
 * Reconciliation scheduling, against real Postgres and the simulator: which syncs move the
 * reconcile clock (full reads) and which leave it alone (incremental ones), how a due reconcile is
 * claimed and pulled, and that new accounts' reconciles are spread evenly over the interval.
 */
import { sql } from 'kysely';
import pLimit from 'p-limit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AccountSyncState, addAccounts, requestResync } from '../src/db/accounts.js';
import { FriendWriter } from '../src/db/friend-writer.js';
import { claimDueAccounts } from '../src/db/leases.js';
import { FriendStore, generateApp } from '../src/simulator/index.js';
import { syncAccount } from '../src/sync/account-sync.js';
import { limitedCall } from '../src/sync/pass.js';
import { driftOf } from '../src/sync/reconcile.js';
import { type MirrorFixture, mirrorFixture } from './fixtures/mirror.js';

const HOUR = 3_600_000;
const SYNC_INTERVAL = { intervalMs: 10 * HOUR };

/** Claims what is due (as the daemon does) and syncs every claimed account, paced by the fixture. */
async function claimAndSync(
  f: MirrorFixture,
  reconcileMs: number,
  opts: { attempts?: number; limit?: number } = {},
): Promise<AccountSyncState[]> {
  const claimed = await claimDueAccounts(f.db, {
    owner: 'test',
    limit: opts.limit ?? 100,
    leaseMs: 60_000,
    reconcile: { intervalMs: reconcileMs },
  });
  const call = limitedCall(
    {
      client: f.client,
      limiter: f.limiter,
      retry: { attempts: opts.attempts ?? 3, baseDelayMs: 1, maxDelayMs: 5 },
    },
    new AbortController().signal,
  );
  const gate = pLimit(16);
  const writer = new FriendWriter(f.db);
  await Promise.all(
    claimed.map((s) => gate(() => syncAccount({ db: f.db, writer, call, nextSync: SYNC_INTERVAL }, s))),
  );
  return claimed;
}

async function clock(f: MirrorFixture, id: string) {
  const r = await sql<{
    due_in: number | null;
    next_in: number;
    pending: Date | null;
  }>`SELECT extract(epoch FROM reconcile_due_at - now())::float8 * 1000 AS due_in,
            extract(epoch FROM next_sync_at - now())::float8 * 1000 AS next_in,
            reconcile_next_at AS pending
     FROM tim.accounts WHERE account_id = ${id}`.execute(f.db);
  return r.rows[0]!;
}

/** Makes accounts due for a regular sync now, without touching their reconcile clock. */
async function makeDue(f: MirrorFixture, ids: string[]): Promise<void> {
  await sql`UPDATE tim.accounts SET next_sync_at = now() - interval '1 second'
            WHERE account_id = ANY(${ids}::text[])`.execute(f.db);
}

describe('the reconcile clock', () => {
  let f: MirrorFixture;
  const ids = ['r1', 'r2', 'r3'];

  beforeAll(async () => {
    const store = new FriendStore();
    for (const id of ids) store.addAccount(id);
    for (const id of ids) {
      for (let k = 0; k < 6; k++) {
        store.addFriend(id, `${id}_friend_${k}`, {
          standard: { Tag_SNS_IM_Remark: `remark ${k}`, Tag_SNS_IM_AddTime: 1_600_000_000 + k },
          custom: { Tag_SNS_Custom_Level: `L${k}` },
        });
      }
    }
    f = await mirrorFixture('reconcile_clock', { store, pageSize: 4 });
    await addAccounts(f.db, ids);
  });
  afterAll(async () => {
    await f?.close();
  });

  it('schedules the first reconcile within one interval and pulls next_sync_at in to it', async () => {
    const claimed = await claimAndSync(f, HOUR);
    expect(claimed.map((c) => c.accountId).sort()).toEqual(ids);
    // A first sync is not a due reconcile (nothing was scheduled yet), though it reads everything.
    expect(claimed.every((c) => c.reconcile !== true)).toBe(true);
    for (const id of ids) {
      const c = await clock(f, id);
      expect(c.pending).toBeNull();
      expect(c.due_in).toBeGreaterThan(0.1 * HOUR - 5_000);
      expect(c.due_in).toBeLessThanOrEqual(HOUR);
      // The regular next sync is 10 h away; the reconcile comes first, so the account is due then.
      expect(Math.abs(c.next_in - c.due_in!)).toBeLessThan(1_000);
    }
    expect(await f.diffAll()).toEqual([]);
  });

  it('an incremental sync leaves the reconcile clock alone', async () => {
    const before = await clock(f, 'r1');
    f.store.setStandardTag('r1', 'r1_friend_0', 'Tag_SNS_IM_Remark', 'changed at the source');
    await makeDue(f, ['r1']);
    f.sim.clearCalls();
    const claimed = await claimAndSync(f, HOUR);
    expect(claimed).toMatchObject([{ accountId: 'r1' }]);
    expect(claimed[0]!.reconcile).toBeUndefined();
    // It sent its stored sequences: an incremental pull.
    const calls = f.sim.calls().filter((c) => c.account === 'r1');
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.every((c) => c.standardSequence !== undefined && c.customSequence !== undefined)).toBe(true);
    const after = await clock(f, 'r1');
    expect(after.due_in! - before.due_in!).toBeLessThan(2_000); // same instant, seen a moment later
    expect(after.due_in! - before.due_in!).toBeGreaterThan(-5_000);
    expect(await f.diffAll()).toEqual([]);
  });

  it('a due reconcile is claimed as one, reads every page with no sequences, and resets the clock', async () => {
    await sql`UPDATE tim.accounts SET reconcile_due_at = now() - interval '1 second',
              next_sync_at = now() - interval '1 second' WHERE account_id = 'r2'`.execute(f.db);
    f.sim.clearCalls();
    const claimed = await claimAndSync(f, HOUR);
    expect(claimed).toMatchObject([{ accountId: 'r2', reconcile: true }]);
    const calls = f.sim.calls().filter((c) => c.account === 'r2');
    // 6 friends at 4 per page: both pages, neither with a sequence.
    expect(calls.length).toBe(2);
    expect(calls.every((c) => c.standardSequence === undefined && c.customSequence === undefined)).toBe(true);
    const c = await clock(f, 'r2');
    expect(c.due_in).toBeGreaterThan(0.9 * HOUR - 5_000);
    expect(c.due_in).toBeLessThanOrEqual(HOUR);
    expect(c.pending).toBeNull();
  });

  it('a resync --full counts as a reconcile: the clock restarts from it', async () => {
    await sql`UPDATE tim.accounts SET reconcile_due_at = now() + interval '5 minutes' WHERE account_id = 'r3'`.execute(
      f.db,
    );
    await requestResync(f.db, { ids: ['r3'] }, { full: true });
    f.sim.clearCalls();
    await claimAndSync(f, HOUR);
    expect(f.sim.calls().filter((c) => c.account === 'r3' && c.standardSequence !== undefined)).toEqual([]);
    const c = await clock(f, 'r3');
    expect(c.due_in).toBeGreaterThan(0.9 * HOUR - 5_000);
    expect(await f.diffAll()).toEqual([]);
  });

  it('a failed reconcile stays due and is retried after the backoff, not at once', async () => {
    await sql`UPDATE tim.accounts SET reconcile_due_at = now() - interval '1 minute',
              next_sync_at = now() - interval '1 second' WHERE account_id = 'r1'`.execute(f.db);
    f.sim.injectFaults('error:30006', 1);
    const claimed = await claimAndSync(f, HOUR, { attempts: 1 });
    expect(claimed).toMatchObject([{ accountId: 'r1', reconcile: true }]);
    const c = await clock(f, 'r1');
    expect(c.due_in).toBeLessThan(-50_000); // still overdue: the next successful sync is the reconcile
    expect(c.pending).toBeNull();
    expect(c.next_in).toBeGreaterThan(20_000); // the failure backoff (≥ 30 s), not "due now"
  });

  it('off: the claim clears the schedule and no sync pulls next_sync_at in', async () => {
    await makeDue(f, ids);
    const claimed = await claimAndSync(f, 0);
    expect(claimed.every((c) => c.reconcile !== true)).toBe(true);
    const rows = await f.db
      .selectFrom('tim.accounts')
      .select(['reconcile_due_at', 'reconcile_next_at'])
      .where('status', '=', 'ok')
      .execute();
    expect(rows.every((r) => r.reconcile_due_at === null && r.reconcile_next_at === null)).toBe(true);
    for (const id of ['r2', 'r3']) expect((await clock(f, id)).next_in).toBeGreaterThan(9 * HOUR);
  });
});

describe('driftOf', () => {
  it('counts friend rows when the standard sequence held, tag rows only when both held', () => {
    const written = { friendsWritten: 3, tagsWritten: 2 };
    expect(
      driftOf(
        { standardSequence: 5, customSequence: 7 },
        { standardSequence: 5, customSequence: 7 },
        written,
      ),
    ).toEqual({ friendRows: 3, tagRows: 2 });
    expect(
      driftOf(
        { standardSequence: 5, customSequence: 7 },
        { standardSequence: 5, customSequence: 8 },
        written,
      ),
    ).toEqual({ friendRows: 3, tagRows: 0 });
    expect(
      driftOf(
        { standardSequence: 5, customSequence: 7 },
        { standardSequence: 6, customSequence: 7 },
        written,
      ),
    ).toBeUndefined();
    expect(
      driftOf(
        { standardSequence: null, customSequence: null },
        { standardSequence: 0, customSequence: 0 },
        written,
      ),
    ).toBeUndefined();
    expect(
      driftOf(
        { standardSequence: 5, customSequence: 7 },
        { standardSequence: 5, customSequence: 7 },
        {
          friendsWritten: 0,
          tagsWritten: 0,
        },
      ),
    ).toBeUndefined();
  });
});

describe('reconcile load', () => {
  let f: MirrorFixture;

  beforeAll(async () => {
    // 1,000 accounts without friends: one call and a tiny apply each.
    const store = generateApp({ accounts: 1000, meanFriends: 0, seed: 3, oddIds: false });
    f = await mirrorFixture('reconcile_spread', { store });
    await f.addAllAccounts();
  });
  afterAll(async () => {
    await f?.close();
  });

  it('spreads the first reconciles of 1,000 new accounts evenly over the interval', async () => {
    const t0 = await sql<{ t: Date }>`SELECT now() AS t`.execute(f.db);
    const claimed = await claimAndSync(f, HOUR, { limit: 1000 });
    expect(claimed.length).toBe(1000);
    const res = await sql<{ bucket: number; n: number }>`
      SELECT floor(extract(epoch FROM reconcile_due_at - ${t0.rows[0]!.t}::timestamptz) * 1000 / ${HOUR / 10})::int AS bucket,
             count(*)::int AS n
      FROM tim.accounts GROUP BY 1 ORDER BY 1`.execute(f.db);
    const buckets = new Map(res.rows.map((r) => [r.bucket, r.n]));
    const shape = JSON.stringify([...buckets]);
    // Every account is scheduled within one interval of the claim (the syncs took a few seconds) ...
    expect(
      [...buckets.keys()].every((b) => b >= 1 && b <= 10),
      shape,
    ).toBe(true);
    expect((buckets.get(10) ?? 0) + (buckets.get(9) ?? 0), shape).toBeLessThan(300);
    // ... none in the first tenth (a first sync is a full read: no second one minutes later) ...
    expect(buckets.get(0) ?? 0, shape).toBe(0);
    // ... and the other tenths each hold about a ninth: none more than twice a tenth's share.
    for (let b = 1; b < 10; b++) {
      expect(buckets.get(b) ?? 0, `bucket ${b}: ${shape}`).toBeLessThanOrEqual(200);
      expect(buckets.get(b) ?? 0, `bucket ${b}: ${shape}`).toBeGreaterThanOrEqual(60);
    }
  });
});
