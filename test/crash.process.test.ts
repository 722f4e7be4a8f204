/**
 * SIGKILL at random moments loses nothing: one `friend-mirror run` daemon syncing a large app (300
 * accounts, up to 3,000 friends, 100 per page) is killed again and again while it claims, pulls,
 * applies and commits, and restarted. After every kill, before the restart, the committed mirror
 * must be exactly what the source had at the stored sequences ("sequences are never ahead of the
 * data"), with `friend_count` equal to the rows. Between some kills the source changes and a
 * resync is requested, so kills also hit incremental and full passes. At the end a daemon runs to
 * completion, stops on SIGTERM with exit code 0, and the mirror equals the source exactly.
 *
 * The change history commits with the data: after every kill, replaying each account's
 * `tim.friend_events` from its baseline gives exactly its mirror. Some kills are aimed at the worst
 * moment for that promise: the test holds a lock on tim.friend_events, waits until an apply has
 * written its rows and blocks on writing its events, and kills the daemon there. Events written by
 * a transaction of their own, before or after the data's, would leave the two apart.
 */
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addAccounts, requestResync } from '../src/db/accounts.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { generateApp, Simulator } from '../src/simulator/index.js';
import { buildCli } from './fixtures/build.js';
import { type DaemonProcess, spawnDaemon, waitUntil } from './fixtures/daemon-process.js';
import { checkReplay } from './fixtures/friend-events.js';
import { checkMirror, TruthHistory } from './fixtures/truth-history.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000888;
const KEY = 'crash-test-key';
const KILLS = 12;
/** Most kills: this long after "daemon started" (claiming begins then). */
const KILL_AFTER_MS: readonly [number, number] = [300, 2500];
/** Some kills: this long after the spawn, while the daemon starts up. */
const KILL_WHILE_STARTING_MS: readonly [number, number] = [100, 900];
/** The test's own connections, told apart from the daemon's in pg_stat_activity. */
const TEST_APP_NAME = 'crash-test-checker';
const SEED = Number(process.env['CRASH_TEST_SEED'] ?? Math.floor(Math.random() * 1_000_000));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const randomBetween = ([lo, hi]: readonly [number, number]) => Math.round(lo + Math.random() * (hi - lo));

