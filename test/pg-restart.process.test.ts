/**
 * Postgres restarts under a running daemon: a dedicated embedded PostgreSQL (its own data dir and
 * port) is stopped while `friend-mirror run` is mid-sweep. The daemon must stay alive (`/healthz`
 * 200), report not ready (`/readyz` 503) within a few seconds, become ready again soon after the
 * server is back on the same data dir and port, finish every account with the mirror equal to the
 * source, and still stop cleanly (SIGTERM, exit code 0).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import { addAccounts } from '../src/db/accounts.js';
import { type EmbeddedPostgres, startEmbeddedPostgres } from '../src/db/embedded.js';
import { createDb } from '../src/db/pool.js';
import { generateApp, Simulator } from '../src/simulator/index.js';
import { buildCli } from './fixtures/build.js';
import { type DaemonProcess, spawnDaemon, waitUntil } from './fixtures/daemon-process.js';
import { checkMirror, TruthHistory } from './fixtures/truth-history.js';

const APP = 1400000999;
const KEY = 'pg-restart-test-key';
const ACCOUNTS = 400;
const RATE = 60;
/** Stop Postgres once this many accounts are synced. */
const STOP_AFTER_SYNCED = 60;
/** How long Postgres stays down. */
const OUTAGE_MS = 4_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A port nobody listens on right now (the embedded server is then started on it, twice). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Whether the daemon still runs, its warnings and errors, and its last lines: for failure messages. */
function describeDaemon(d: DaemonProcess): string {
  const warnings = d.logs.filter((l) => /"level":(40|50|60)/.test(l) || !l.startsWith('{'));
  return [
    d.running() ? 'daemon running' : `daemon EXITED: ${JSON.stringify(d.exit())}`,
    `--- warn/error/non-JSON lines (${warnings.length}):`,
    ...warnings.slice(0, 40),
    '--- last lines:',
    d.tail(8),
  ].join('\n');
}

/** True while the daemon runs; throws (ending a wait at once) when it has exited. */
function alive(d: DaemonProcess): true {
  if (!d.running()) throw new Error(`the daemon exited\n${describeDaemon(d)}`);
  return true;
}

/** Status of an admin endpoint, or the network error's message when the request fails. */
async function httpStatus(url: string): Promise<number | string> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    await res.arrayBuffer();
    return res.status;
  } catch (err) {
    return `request failed: ${(err as Error).message}`;
  }
}

