/**
 * Webhook freshness under load: one `friend-mirror run` process with its webhook receiver, syncing
 * 3,000 accounts that come due faster than 200 calls/s can serve them, while the simulator deletes
 * friendships and POSTs the signed `Sns.CallbackFriendDelete` Tencent would. Measured: from the
 * change at the simulator to the row gone from `tim.friends`, for 50 changes one after another
 * (p50/p95/max printed for BENCHMARKS.md). Also: the process's callback metrics, a refused
 * callback on the real port, and a clean SIGTERM.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { percentile } from '../bench/lib/percentile.js';
import { addAccounts } from '../src/db/accounts.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { FriendStore, friendCallbackUrl, Simulator } from '../src/simulator/index.js';
import { buildCli } from './fixtures/build.js';
import { type DaemonProcess, spawnDaemon, waitUntil } from './fixtures/daemon-process.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000999;
const KEY = 'webhook-test-key';
const TOKEN = 'webhook-test-callback-token';
const ACCOUNTS = 3000;
const LIMIT = 200;
const CHANGES = 50;
/** The bound: a deleted friendship is gone from the mirror within this. */
const BOUND_MS = 2_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const id = (i: number) => `user_${String(i).padStart(5, '0')}`;

describe('webhook → mirror, with the daemon at its rate limit', () => {
  let database: TestDatabase;
  let db: ReturnType<typeof createDb>;
  let sim: Simulator;
  let daemon: DaemonProcess;
  let callbackUrl: string;
  let adminUrl: string;

  beforeAll(async () => {
    const cli = await buildCli();
    database = await createTestDatabase('webhook');
    db = createDb(database.url, { maxConnections: 2 });
    await migrateToLatest(db);
    const store = new FriendStore();
    for (let i = 0; i < ACCOUNTS; i++) store.addAccount(id(i));
    // A ring, both directions: every account has two friends and one page.
    for (let i = 0; i < ACCOUNTS; i++) {
      const tags = {
        standard: { Tag_SNS_IM_AddSource: 'AddSource_Type_Web', Tag_SNS_IM_AddTime: 1_700_000_000 },
      };
      store.addFriend(id(i), id((i + 1) % ACCOUNTS), tags);
      store.addFriend(id((i + 1) % ACCOUNTS), id(i), tags);
    }
    await addAccounts(db, store.accountIds());
    sim = new Simulator({ store, sdkAppId: APP, secretKey: KEY, rateLimit: LIMIT, latencyMs: [10, 40] });
    const baseUrl = await sim.listen();
    daemon = spawnDaemon(cli, {
      DATABASE_URL: database.url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: baseUrl,
      TIM_RATE_LIMIT: String(LIMIT),
      TIM_RATE_JITTER_MS: '40',
      SYNC_CONCURRENCY: '32',
      // 3,000 accounts every ~10 s is 300/s of demand against 192/s: always a backlog.
      SYNC_INTERVAL: '10s',
      SYNC_LEASE: '20s',
      HTTP_PORT: '0',
      TIM_CALLBACK_TOKEN: TOKEN,
      CALLBACK_PORT: '0',
      LOG_LEVEL: 'info',
      LOG_SUMMARY_INTERVAL: '5s',
      SHUTDOWN_TIMEOUT: '5s',
    });
    const started = await daemon.waitForLog('daemon started', (l) => l.msg === 'daemon started', 60_000);
    adminUrl = started.admin as string;
    callbackUrl = `${started.callback as string}/tim/callback`;
    sim.setCallback({ url: callbackUrl, token: TOKEN });
  }, 180_000);

  afterAll(async () => {
    if (daemon?.running()) {
      daemon.child.kill('SIGKILL');
      await daemon.exited;
    }
    await sim?.close();
    await db?.destroy();
    await database?.drop();
  });

  it(`a deleted friendship leaves tim.friends within ${BOUND_MS / 1000} s (${CHANGES} changes, p50/p95/max)`, async () => {
    // Wait for the first sweep, so every row a change deletes is in the mirror first.
    await waitUntil(
      'the first sweep',
      async () =>
        Number(
          (
            await db
              .selectFrom('tim.accounts')
              .select((eb) => eb.fn.countAll<string>().as('n'))
              .where('last_synced_at', 'is not', null)
              .executeTakeFirstOrThrow()
          ).n,
        ) === ACCOUNTS,
      90_000,
      () => daemon.tail(),
    );
    const rowExists = async (a: string, b: string) =>
      (await db
        .selectFrom('tim.friends')
        .select('friend_id')
        .where('account_id', '=', a)
        .where('friend_id', '=', b)
        .executeTakeFirst()) !== undefined;

    const dueNow = async () =>
      Number(
        (
          await db
            .selectFrom('tim.accounts')
            .select((eb) => eb.fn.countAll<string>().as('n'))
            .where('next_sync_at', '<=', new Date())
            .executeTakeFirstOrThrow()
        ).n,
      );
    const measureFrom = Date.now();
    const latencies: number[] = [];
    const backlog: number[] = [];
    for (let n = 0; n < CHANGES; n++) {
      // Spread over the ring so each change hits an account the mirror synced a while ago.
      const a = id((n * 59) % ACCOUNTS);
      const b = id(((n * 59) % ACCOUNTS) + 1);
      expect(await rowExists(a, b), `${a} → ${b} mirrored before the change`).toBe(true);
      backlog.push(await dueNow());
      const t0 = performance.now();
      sim.store.removeFriend(a, b);
      for (;;) {
        if (!(await rowExists(a, b))) break;
        if (performance.now() - t0 > 30_000)
          throw new Error(`${a} → ${b} still mirrored after 30 s\n${daemon.tail()}`);
        await sleep(10);
      }
      latencies.push(performance.now() - t0);
      if (latencies.filter((ms) => ms >= BOUND_MS).length > 1) {
        throw new Error(
          `changes took ${latencies.map((ms) => ms.toFixed(0)).join(', ')} ms; is the webhook path marking accounts?`,
        );
      }
      await sleep(100);
    }
    const measureTo = Date.now();
    await sim.callbacksIdle();

    const callsDuring = sim.calls().filter((c) => c.at >= measureFrom && c.at < measureTo).length;
    const rate = callsDuring / ((measureTo - measureFrom) / 1000);
    const sorted = [...latencies].sort((x, y) => x - y);
    const [p50, p95, max] = [percentile(sorted, 50), percentile(sorted, 95), sorted.at(-1)!];
    console.log(
      `[webhook] ${CHANGES} friend deletes, change at simulator → row gone from tim.friends: ` +
        `p50 ${p50.toFixed(0)} ms, p95 ${p95.toFixed(0)} ms, max ${max.toFixed(0)} ms, min ${sorted[0]!.toFixed(0)} ms; ` +
        `daemon meanwhile at ${rate.toFixed(1)} calls/s (limit ${LIMIT}) with ${Math.min(...backlog)}-${Math.max(...backlog)} ` +
        `accounts due and waiting (${ACCOUNTS} accounts, SYNC_INTERVAL 10s)`,
    );
    expect(sim.callbackStats()).toMatchObject({ sent: CHANGES, ok: CHANGES, failed: 0 });
    // The daemon was busy the whole time: accounts were due and waiting at every change. (Its call
    // rate, printed above, is a speed: `npm run bench` measures that, this test does not judge it.)
    expect(Math.min(...backlog), 'accounts were waiting their turn at every change').toBeGreaterThan(100);
    expect(p95).toBeLessThan(BOUND_MS);
    // The machine is shared; one slow outlier is reported above, a systematic miss fails here.
    expect(sorted.filter((ms) => ms >= BOUND_MS).length).toBeLessThanOrEqual(1);

    // Each callback names two accounts, both synced by this one replica; the last change's second
    // account may still be syncing when its first one's row is gone.
    let metrics = '';
    const observed = () => Number(/tim_mirror_callback_to_sync_seconds_count (\d+)/.exec(metrics)?.[1]);
    await waitUntil(
      'callback_to_sync_seconds to cover every callback account',
      async () => {
        metrics = await (await fetch(`${adminUrl}/metrics`)).text();
        return observed() === 2 * CHANGES;
      },
      10_000,
      () => `observed ${observed()}`,
    );
    // Accepted: marked before the answer, or (on a slow moment) queued and marked right after.
    const accepted = ['marked', 'queued'].reduce((n, outcome) => {
      const re = new RegExp(
        `tim_mirror_callbacks_total\\{command="Sns.CallbackFriendDelete",outcome="${outcome}"\\} (\\d+)`,
      );
      return n + Number(re.exec(metrics)?.[1] ?? 0);
    }, 0);
    expect(accepted).toBe(CHANGES);
    const sum = Number(/tim_mirror_callback_to_sync_seconds_sum ([\d.e+-]+)/.exec(metrics)?.[1]);
    console.log(
      `[webhook] callback_to_sync_seconds: ${observed()} observations, mean ${((1000 * sum) / observed()).toFixed(0)} ms`,
    );
  });

  it('the public port refuses a bad signature and serves nothing else', async () => {
    const url = friendCallbackUrl(callbackUrl, {
      sdkAppId: APP,
      command: 'Sns.CallbackFriendDelete',
      token: 'wrong-token',
    });
    const res = await fetch(url, {
      method: 'POST',
      body: JSON.stringify({ PairList: [{ From_Account: id(7), To_Account: id(8) }] }),
    });
    expect(res.status).toBe(401);
    const metrics = await fetch(callbackUrl.replace('/tim/callback', '/metrics'));
    expect(metrics.status).toBe(404);
    await metrics.body?.cancel();
  });

  it('SIGTERM: exits 0', async () => {
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toEqual({ code: 0, signal: null });
    expect(daemon.logs.join('\n')).not.toContain(TOKEN);
  });
});
