/**
 * A replica that stalls past its lease and then finishes must leave the lease of the replica that
 * took the account over alone: releasing it, or moving the account's due time, would let a third
 * replica claim the account while the new holder is still syncing it. The data it pulled is still
 * applied (or refused) by the sequence checks as usual. Real Postgres and the simulator.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AccountSyncState, addAccounts } from '../src/db/accounts.js';
import { FriendWriter } from '../src/db/friend-writer.js';
import { claimAccount, claimDueAccounts } from '../src/db/leases.js';
import { FriendStore } from '../src/simulator/index.js';
import { syncAccount } from '../src/sync/account-sync.js';
import { sleep } from '../src/sync/limiter.js';
import { limitedCall } from '../src/sync/pass.js';
import { type MirrorFixture, mirrorFixture } from './fixtures/mirror.js';

const LEASE_MS = 60_000;
const NEXT_SYNC = { intervalMs: 3_600_000 };

describe('a stalled replica finishing after a takeover', () => {
  let f: MirrorFixture;

  beforeAll(async () => {
    const store = new FriendStore();
    store.addAccount('a');
    for (let k = 0; k < 5; k++) {
      store.addFriend('a', `a_friend_${k}`, {
        standard: { Tag_SNS_IM_AddTime: 1_600_000_000 + k },
        custom: {},
      });
    }
    // 'gone' is listed but Tencent does not know it: its sync fails, and records that failure.
    f = await mirrorFixture('stalled_lease', { store, pageSize: 2 });
    await addAccounts(f.db, ['a', 'gone']);
  });
  afterAll(async () => {
    await f?.close();
  });

  /** The columns that belong to whoever holds the lease. */
  async function leaseColumns() {
    const r = await sql<Record<string, unknown>>`
      SELECT account_id, lease_owner, leased_at::text, lease_expires_at::text, next_sync_at::text,
             priority, reconcile_next_at::text
      FROM tim.accounts ORDER BY account_id`.execute(f.db);
    return r.rows;
  }

  function sync(state: AccountSyncState) {
    const call = limitedCall(
      { client: f.client, limiter: f.limiter, retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 1 } },
      new AbortController().signal,
    );
    return syncAccount({ db: f.db, writer: new FriendWriter(f.db), call, nextSync: NEXT_SYNC }, state);
  }

  it("leaves the new holder's lease and due time alone, success or failure; the holder's finish releases it", async () => {
    // The stalled replica's claims, with a lease that has run out by the time it wakes.
    const stalled = await claimDueAccounts(f.db, { owner: 'stalled', limit: 10, leaseMs: 1 });
    expect(stalled.map((s) => [s.accountId, s.leaseOwner])).toEqual([
      ['a', 'stalled'],
      ['gone', 'stalled'],
    ]);
    await sleep(20);
    const taken: AccountSyncState[] = [];
    for (const id of ['a', 'gone']) {
      const t = await claimAccount(f.db, id, { owner: 'taker', leaseMs: LEASE_MS });
      if (typeof t === 'string') throw new Error(`takeover of ${id} refused: ${t}`);
      taken.push(t);
    }
    // A resync requested while the taker holds them: only the taker's finish may act on it.
    await sql`UPDATE tim.accounts SET resync_requested_at = now()`.execute(f.db);
    const held = await leaseColumns();
    expect(held.map((r) => r.lease_owner)).toEqual(['taker', 'taker']);

    // The stalled replica wakes up and finishes both.
    expect((await sync(stalled[0]!)).result).toBe('changed');
    expect((await sync(stalled[1]!)).result).toBe('missing');
    expect(await leaseColumns()).toEqual(held);
    // What it did write: a's data (newer than what was stored), and gone's failure.
    expect(await f.diffAll()).toEqual([]);
    const status = await f.db
      .selectFrom('tim.accounts')
      .select(['account_id', 'status'])
      .orderBy('account_id')
      .execute();
    expect(status).toEqual([
      { account_id: 'a', status: 'ok' },
      { account_id: 'gone', status: 'missing' },
    ]);

    // The taker finishes: its lease is released, and the resync asked for during it is due at once.
    expect((await sync(taken[0]!)).result).toBe('unchanged');
    expect((await sync(taken[1]!)).result).toBe('missing');
    const after = await leaseColumns();
    expect(
      after.map((r) => [r.lease_owner, r.leased_at, r.lease_expires_at, r.next_sync_at, r.priority]),
    ).toEqual([
      [null, null, null, '-infinity', 0],
      [null, null, null, '-infinity', 0],
    ]);
  });
});