describe('Postgres restarting under a running daemon', () => {
  let dataDir: string;
  let port: number;
  let server: EmbeddedPostgres | undefined;
  let url: string;
  let sim: Simulator;
  let history: TruthHistory;
  let cli: string;
  let daemon: DaemonProcess | undefined;
  const serverLog: string[] = [];

  /** Runs `work` on a short-lived pool, so no idle connection of ours lives through the outage. */
  async function withDb<T>(work: (db: ReturnType<typeof createDb>) => Promise<T>): Promise<T> {
    const db = createDb(url, { maxConnections: 4, applicationName: 'pg-restart-test' });
    try {
      return await work(db);
    } finally {
      await db.destroy();
    }
  }

  async function syncedCount(): Promise<number> {
    return withDb(async (db) => {
      const r = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM tim.accounts WHERE last_synced_at IS NOT NULL`.execute(db);
      return r.rows[0]?.n ?? 0;
    });
  }

  /** The accounts not (yet) synced, with why, for failure messages. */
  async function unfinished(): Promise<string> {
    const rows = await withDb((db) =>
      db
        .selectFrom('tim.accounts')
        .select(['account_id', 'status', 'lease_owner', 'lease_expires_at', 'next_sync_at', 'last_error'])
        .where((eb) =>
          eb.or([
            eb('last_synced_at', 'is', null),
            eb('status', '<>', 'ok'),
            eb('lease_owner', 'is not', null),
          ]),
        )
        .orderBy('account_id')
        .execute(),
    ).catch((err: Error) => `cannot list them: ${err.message}`);
    if (typeof rows === 'string') return rows;
    return [`${rows.length} account(s) unfinished:`, ...rows.slice(0, 10).map((r) => JSON.stringify(r))].join(
      '\n',
    );
  }

  async function start(): Promise<void> {
    server = await startEmbeddedPostgres({
      dataDir,
      port,
      onLog: (line) => {
        serverLog.push(line);
        if (serverLog.length > 200) serverLog.shift();
      },
    });
    url = server.url;
  }

  beforeAll(async () => {
    cli = await buildCli();
    // The temp dir itself is the data dir: as root the server runs as `postgres`, which could not
    // reach a subdirectory of a root-owned 0700 mkdtemp dir (see src/db/embedded.ts).
    dataDir = await mkdtemp(path.join(tmpdir(), 'friend-mirror-pg-restart-'));
    port = await freePort();
    await start();
    const out: string[] = [];
    const code = await main(['migrate'], {
      env: { DATABASE_URL: url },
      log: pino({ level: 'silent' }),
      out: (l) => out.push(l),
      errOut: (t) => out.push(t),
    });
    expect(code, out.join('\n')).toBe(0);

    const store = generateApp({ accounts: ACCOUNTS, meanFriends: 8, maxFriends: 40, seed: 11 });
    history = new TruthHistory(store);
    await withDb((db) => addAccounts(db, store.accountIds()));
    sim = new Simulator({ store, sdkAppId: APP, secretKey: KEY, rateLimit: RATE, latencyMs: [5, 15] });
  }, 180_000);

  afterAll(async () => {
    if (daemon?.running()) daemon.child.kill('SIGKILL');
    await daemon?.exited;
    await sim?.close();
    await server?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('stays alive and unready while Postgres is down, then recovers and finishes the sweep', async () => {
    const baseUrl = await sim.listen();
    const t0 = Date.now();
    const d = spawnDaemon(cli, {
      DATABASE_URL: url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: baseUrl,
      TIM_RATE_LIMIT: String(RATE),
      SYNC_CONCURRENCY: '8',
      SYNC_INTERVAL: '1h',
      // The default 5 min lease: accounts in flight when Postgres goes away cannot record anything,
      // so the daemon must hand their leases back when Postgres returns, not leave them stranded.
      SYNC_LEASE: process.env['PG_RESTART_TEST_LEASE'] ?? '5m',
      HTTP_PORT: '0',
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'json',
      LOG_SUMMARY_INTERVAL: '2s',
      SHUTDOWN_TIMEOUT: '10s',
    });
    daemon = d;
    const admin = await d.adminUrl;
    await waitUntil(
      `${STOP_AFTER_SYNCED} accounts synced`,
      async () => (await syncedCount()) >= STOP_AFTER_SYNCED,
      30_000,
      () => describeDaemon(d),
    );
    expect(await httpStatus(`${admin}/readyz`)).toBe(200);

    // Postgres goes away.
    const syncedBefore = await syncedCount();
    const stoppedAt = Date.now();
    await server!.stop();
    server = undefined;
    await waitUntil(
      '/readyz to answer 503',
      async () => alive(d) && (await httpStatus(`${admin}/readyz`)) === 503,
      5_000,
      () => describeDaemon(d),
    );
    const unreadyMs = Date.now() - stoppedAt;
    expect(await httpStatus(`${admin}/healthz`)).toBe(200);
    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - stoppedAt)));
    expect(d.running(), describeDaemon(d)).toBe(true);
    expect(await httpStatus(`${admin}/healthz`)).toBe(200);
    expect(await httpStatus(`${admin}/readyz`)).toBe(503);

    // And comes back, on the same data dir and port.
    const restartedAt = Date.now();
    await start();
    await waitUntil(
      '/readyz to answer 200 again',
      async () => alive(d) && (await httpStatus(`${admin}/readyz`)) === 200,
      15_000,
      () => describeDaemon(d),
    );
    const readyAgainMs = Date.now() - restartedAt;
    expect(d.running(), describeDaemon(d)).toBe(true);

    await waitUntil(
      'every account synced, none failing or leased',
      async () =>
        alive(d) &&
        withDb(async (db) => {
          const r = await sql<{ n: number }>`
            SELECT count(*)::int AS n FROM tim.accounts
            WHERE last_synced_at IS NULL OR status <> 'ok' OR lease_owner IS NOT NULL`.execute(db);
          return r.rows[0]?.n === 0;
        }),
      60_000,
      async () => `${await unfinished()}\n${describeDaemon(d)}`,
    );
    const doneMs = Date.now() - restartedAt;
    const check = await withDb((db) => checkMirror(db, history, { final: true }));
    expect(check.problems).toEqual([]);
    expect(check.atCurrent).toBe(ACCOUNTS);
    expect(check.friendRows).toBe(history.store.totalFriends());

    d.child.kill('SIGTERM');
    expect(await d.exited, describeDaemon(d)).toEqual({ code: 0, signal: null });

    const warnings = d.logs.filter((l) => /"level":(40|50|60)/.test(l));
    const crashed = d.logs.filter((l) => l.includes('"msg":"account sync crashed"')).length;
    console.log(
      `[pg-restart] ${ACCOUNTS} accounts at ${RATE} calls/s: Postgres stopped with ${syncedBefore} synced ` +
        `(${((stoppedAt - t0) / 1000).toFixed(1)} s after spawn); /readyz 503 after ${unreadyMs} ms; ` +
        `down ${((restartedAt - stoppedAt) / 1000).toFixed(1)} s; /readyz 200 ${readyAgainMs} ms after the restart; ` +
        `all synced ${(doneMs / 1000).toFixed(1)} s after the restart; ${check.friendRows} friend rows equal to the source; ` +
        `${crashed} account syncs cut off by the outage (leases handed back when Postgres returned); ` +
        `${warnings.length} warn/error log lines; total ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
  }, 150_000);
});
