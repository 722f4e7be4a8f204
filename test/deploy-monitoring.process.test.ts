/**
 * The Grafana dashboard and the Prometheus alert rules in `deploy/` use only metrics that a running
 * `friend-mirror run` exports: a real daemon syncs a few accounts from the simulator into Postgres,
 * its `/metrics` is scraped, and every metric name in both files' PromQL must be one of its
 * families. A renamed metric then fails here instead of leaving a panel or an alert empty.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addAccounts } from '../src/db/accounts.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { FriendStore, Simulator } from '../src/simulator/index.js';
import { buildCli } from './fixtures/build.js';
import { type DaemonProcess, spawnDaemon, waitUntil } from './fixtures/daemon-process.js';
import { exportedSeriesNames, metricNames, monitoringQueries } from './fixtures/monitoring.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000555;
const KEY = 'monitoring-test-key';
const ACCOUNTS = 20;
const id = (i: number) => `mon_${String(i).padStart(3, '0')}`;

/** The value of an unlabelled sample, or NaN. */
function sample(body: string, name: string): number {
  const line = body.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}

describe('deploy/ monitoring files against the metrics of a running daemon', () => {
  let database: TestDatabase;
  let db: ReturnType<typeof createDb>;
  let sim: Simulator;
  let daemon: DaemonProcess;
  let body: string;

  beforeAll(async () => {
    const cli = await buildCli();
    database = await createTestDatabase('monitoring');
    db = createDb(database.url, { maxConnections: 2 });
    await migrateToLatest(db);
    const store = new FriendStore();
    for (let i = 0; i < ACCOUNTS; i++) store.addAccount(id(i));
    for (let i = 0; i < ACCOUNTS; i++) {
      store.addFriend(id(i), id((i + 1) % ACCOUNTS), {
        standard: { Tag_SNS_IM_AddSource: 'AddSource_Type_Web', Tag_SNS_IM_AddTime: 1_700_000_000 },
      });
    }
    await addAccounts(db, store.accountIds());
    sim = new Simulator({ store, sdkAppId: APP, secretKey: KEY, rateLimit: 200, latencyMs: [5, 10] });
    const baseUrl = await sim.listen();
    daemon = spawnDaemon(cli, {
      DATABASE_URL: database.url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: baseUrl,
      TIM_RATE_LIMIT: '100',
      SYNC_INTERVAL: '1s',
      HTTP_PORT: '0',
      // The webhook receiver on, as in production, so its metrics are the ones a deployment has.
      TIM_CALLBACK_TOKEN: 'monitoring-test-callback-token',
      CALLBACK_PORT: '0',
      LOG_LEVEL: 'info',
      SHUTDOWN_TIMEOUT: '5s',
    });
    const adminUrl = await daemon.adminUrl;
    // Every account synced at least twice: first syncs, then re-checks every SYNC_INTERVAL.
    await waitUntil(
      'two sweeps',
      async () => {
        body = await (await fetch(`${adminUrl}/metrics`)).text();
        return (
          sample(body, 'tim_mirror_account_syncs_total{result="changed"}') >= ACCOUNTS &&
          sample(body, 'tim_mirror_account_syncs_total{result="unchanged"}') >= ACCOUNTS
        );
      },
      60_000,
      () => `${daemon.tail()}\n--- last scrape\n${body}`,
      500,
    );
  }, 180_000);

  afterAll(async () => {
    if (daemon?.running()) {
      daemon.child.kill('SIGTERM');
      await daemon.exited;
    }
    await sim?.close();
    await db?.destroy();
    await database?.drop();
  });

  it('every metric used by the dashboard and the alert rules is exported', () => {
    const exported = exportedSeriesNames(body);
    const queries = monitoringQueries();
    const used = new Set<string>();
    const missing: string[] = [];
    for (const q of queries) {
      for (const name of metricNames(q.expr)) {
        used.add(name);
        if (!exported.has(name)) missing.push(`${q.where}: ${name}`);
      }
    }
    expect(missing).toEqual([]);
    // The parse found the names the files are about, not next to nothing.
    expect(used.size).toBeGreaterThanOrEqual(20);
    for (const name of [
      'tim_mirror_calls_total',
      'tim_mirror_call_budget_per_second',
      'tim_mirror_sync_lag_seconds',
      'tim_mirror_sync_interval_seconds',
      'tim_mirror_accounts',
      'tim_mirror_callbacks_total',
      'tim_mirror_apply_duration_seconds_bucket',
      'tim_mirror_replicas',
      'tim_mirror_ready',
    ])
      expect(used, name).toContain(name);
  });

  it('exports what the alerts compare with values that make sense for this daemon', () => {
    expect(sample(body, 'tim_mirror_ready')).toBe(1); // checked on the scrape, no /readyz probe needed
    expect(sample(body, 'tim_mirror_call_budget_per_second')).toBe(100);
    expect(sample(body, 'tim_mirror_call_share_per_second')).toBe(100);
    expect(sample(body, 'tim_mirror_replicas')).toBe(1);
    expect(sample(body, 'tim_mirror_sync_interval_seconds')).toBe(1);
    expect(sample(body, 'tim_mirror_apply_duration_seconds_count')).toBeGreaterThanOrEqual(ACCOUNTS);
  });
});
