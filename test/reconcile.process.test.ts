/**
 * Reconciliation end to end: a real `friend-mirror run` daemon with SYNC_RECONCILE_INTERVAL=3s and
 * SYNC_INTERVAL=1h (so only reconciles read anything after the first sync). Mirror rows are
 * corrupted behind its back with SQL (sequences untouched, so incremental syncs would never notice)
 * and the daemon must repair them within one interval, count the drift in its metrics and log it.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import { addAccounts } from '../src/db/accounts.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { FriendStore, Simulator } from '../src/simulator/index.js';
import { diffAccount } from '../src/verify.js';
import { buildCli } from './fixtures/build.js';
import { type DaemonProcess, spawnDaemon, waitUntil } from './fixtures/daemon-process.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000777;
const KEY = 'reconcile-test-key';
const INTERVAL_MS = 3_000;
const ACCOUNTS = 12;

describe('reconciliation repairs drift the sequences cannot see', () => {
  let database: TestDatabase;
  let db: ReturnType<typeof createDb>;
  let sim: Simulator;
  let daemon: DaemonProcess;
  let store: FriendStore;
  const ids = Array.from({ length: ACCOUNTS }, (_, i) => `rc_${String(i).padStart(3, '0')}`);

  async function diffAll(): Promise<string[]> {
    const out: string[] = [];
    for (const id of ids) out.push(...(await diffAccount(db, id, store.truth(id).friends)));
    return out;
  }

  async function metric(name: string): Promise<number> {
    const body = await (await fetch(`${await daemon.adminUrl}/metrics`)).text();
    const line = body.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
  }

  beforeAll(async () => {
    const cli = await buildCli();
    database = await createTestDatabase('reconcile_process');
    db = createDb(database.url, { maxConnections: 2 });
    await migrateToLatest(db);
    store = new FriendStore();
    for (const id of ids) store.addAccount(id);
    for (const [i, id] of ids.entries()) {
      for (let k = 1; k <= 7; k++) {
        store.addFriend(id, ids[(i + k) % ids.length]!, {
          standard: {
            Tag_SNS_IM_Remark: `r${k}`,
            Tag_SNS_IM_Group: ['g'],
            Tag_SNS_IM_AddTime: 1_700_000_000 + k,
          },
          custom: k % 2 === 0 ? { Tag_SNS_Custom_Level: `L${k}` } : {},
        });
      }
    }
    await addAccounts(db, ids);
    sim = new Simulator({ store, sdkAppId: APP, secretKey: KEY, rateLimit: 0, pageSize: 3 });
    const baseUrl = await sim.listen();
    daemon = spawnDaemon(cli, {
      DATABASE_URL: database.url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: baseUrl,
      SYNC_INTERVAL: '1h',
      SYNC_RECONCILE_INTERVAL: `${INTERVAL_MS}ms`,
      SYNC_CONCURRENCY: '8',
      HTTP_PORT: '0',
      LOG_LEVEL: 'info',
      SHUTDOWN_TIMEOUT: '5s',
    });
    await daemon.adminUrl;
  }, 180_000);

  afterAll(async () => {
    if (daemon?.running()) daemon.child.kill('SIGKILL');
    await daemon?.exited;
    await sim?.close();
    await db?.destroy();
    await database?.drop();
  });

  it('repairs a changed remark, a deleted friend and a bogus friend within one interval', async () => {
    await waitUntil(
      'the first sync of every account',
      async () => {
        const r = await sql<{ n: number }>`
          SELECT count(*)::int AS n FROM tim.accounts WHERE last_synced_at IS NOT NULL`.execute(db);
        return r.rows[0]!.n === ACCOUNTS;
      },
      60_000,
      () => daemon.tail(),
    );
    expect(await diffAll()).toEqual([]);
    // Reconciles of an unchanged source found nothing: no false drift.
    await waitUntil(
      'a few reconciles',
      async () => (await metric('tim_mirror_reconciles_total')) >= ACCOUNTS,
      20_000,
    );
    expect(await metric('tim_mirror_reconcile_drift_total')).toBe(0);

    const [a, b, c] = [ids[1]!, ids[5]!, ids[9]!];
    const seqBefore = await db
      .selectFrom('tim.accounts')
      .select(['account_id', 'standard_sequence', 'custom_sequence'])
      .orderBy('account_id')
      .execute();
    const victimB = (
      await db
        .selectFrom('tim.friends')
        .select('friend_id')
        .where('account_id', '=', b)
        .limit(1)
        .executeTakeFirstOrThrow()
    ).friend_id;
    const corruptedAt = Date.now();
    await db
      .updateTable('tim.friends')
      .set({ remark: 'corrupted behind the mirror' })
      .where('account_id', '=', a)
      .execute();
    await db.deleteFrom('tim.friends').where('account_id', '=', b).where('friend_id', '=', victimB).execute();
    await db
      .insertInto('tim.friends')
      .values({ account_id: c, friend_id: 'bogus_friend', remark: 'not at the source' })
      .execute();
    const diffs = await diffAll();
    expect(diffs.some((d) => d.includes(JSON.stringify(a)))).toBe(true);
    expect(diffs.some((d) => d.includes(`friend ${JSON.stringify(victimB)} missing`))).toBe(true);
    expect(diffs.some((d) => d.includes('"bogus_friend" in the mirror but not at the source'))).toBe(true);

    // One interval, plus the scheduler's idle wait (1 s) and the sync itself on a loaded machine.
    await waitUntil(
      'the mirror to equal the source again',
      async () => (await diffAll()).length === 0,
      INTERVAL_MS + 4_000,
      async () => `${(await diffAll()).join('\n')}\n${daemon.tail()}`,
    );
    const repairedAfterMs = Date.now() - corruptedAt;
    console.log(
      `reconcile repaired the corrupted rows ${repairedAfterMs} ms after the corruption (interval ${INTERVAL_MS} ms)`,
    );

    // The sequences never moved: only the full reads could have repaired this.
    const seqAfter = await db
      .selectFrom('tim.accounts')
      .select(['account_id', 'standard_sequence', 'custom_sequence'])
      .orderBy('account_id')
      .execute();
    expect(seqAfter).toEqual(seqBefore);

    // Counted: one drift per corrupted account, and the friend rows repaired (7 remarks, 1 re-added, 1 deleted).
    await waitUntil(
      'the drift metric',
      async () => (await metric('tim_mirror_reconcile_drift_total')) >= 3,
      5_000,
    );
    expect(await metric('tim_mirror_reconcile_drift_total')).toBe(3);
    expect(await metric('tim_mirror_reconcile_rows_repaired_total{table="friends"}')).toBe(9);
    // ... and logged at warn, with the account and the counts.
    const warnings = daemon.logs
      .map(
        (l) => JSON.parse(l) as { level: number; msg: string; account?: string; friendRowsRepaired?: number },
      )
      .filter((l) => l.level === 40 && l.msg.includes('repaired drift'));
    expect(warnings.map((w) => [w.account, w.friendRowsRepaired]).sort()).toEqual([
      [a, 7],
      [b, 1],
      [c, 1],
    ]);

    // `status` shows the reconcile backlog.
    const out: string[] = [];
    expect(
      await main(['status'], {
        env: { DATABASE_URL: database.url, LOG_LEVEL: 'silent' },
        out: (l) => out.push(l),
      }),
    ).toBe(0);
    expect(out.find((l) => l.startsWith('reconcile backlog:'))).toMatch(
      /^reconcile backlog: \d+ account\(s\) overdue for a full read.*; 12 scheduled$/,
    );

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