describe('SIGKILL at random moments', () => {
  let database: TestDatabase;
  let db: ReturnType<typeof createDb>;
  let sim: Simulator;
  let history: TruthHistory;
  let cli: string;
  let env: Record<string, string>;
  const daemons: DaemonProcess[] = [];

  /**
   * Daemon backends in the test database, and how many are in the middle of an apply: a transaction
   * that has written and whose current (or last) statement is on tim.friends or tim.friend_tags.
   */
  async function daemonBackends(): Promise<{ all: number; applying: number }> {
    const r = await sql<{ n_all: number; n_applying: number }>`
      SELECT count(*)::int AS n_all,
             count(*) FILTER (WHERE backend_xid IS NOT NULL AND query LIKE '%tim.friend%')::int AS n_applying
      FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid()
        AND application_name <> ${TEST_APP_NAME}`.execute(db);
    return { all: r.rows[0]?.n_all ?? 0, applying: r.rows[0]?.n_applying ?? 0 };
  }

  /**
   * Holds a SHARE lock on tim.friend_events (every event insert waits for it) until `release()`.
   * Its own connection, named like the test's, so {@link daemonBackends} does not count it.
   */
  async function lockEvents(): Promise<{ release(): Promise<void> }> {
    const client = new pg.Client({ connectionString: database.url, application_name: TEST_APP_NAME });
    client.on('error', () => undefined);
    await client.connect();
    await client.query('BEGIN');
    await client.query('LOCK TABLE tim.friend_events IN SHARE MODE');
    return {
      async release() {
        await client.query('ROLLBACK');
        await client.end();
      },
    };
  }

  /** Daemon backends waiting for the lock on tim.friend_events, i.e. applies about to write events. */
  async function appliesBlockedOnEvents(): Promise<number> {
    const r = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND application_name <> ${TEST_APP_NAME}
        AND wait_event_type = 'Lock' AND query LIKE '%friend_events%'`.execute(db);
    return r.rows[0]?.n ?? 0;
  }

  /** Accounts that still have work: never committed, or not synced since the last resync request. */
  async function accountsWithWork(): Promise<number> {
    const r = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM tim.accounts
      WHERE standard_sequence IS NULL OR last_synced_at IS NULL OR last_synced_at < resync_requested_at
         OR status <> 'ok'`.execute(db);
    return r.rows[0]?.n ?? 0;
  }

  beforeAll(async () => {
    cli = await buildCli();
    database = await createTestDatabase('crash');
    db = createDb(database.url, { maxConnections: 4, applicationName: TEST_APP_NAME });
    await migrateToLatest(db);
    const store = generateApp({ accounts: 300, meanFriends: 300, maxFriends: 3000, seed: SEED });
    history = new TruthHistory(store);
    await addAccounts(db, store.accountIds());
    sim = new Simulator({
      store,
      sdkAppId: APP,
      secretKey: KEY,
      rateLimit: 0,
      pageSize: 100,
      latencyMs: [2, 6],
      seed: SEED,
    });
    const baseUrl = await sim.listen();
    env = {
      DATABASE_URL: database.url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: baseUrl,
      TIM_RATE_LIMIT: '1000',
      SYNC_CONCURRENCY: '16',
      SYNC_INTERVAL: '1h',
      // The shortest lease config accepts (5 s): a killed replica's accounts come back quickly.
      SYNC_LEASE: '5s',
      // A fixed id, as an orchestrator restarting a container under one name: the restarted daemon
      // takes back the leases its dead predecessor left under that id before its first claim.
      REPLICA_ID: 'crash-replica',
      HTTP_PORT: '0',
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'json',
      SHUTDOWN_TIMEOUT: '20s',
    };
  }, 180_000);

  afterAll(async () => {
    for (const d of daemons) if (d.running()) d.child.kill('SIGKILL');
    await Promise.all(daemons.map((d) => d.exited));
    await sim?.close();
    await db?.destroy();
    await database?.drop();
  });

  it(`loses nothing over ${KILLS} kills, and ends equal to the source`, async () => {
    const started = Date.now();
    const rounds: string[] = [];
    let killsMidApply = 0;
    let killsBeforeEvents = 0;
    let mutations = 0;
    let checkMs = 0;

    for (let round = 1; round <= KILLS; round++) {
      const spawnedAt = Date.now();
      const d = spawnDaemon(cli, env);
      daemons.push(d);
      const callsBefore = sim.stats().calls;
      let upMs = -1;
      let shareMs = -1;
      d.adminUrl.then(
        () => {
          upMs = Date.now() - spawnedAt;
        },
        () => {}, // killed before it started
      );
      d.waitForLog('a non-zero budget share', (j) => typeof j.rate === 'number' && j.rate > 0, 60_000).then(
        () => {
          shareMs = Date.now() - spawnedAt;
        },
        () => {},
      );
      // A few rounds kill the daemon while it starts (migrations, registry); the rest kill it while
      // it works.
      let delay: number;
      let eventsLock: { release(): Promise<void> } | undefined;
      if (round % 4 === 0) {
        // Kill while applies have written their rows and wait to write their events.
        await d.adminUrl;
        eventsLock = await lockEvents();
        const waitStarted = Date.now();
        while (Date.now() - waitStarted < 15_000 && (await appliesBlockedOnEvents()) === 0) await sleep(50);
        delay = Date.now() - waitStarted;
        if ((await appliesBlockedOnEvents()) > 0) killsBeforeEvents++;
      } else if (round % 4 === 2) {
        delay = randomBetween(KILL_WHILE_STARTING_MS);
      } else {
        // Every daemon waits out the settle rule (5 s): a restart is a new registry session, a
        // newcomer whatever its REPLICA_ID (the survivors may have taken the dead one's share).
        await d.waitForLog(
          'a non-zero budget share',
          (j) => typeof j.rate === 'number' && j.rate > 0,
          30_000,
        );
        delay = randomBetween(KILL_AFTER_MS);
      }
      if (!eventsLock) await sleep(delay);
      expect(d.running(), `daemon of round ${round} exited early:\n${d.tail()}`).toBe(true);
      const before = await daemonBackends();
      d.child.kill('SIGKILL');
      const exit = await d.exited;
      expect(exit.signal).toBe('SIGKILL');
      if (before.applying > 0) killsMidApply++;
      // The blocked backends go on once the lock is gone, find their client dead, and roll back.
      await eventsLock?.release();

      // Once the server has dropped the dead daemon's connections nothing more can commit.
      await waitUntil(
        'the killed daemon’s backends to end',
        async () => (await daemonBackends()).all === 0,
        10_000,
      );
      let checkStarted = Date.now();
      const check = await checkMirror(db, history);
      checkMs += Date.now() - checkStarted;
      checkStarted = Date.now();
      expect(check.problems, `after kill ${round} (${delay} ms), CRASH_TEST_SEED=${SEED}`).toEqual([]);
      const replayed = await checkReplay(db, history);
      checkMs += Date.now() - checkStarted;
      expect(replayed.problems, `history after kill ${round} (${delay} ms), CRASH_TEST_SEED=${SEED}`).toEqual(
        [],
      );

      const work = await accountsWithWork();
      const firstCall = sim.calls().find((c) => c.at >= spawnedAt);
      rounds.push(
        `#${round} ${eventsLock ? 'events-blocked ' : ''}${delay}ms up=${upMs} share=${shareMs} first=${firstCall ? firstCall.at - spawnedAt : -1} calls=${sim.stats().calls - callsBefore} applying=${before.applying} ` +
          `committed=${check.withSequences} atCurrent=${check.atCurrent} rows=${check.friendRows} todo=${work}`,
      );

      // Change the source while no daemon runs (so every state is recorded), and request a resync,
      // whenever the work left is small, and every third round; one resync forgets the sequences.
      if (round < KILLS && (round % 3 === 0 || work < 40)) {
        const changed = history.mutate({ fraction: 0.2, seed: SEED + round });
        mutations++;
        const full = mutations === 2;
        await requestResync(db, { all: true }, { full });
        rounds[rounds.length - 1] += ` → mutated ${changed.length}, resync --all${full ? ' --full' : ''}`;
      }
    }

    // Last change, last resync, and a daemon that runs to the end.
    history.mutate({ fraction: 0.2, seed: SEED + 1000 });
    await requestResync(db, { all: true }, { full: false });
    const finalStarted = Date.now();
    const last = spawnDaemon(cli, env);
    daemons.push(last);
    await waitUntil(
      'every account synced after the final resync, and no lease held',
      async () => {
        const r = await sql<{ n: number }>`
          SELECT count(*)::int AS n FROM tim.accounts
          WHERE last_synced_at IS NULL OR last_synced_at < resync_requested_at OR lease_owner IS NOT NULL`.execute(
          db,
        );
        return r.rows[0]?.n === 0;
      },
      60_000,
      () => last.tail(),
    );
    const finalMs = Date.now() - finalStarted;
    last.child.kill('SIGTERM');
    const exit = await last.exited;
    expect(exit, last.tail()).toEqual({ code: 0, signal: null });

    const final = await checkMirror(db, history, { final: true });
    expect(final.problems, `CRASH_TEST_SEED=${SEED}`).toEqual([]);
    expect(final.withSequences).toBe(history.store.size);
    expect(final.atCurrent).toBe(history.store.size);
    expect(final.friendRows).toBe(history.store.totalFriends());
    const finalHistory = await checkReplay(db, history);
    expect(finalHistory.problems).toEqual([]);
    expect(finalHistory.replayed).toBe(history.store.size);
    expect(killsBeforeEvents).toBeGreaterThan(0);

    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(`[crash] rounds:\n  ${rounds.join('\n  ')}`);
    console.log(
      `[crash] seed ${SEED}: ${KILLS} SIGKILLs (${killsMidApply} in the middle of an apply), ` +
        `${killsBeforeEvents} while applies waited to write their events, ${finalHistory.events} events, ` +
        `${KILLS + 1} daemon runs, ${mutations + 1} source changes + resyncs, ` +
        `${final.accounts} accounts, ${final.friendRows} friend rows and ${final.tagRows} tag rows at the end, ` +
        `${sim.stats().calls} calls; ${seconds} s in all (invariant checks ${(checkMs / 1000).toFixed(1)} s, ` +
        `final run ${(finalMs / 1000).toFixed(1)} s)`,
    );
  }, 240_000);
});
