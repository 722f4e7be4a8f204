/**
 * The account sync end to end: simulator → client → pull → apply → real Postgres, under both
 * readings of the sequence rule, with calls paced and sent from the call thread (the failures also
 * with TIM_CALL_THREAD=false). Every test ends by proving the mirror equals the source.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FriendStore, generateApp } from '../src/simulator/index.js';
import { type MirrorFixture, mirrorFixture, rowVersions } from './fixtures/mirror.js';

const READINGS = ['empty-value-item', 'omit-friend'] as const;

describe.each(READINGS)('sync, sequence reading %s', (sequenceReading) => {
  let f: MirrorFixture;

  beforeAll(async () => {
    const store = generateApp({ accounts: 40, meanFriends: 25, maxFriends: 90, seed: 7, oddIds: true });
    // Page size 7 (not 500) makes most accounts span several pages with the simulator's opaque cursors.
    f = await mirrorFixture(`sync_${sequenceReading}`, { store, pageSize: 7, sequenceReading });
    await f.addAllAccounts();
  });
  afterAll(async () => {
    await f?.close();
  });

  it('mirrors every account exactly on the first pass', async () => {
    const s = await f.syncAll();
    expect(s.failed).toBe(0);
    expect(s.changed + s.unchanged).toBe(40);
    expect(await f.diffAll()).toEqual([]);
    expect(await f.sequenceMismatches()).toEqual([]);
    // The simulator only accepts cursors it issued, so no 30001 means the cursor was treated as opaque.
    expect(f.sim.calls().filter((c) => c.errorCode !== 0)).toEqual([]);
  });

  it('costs one call and writes nothing per unchanged account', async () => {
    const id = f.store.accountIds()[3]!;
    const before = await rowVersions(f.db, id);
    f.sim.clearCalls();
    const s = await f.syncAll();
    expect(s.unchanged).toBe(40);
    expect(s.calls).toBe(40);
    expect(s.friendsWritten + s.tagsWritten).toBe(0);
    const perAccount = new Map<string, number>();
    for (const c of f.sim.calls()) perAccount.set(c.account!, (perAccount.get(c.account!) ?? 0) + 1);
    expect([...perAccount.values()].every((n) => n === 1)).toBe(true);
    expect(await rowVersions(f.db, id)).toEqual(before);
  });

  it('applies an incremental pass after random changes; unchanged accounts cost exactly one call', async () => {
    const changed = new Set(f.store.mutateRandom({ fraction: 0.25, seed: 11 }));
    expect(changed.size).toBeGreaterThan(0);
    f.sim.clearCalls();
    const s = await f.syncAll();
    expect(s.failed).toBe(0);
    expect(await f.diffAll()).toEqual([]);
    expect(await f.sequenceMismatches()).toEqual([]);
    const perAccount = new Map<string, number>();
    for (const c of f.sim.calls()) perAccount.set(c.account!, (perAccount.get(c.account!) ?? 0) + 1);
    for (const id of f.store.accountIds()) {
      if (!changed.has(id)) expect(perAccount.get(id), id).toBe(1);
    }
  });

  it('applies a custom-only change without touching friend rows, and clears a removed tag', async () => {
    const id = busiestAccount(f.store);
    const [friendId] = [...f.store.account(id)!.friends.keys()];
    f.store.setCustomTag(id, friendId!, 'Tag_SNS_Custom_Level', 'gold-"quoted"\t✓');
    f.store.setCustomTag(id, friendId!, 'Tag_SNS_Custom_Note', undefined);
    const before = await rowVersions(f.db, id);
    f.sim.clearCalls();
    await f.syncAll({ ids: [id] });
    expect(await f.diffAll()).toEqual([]);
    const after = await rowVersions(f.db, id);
    for (const [k, v] of before) if (k.startsWith('f:')) expect(after.get(k), k).toBe(v);
    // The standard sequence was sent unchanged on every page, so no standard data came back.
    expect(f.sim.calls().every((c) => c.standardSequence === f.store.truth(id).standardSequence)).toBe(true);
  });

  it('applies a standard-only change without touching tag rows', async () => {
    const id = busiestAccount(f.store);
    const friendId = [...f.store.account(id)!.friends.keys()][1]!;
    f.store.setStandardTag(id, friendId, 'Tag_SNS_IM_Remark', `new remark 'x' ${sequenceReading}`);
    f.store.setStandardTag(id, friendId, 'Tag_SNS_IM_Group', ['a', 'b "c"']);
    const before = await rowVersions(f.db, id);
    await f.syncAll({ ids: [id] });
    expect(await f.diffAll()).toEqual([]);
    const after = await rowVersions(f.db, id);
    for (const [k, v] of before) if (k.startsWith('t:')) expect(after.get(k), k).toBe(v);
    expect(after.get(`f:${friendId}`)).not.toBe(before.get(`f:${friendId}`));
  });

  it('removes a friend that is gone, with its tags', async () => {
    const id = busiestAccount(f.store);
    const victim = [...f.store.account(id)!.friends.entries()].find(
      ([, fr]) => Object.keys(fr.custom).length > 0,
    );
    expect(victim).toBeDefined();
    f.store.removeFriend(id, victim![0]);
    await f.syncAll({ ids: [id] });
    expect(await f.diffAll()).toEqual([]);
    const left = await f.db
      .selectFrom('tim.friend_tags')
      .select('tag')
      .where('account_id', '=', id)
      .where('friend_id', '=', victim![0])
      .execute();
    expect(left).toEqual([]);
    const row = await f.db
      .selectFrom('tim.accounts')
      .selectAll()
      .where('account_id', '=', id)
      .executeTakeFirstOrThrow();
    expect(row.friend_count).toBe(f.store.truth(id).friends.length);
  });

  it('restarts a pull whose sequences move between pages, and ends equal to the source', async () => {
    const id = busiestAccount(f.store);
    expect(f.store.account(id)!.friends.size).toBeGreaterThan(14);
    f.store.setStandardTag(id, [...f.store.account(id)!.friends.keys()][0]!, 'Tag_SNS_IM_Remark', 'before');
    let pages = 0;
    f.sim.onCall = (call) => {
      if (call.account === id && ++pages === 2) {
        // A change lands between page 1 and page 2 of the same pull.
        f.store.setStandardTag(
          id,
          [...f.store.account(id)!.friends.keys()][0]!,
          'Tag_SNS_IM_Remark',
          'during',
        );
      }
    };
    f.sim.clearCalls();
    try {
      const s = await f.syncAll({ ids: [id] });
      expect(s.failed).toBe(0);
    } finally {
      f.sim.onCall = undefined;
    }
    const starts = f.sim.calls().filter((c) => c.account === id && c.startIndex === 0);
    expect(starts.length).toBeGreaterThanOrEqual(2);
    expect(await f.diffAll()).toEqual([]);
    expect(await f.sequenceMismatches()).toEqual([]);
  });

  it('re-reads everything when custom data names a friend the mirror lost (drift)', async () => {
    const id = busiestAccount(f.store);
    const friendId = [...f.store.account(id)!.friends.keys()][2]!;
    await f.db
      .deleteFrom('tim.friends')
      .where('account_id', '=', id)
      .where('friend_id', '=', friendId)
      .execute();
    f.store.setCustomTag(id, friendId, 'Tag_SNS_Custom_Level', 'drift');
    const s = await f.syncAll({ ids: [id] });
    expect(s.failed).toBe(0);
    expect(await f.diffAll()).toEqual([]);
  });
});

// Failures meet the call path at its seams (errors and timeouts carried back from the thread), so
// these run on both: the call thread (the default) and TIM_CALL_THREAD=false.
describe.each([
  ['the call thread', true],
  ['this thread', false],
] as const)('sync failures, calls paced in %s', (_path, callThread) => {
  let f: MirrorFixture;

  beforeAll(async () => {
    const store = new FriendStore();
    for (const id of [
      'alice',
      'o\'brien "q"',
      'tab\tid',
      '😀 emoji',
      '用户',
      "'; drop table tim.friends; --",
    ]) {
      store.addAccount(id);
    }
    let n = 0;
    for (const id of store.accountIds()) {
      for (const other of store.accountIds()) {
        if (other === id) continue;
        store.addFriend(id, other, {
          standard: { Tag_SNS_IM_AddSource: 'AddSource_Type_Web', Tag_SNS_IM_AddTime: 1_600_000_000 + n++ },
          custom: {
            Tag_SNS_Custom_Note: `note for ${other} \\ "x"`,
            Tag_SNS_Beta_Flag: { on: true, n: [1, 2] },
          },
        });
      }
    }
    f = await mirrorFixture(
      `sync_failures_${callThread ? 'thread' : 'inline'}`,
      { store, pageSize: 2 },
      { callThread },
    );
    await f.addAllAccounts();
  });
  afterAll(async () => {
    await f?.close();
  });

  it('pulls a never-synced account that holds stray rows again for the general apply, and ends exact', async () => {
    await f.syncAll();
    const id = f.store.accountIds()[1]!;
    // Never synced as far as its row says, yet holding a row: the COPY first sync must refuse it.
    await f.db
      .updateTable('tim.accounts')
      .set({ standard_sequence: null, custom_sequence: null, last_synced_at: null })
      .where('account_id', '=', id)
      .execute();
    await f.db.insertInto('tim.friends').values({ account_id: id, friend_id: 'stray-friend' }).execute();
    f.sim.clearCalls();
    const s = await f.syncAll({ ids: [id] });
    expect(s.failed).toBe(0);
    expect(s.changed).toBe(1);
    // Two full reads: the first, held as COPY text, was refused; the second was held as JSON.
    const calls = f.sim.calls().filter((c) => c.account === id);
    expect(calls.filter((c) => c.startIndex === 0)).toHaveLength(2);
    expect(calls.every((c) => c.standardSequence === undefined && c.customSequence === undefined)).toBe(true);
    expect(await f.diffAll()).toEqual([]);
    expect(await f.sequenceMismatches()).toEqual([]);
  });

  it('round-trips odd account ids and tag values exactly', async () => {
    const s = await f.syncAll();
    expect(s.failed).toBe(0);
    expect(await f.diffAll()).toEqual([]);
    const ids = (await f.db.selectFrom('tim.accounts').select('account_id').execute()).map(
      (r) => r.account_id,
    );
    expect(ids.sort()).toEqual(f.store.accountIds().sort());
    const tag = await f.db
      .selectFrom('tim.friend_tags')
      .select('value')
      .where('account_id', '=', 'alice')
      .where('tag', '=', 'Tag_SNS_Beta_Flag')
      .limit(1)
      .executeTakeFirstOrThrow();
    expect(tag.value).toEqual({ on: true, n: [1, 2] });
  });

  it.each(['truncate', 'garbage', 'http-502', 'error:30006'] as const)(
    'rejects a %s answer with nothing written, then recovers',
    async (fault) => {
      f.store.setStandardTag('alice', 'tab\tid', 'Tag_SNS_IM_Remark', `changed by ${fault}`);
      const before = await rowVersions(f.db, 'alice');
      const seqBefore = await f.db
        .selectFrom('tim.accounts')
        .select(['standard_sequence', 'custom_sequence'])
        .where('account_id', '=', 'alice')
        .executeTakeFirstOrThrow();
      f.sim.injectFaults(fault, 1);
      const failed = await f.syncAll({ ids: ['alice'], retryAttempts: 1 });
      expect(failed.failed).toBe(1);
      expect(await rowVersions(f.db, 'alice')).toEqual(before);
      const row = await f.db
        .selectFrom('tim.accounts')
        .selectAll()
        .where('account_id', '=', 'alice')
        .executeTakeFirstOrThrow();
      expect({ standard_sequence: row.standard_sequence, custom_sequence: row.custom_sequence }).toEqual(
        seqBefore,
      );
      expect(row.status).toBe('failing');
      expect(row.last_error).toBeTruthy();

      const ok = await f.syncAll({ ids: ['alice'] });
      expect(ok.failed).toBe(0);
      expect(await f.diffAll()).toEqual([]);
    },
  );

  it('fails a page that is rejected mid-pull without writing its earlier pages', async () => {
    f.store.setStandardTag('alice', '用户', 'Tag_SNS_IM_Remark', 'mid-pull');
    const before = await rowVersions(f.db, 'alice');
    let calls = 0;
    f.sim.onCall = (call) => {
      if (call.account === 'alice' && ++calls === 2) f.sim.injectFaults('truncate', 1);
    };
    try {
      const s = await f.syncAll({ ids: ['alice'], retryAttempts: 1 });
      expect(s.failed).toBe(1);
    } finally {
      f.sim.onCall = undefined;
    }
    expect(await rowVersions(f.db, 'alice')).toEqual(before);
    await f.syncAll({ ids: ['alice'] });
    expect(await f.diffAll()).toEqual([]);
  });

  it('marks an account Tencent does not know as missing (30003), keeping other accounts going', async () => {
    await f.db.insertInto('tim.accounts').values({ account_id: 'ghost' }).execute();
    const s = await f.syncAll();
    expect(s.missing).toBe(1);
    expect(s.failed).toBe(0);
    const ghost = await f.db
      .selectFrom('tim.accounts')
      .selectAll()
      .where('account_id', '=', 'ghost')
      .executeTakeFirstOrThrow();
    expect(ghost.status).toBe('missing');
    expect(ghost.last_error).toContain('30003');
    expect(await f.diffAll()).toEqual([]);
  });

  // Only paced on this thread: the simulator stamps arrivals on this thread's event loop, which the
  // call thread does not wait on, so behind a stall here the stamps of calls it sent on time bunch
  // up. The call thread's quota at a simulator in a process of its own: call-thread.process.test.ts.
  it.skipIf(callThread)('never exceeds the rate limit in any one-second window', async () => {
    f.sim.configure({ rateLimit: 40 });
    f.sim.clearCalls();
    await f.db.updateTable('tim.accounts').set({ standard_sequence: null, custom_sequence: null }).execute();
    try {
      // ~6 accounts × 3 pages, run three times over: enough calls to span several seconds at 40/s.
      for (let i = 0; i < 6; i++) {
        await f.db
          .updateTable('tim.accounts')
          .set({ standard_sequence: null, custom_sequence: null })
          .execute();
        // The simulator shares this process's event loop, so a busy test machine delays arrivals by
        // tens of ms; the limiter's jitter allowance is set to cover that, as an operator would for a
        // jittery network.
        await f.syncAll({ ratePerSecond: 40, jitterMs: 100, concurrency: 16 });
      }
    } finally {
      f.sim.configure({ rateLimit: 0 });
    }
    const calls = f.sim.calls();
    expect(calls.length).toBeGreaterThan(80);
    expect(calls.filter((c) => c.errorCode === 60007)).toEqual([]);
    expect(f.sim.maxCallsInWindow(1000)).toBeLessThanOrEqual(40);
    expect(f.sim.stats().reusedRandoms).toBe(0);
  });
});

function busiestAccount(store: FriendStore): string {
  let best = '';
  let most = -1;
  for (const id of store.accountIds()) {
    const n = store.account(id)!.friends.size;
    if (n > most) {
      most = n;
      best = id;
    }
  }
  return best;
}
