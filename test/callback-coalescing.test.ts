/**
 * Webhooks end to end inside one process: the simulator changes friendships and POSTs signed
 * callbacks to the real receiver, which marks accounts in Postgres; the daemon's own claim and
 * sync code then pulls them. Counted in the simulator's call log:
 * - a burst of callbacks for an account waiting to be synced costs one pull;
 * - a callback that arrives while the account's pull is in flight (that pull read the list before
 *   the change) costs exactly one more pull, and the change is in the mirror at the end.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { requestResync } from '../src/db/accounts.js';
import { FriendWriter } from '../src/db/friend-writer.js';
import { claimDueAccounts } from '../src/db/leases.js';
import { type CallbackServer, startCallbackServer } from '../src/http/callback-server.js';
import { createLogger } from '../src/log.js';
import { FriendStore } from '../src/simulator/index.js';
import { syncAccount } from '../src/sync/account-sync.js';
import { limitedCall } from '../src/sync/pass.js';
import { ResyncQueue } from '../src/sync/resync-queue.js';
import { CallbackVerifier } from '../src/tim/callback-sign.js';
import type { FriendGetCall } from '../src/tim/friend-pull.js';
import { type MirrorFixture, mirrorFixture, SDK_APP_ID } from './fixtures/mirror.js';

const TOKEN = `cb-${randomBytes(12).toString('hex')}`;
const TAGS = { standard: { Tag_SNS_IM_AddSource: 'AddSource_Type_Web', Tag_SNS_IM_AddTime: 1_700_000_000 } };

let fx: MirrorFixture;
let queue: ResyncQueue;
let receiver: CallbackServer;
const stop = new AbortController();

beforeAll(async () => {
  const store = new FriendStore();
  for (const id of ['alice', 'bob', 'carol', 'dave']) store.addAccount(id);
  for (const [a, b] of [
    ['alice', 'bob'],
    ['alice', 'carol'],
    ['carol', 'dave'],
  ] as const) {
    store.addFriend(a, b, TAGS);
    store.addFriend(b, a, TAGS);
  }
  fx = await mirrorFixture('callback_coalescing', { store });
  queue = new ResyncQueue({
    mark: async (ids) => {
      await requestResync(fx.db, { ids }, { full: false });
    },
  });
  receiver = await startCallbackServer({
    host: '127.0.0.1',
    port: 0,
    sdkAppId: SDK_APP_ID,
    verifier: new CallbackVerifier({ token: TOKEN, maxSkewSeconds: 300 }),
    enqueue: (ids) => queue.add(ids),
    log: createLogger('silent'),
  });
  await fx.addAllAccounts();
  await runDue();
  expect(await fx.diffAll()).toEqual([]);
  fx.sim.setCallback({ url: `${receiver.url}/tim/callback`, token: TOKEN });
});

afterAll(async () => {
  stop.abort();
  await receiver?.close();
  await queue?.close();
  await fx?.close();
});

beforeEach(() => {
  fx.sim.clearCalls();
});

/**
 * What the daemon does, one account at a time: claim due accounts (resync requests first) and
 * sync them, until nothing is due. `wrap` may stand between a sync and its friend_get calls.
 */
async function runDue(wrap?: (call: FriendGetCall, accountId: string) => FriendGetCall): Promise<void> {
  const writer = new FriendWriter(fx.db);
  for (;;) {
    const claimed = await claimDueAccounts(fx.db, { owner: 'test', limit: 50, leaseMs: 60_000 });
    if (claimed.length === 0) return;
    for (const state of claimed) {
      const call = limitedCall(
        { client: fx.client, limiter: fx.limiter, retry: { attempts: 2 } },
        stop.signal,
      );
      await syncAccount(
        {
          db: fx.db,
          writer,
          call: wrap ? wrap(call, state.accountId) : call,
          nextSync: { intervalMs: 3_600_000 },
        },
        state,
      );
    }
  }
}

/** Pulls of `account` the simulator answered: first pages. */
function pulls(account: string): number {
  return fx.sim.calls().filter((c) => c.account === account && c.errorCode === 0 && c.startIndex === 0)
    .length;
}

describe('webhooks → pulls', () => {
  it('20 callbacks for one account while it waits: 20 marks, 1 pull', async () => {
    const before = fx.sim.callbackStats();
    for (let i = 0; i < 20; i++) {
      // Each change is its own callback, answered (and its mark written) before the next.
      fx.store.addFriend('alice', `ext_${i}`, TAGS);
      await fx.sim.callbacksIdle();
    }
    const after = fx.sim.callbackStats();
    expect(after.sent - before.sent).toBe(20);
    expect(after.ok - before.ok).toBe(20);
    expect(fx.sim.calls()).toEqual([]);

    await runDue();
    expect(pulls('alice')).toBe(1);
    // Accounts that are not mirrored (ext_*) were neither added nor pulled.
    expect(fx.sim.calls().map((c) => c.account)).toEqual(['alice']);
    expect(await fx.diffAll()).toEqual([]);
  });

  it('a callback during the pull that missed its change: exactly one more pull, and the change lands', async () => {
    let held = false;
    await runDue(); // nothing due
    // Make alice due, as a first callback would.
    fx.store.setStandardTag('alice', 'carol', 'Tag_SNS_IM_Remark', 'first change');
    await requestResync(fx.db, { ids: ['alice'] }, { full: false });

    let leasedDuringPull: unknown;
    await runDue((call, accountId) => async (req) => {
      const page = await call(req);
      if (accountId === 'alice' && !held) {
        held = true;
        // The pull has read alice's list; now the friendship ends at "Tencent", and the callbacks
        // (five of them: a burst) reach the receiver while alice is still leased to this sync.
        fx.store.removeFriend('alice', 'bob');
        fx.store.removeFriend('bob', 'alice');
        await fx.sim.callbacksIdle();
        for (let i = 0; i < 4; i++) {
          fx.store.addFriend('alice', `burst_${i}`, TAGS);
          fx.store.removeFriend('alice', `burst_${i}`);
          await fx.sim.callbacksIdle();
        }
        // Read here, asserted after the pass: an expect thrown inside the pull would only fail
        // this sync, which the resync mark would then repeat, and the test would still pass.
        leasedDuringPull = await fx.db
          .selectFrom('tim.accounts')
          .select(['lease_owner', 'priority'])
          .where('account_id', '=', 'alice')
          .executeTakeFirstOrThrow();
      }
      return page;
    });
    expect(held).toBe(true);
    expect(leasedDuringPull).toEqual({ lease_owner: 'test', priority: 0 });
    const alice = await fx.db
      .selectFrom('tim.accounts')
      .select(['failures', 'status'])
      .where('account_id', '=', 'alice')
      .executeTakeFirstOrThrow();
    expect(alice).toEqual({ failures: 0, status: 'ok' });
    expect(pulls('alice')).toBe(2);
    expect(pulls('bob')).toBe(1);
    const friends = await fx.db
      .selectFrom('tim.friends')
      .select('friend_id')
      .where('account_id', '=', 'alice')
      .where('friend_id', '=', 'bob')
      .execute();
    expect(friends).toEqual([]);
    expect(await fx.diffAll()).toEqual([]);
  });
});
