/**
 * A clean run prints no Node warning. The built CLI runs as a child process against the simulator:
 * a `run` daemon over a few hundred accounts until every one is synced, then SIGTERM; then a
 * `sync --all` after a full resync request. Neither may write a `(node:<pid>) ...Warning` line to
 * stderr. The warning this guards against: dozens of calls in flight on the one shutdown signal
 * each added an `abort` listener to it (MaxListenersExceededWarning).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addAccounts, requestResync } from '../src/db/accounts.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { generateApp, Simulator } from '../src/simulator/index.js';
import { buildCli } from './fixtures/build.js';
import { type DaemonProcess, spawnDaemon, waitUntil } from './fixtures/daemon-process.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000777;
const KEY = 'warnings-test-key';
const ACCOUNTS = 300;

/** Lines Node itself writes to stderr (warnings and deprecations), as opposed to our JSON logs. */
function nodeWarnings(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((l) => /^\(node:\d+\)/.test(l) || (!l.startsWith('{') && /Warning/.test(l)));
}

describe('no Node warnings on a clean run', () => {
  let database: TestDatabase;
  let db: ReturnType<typeof createDb>;
  let sim: Simulator;
  let cli: string;
  let env: Record<string, string>;
  let daemon: DaemonProcess | undefined;

  beforeAll(async () => {
    cli = await buildCli();
    database = await createTestDatabase('warnings');
    db = createDb(database.url, { maxConnections: 2 });
    await migrateToLatest(db);
    const store = generateApp({ accounts: ACCOUNTS, meanFriends: 60, maxFriends: 600, seed: 7 });
    await addAccounts(db, store.accountIds());
    // Small pages: most accounts take several calls, so many calls and applies overlap.
    sim = new Simulator({
      store,
      sdkAppId: APP,
      secretKey: KEY,
      rateLimit: 0,
      pageSize: 50,
      latencyMs: [2, 8],
    });
    env = {
      DATABASE_URL: database.url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: await sim.listen(),
      TIM_RATE_LIMIT: '1000',
      SYNC_INTERVAL: '1h',
      HTTP_PORT: '0',
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'json',
    };
  }, 180_000);

  afterAll(async () => {
    if (daemon?.running()) daemon.child.kill('SIGKILL');
    await daemon?.exited;
    await sim?.close();
    await db?.destroy();
    await database?.drop();
  });

  it(`run: ${ACCOUNTS} accounts synced, then SIGTERM`, async () => {
    daemon = spawnDaemon(cli, env);
    const d = daemon;
    await d.adminUrl;
    await waitUntil(
      'every account synced',
      async () => {
        const r = await sql<{ n: number }>`
          SELECT count(*)::int AS n FROM tim.accounts WHERE last_synced_at IS NULL`.execute(db);
        return r.rows[0]?.n === 0;
      },
      120_000,
      () => d.tail(),
    );
    d.child.kill('SIGTERM');
    const exit = await d.exited;
    expect(exit.code, d.tail()).toBe(0);
    expect(nodeWarnings(d.logs.join('\n'))).toEqual([]);
  });

  it('sync --all after a full resync request', async () => {
    await requestResync(db, { all: true }, { full: true });
    const child = spawn(process.execPath, [cli, 'sync', '--all'], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code, stderr.slice(-2000)).toBe(0);
    expect(stdout).toContain(`synced ${ACCOUNTS}/${ACCOUNTS} account(s)`);
    expect(nodeWarnings(stderr)).toEqual([]);
  });
});
