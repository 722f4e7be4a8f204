/**
 * Freshness (issue #6): the time from a change at Tencent to its row in Postgres, measured on the
 * simulator with a running daemon (`friend-mirror run`) that keeps syncing every account on its
 * schedule, so the changes compete with regular work for the call budget.
 *
 * Two ways a change reaches the mirror:
 * - **scheduled pulls**: nothing tells the daemon; the change waits for the account's next sync,
 *   so the delay is spread over the whole sync interval (the interval is short here so that the
 *   scenario ends in minutes; the delay scales with it);
 * - **webhooks**: the simulator sends Tencent's signed `Sns.CallbackFriendDelete` to the daemon's
 *   receiver, which marks the account for a priority resync.
 *
 * Each change deletes one friend of a random account (webhooks exist for adds and deletes only,
 * and scheduled pulls see every kind alike); its delay is from just before the simulator was told,
 * to the moment a poll (every 25 ms) no longer finds the row.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Kysely, sql } from 'kysely';
import { addAccounts } from '../../src/db/accounts.js';
import { migrateToLatest } from '../../src/db/migrate.js';
import { createDb } from '../../src/db/pool.js';
import type { Database } from '../../src/db/schema.js';
import { percentile } from '../lib/percentile.js';
import { createScratchDatabase } from '../lib/postgres.js';
import { CLI_PATH, type SimSettings, startSimulator } from '../lib/simulator.js';

/** Settings of the freshness scenario. */
export interface FreshnessSettings extends SimSettings {
  /** `SYNC_INTERVAL` of the daemon, in seconds. */
  intervalSeconds: number;
  /** Changes measured per mode. */
  changes: number;
  mirrorEnv: Record<string, string>;
  say: (line: string) => void;
}

/** Delays of one mode, in milliseconds, sorted. */
export interface FreshnessMeasure {
  mode: 'scheduled pulls' | 'webhooks';
  delaysMs: number[];
  /** Changes that had not arrived when the mode's time ran out. */
  lost: number;
}

/** What the scenario measured. */
export interface FreshnessResult {
  settings: FreshnessSettings;
  scheduled: FreshnessMeasure;
  webhooks: FreshnessMeasure;
  /** Calls per second the daemon made over the whole run (its regular work). */
  callsPerSecond: number;
}

const CALLBACK_TOKEN = 'bench-callback-token';

/** Runs both modes against one daemon. */
export async function runFreshness(adminUrl: string, s: FreshnessSettings): Promise<FreshnessResult> {
  s.say(
    `freshness: simulator with ${s.accounts} accounts, daemon with SYNC_INTERVAL=${s.intervalSeconds}s …`,
  );
  const sim = await startSimulator(s);
  const scratch = await createScratchDatabase(adminUrl, 'freshness');
  const db = createDb(scratch.url, { maxConnections: 2 });
  let daemon: ChildProcess | undefined;
  try {
    await migrateToLatest(db);
    const ids = (await sim.get<{ accounts: string[] }>('/__sim/accounts')).accounts;
    await addAccounts(db, ids);
    daemon = spawn(process.execPath, [CLI_PATH, 'run'], {
      env: {
        ...process.env,
        LOG_LEVEL: 'info',
        DATABASE_URL: scratch.url,
        TIM_BASE_URL: sim.baseUrl,
        TIM_SDKAPPID: String(s.sdkAppId),
        TIM_SECRET_KEY: s.secretKey,
        TIM_USERSIG: '',
        TIM_RATE_LIMIT: String(s.rateLimit),
        SYNC_INTERVAL: `${s.intervalSeconds}s`,
        HTTP_PORT: '0',
        TIM_CALLBACK_TOKEN: CALLBACK_TOKEN,
        CALLBACK_PORT: '0',
        ...s.mirrorEnv,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const exited = once(daemon, 'exit');
    const callbackUrl = await new Promise<string>((resolve, reject) => {
      const lines = createInterface({ input: daemon!.stderr! });
      let tail = '';
      lines.on('line', (line) => {
        tail = `${tail}\n${line}`.slice(-4000);
        try {
          const j = JSON.parse(line) as { msg?: string; callback?: string };
          if (j.msg === 'daemon started' && j.callback) resolve(j.callback);
        } catch {
          // not JSON
        }
      });
      void exited.then(() => reject(new Error(`the daemon exited before it started: ${tail}`)));
    });

    s.say('freshness: first sync of every account …');
    await waitUntil(async () => (await count(db, 'last_synced_at IS NOT NULL')) === ids.length, 300_000);
    await sim.clearCalls();
    const started = performance.now();

    // Scheduled pulls only: the simulator sends no webhooks yet.
    s.say(`freshness: ${s.changes} deletions found by scheduled pulls …`);
    const scheduled = await measureMode(
      'scheduled pulls',
      db,
      sim,
      ids,
      s,
      (s.intervalSeconds * 1.1 + 10) * 1000,
    );

    // The log names the receiver's base URL; Tencent is configured with the full path.
    await sim.post('/__sim/callback', { url: `${callbackUrl}/tim/callback`, token: CALLBACK_TOKEN });
    s.say(`freshness: ${s.changes} deletions announced by webhooks …`);
    const webhooks = await measureMode('webhooks', db, sim, ids, s, 10_000);

    const calls = (await sim.calls()).length;
    return {
      settings: s,
      scheduled,
      webhooks,
      callsPerSecond: calls / ((performance.now() - started) / 1000),
    };
  } finally {
    if (daemon && daemon.exitCode === null) {
      const gone = once(daemon, 'exit');
      daemon.kill('SIGTERM');
      await Promise.race([gone, sleep(15_000).then(() => daemon?.kill('SIGKILL'))]);
    }
    await db.destroy();
    await sim.stop();
    await scratch.drop();
  }
}

/**
 * Makes `s.changes` deletions, spread over about one sync interval so they land at every point of
 * the accounts' schedules, and waits for each to show. Up to `maxWaitMs` per change.
 */
async function measureMode(
  mode: FreshnessMeasure['mode'],
  db: Kysely<Database>,
  sim: Awaited<ReturnType<typeof startSimulator>>,
  ids: readonly string[],
  s: FreshnessSettings,
  maxWaitMs: number,
): Promise<FreshnessMeasure> {
  const spacingMs = (s.intervalSeconds * 1000) / s.changes;
  const pending: Promise<number | undefined>[] = [];
  const used = new Set<string>();
  for (let i = 0; i < s.changes; i++) {
    const victim = await pickFriend(db, ids, used);
    if (!victim) break;
    used.add(victim.account);
    const t0 = performance.now();
    await sim.post('/__sim/friends/delete', { account: victim.account, friendId: victim.friend });
    pending.push(
      waitUntil(async () => !(await friendExists(db, victim.account, victim.friend)), maxWaitMs, 25).then(
        (ok) => (ok ? performance.now() - t0 : undefined),
      ),
    );
    await sleep(spacingMs * (0.5 + Math.random()));
  }
  const results = await Promise.all(pending);
  const delaysMs = results.filter((d): d is number => d !== undefined).sort((a, b) => a - b);
  return { mode, delaysMs, lost: results.length - delaysMs.length };
}

/** A random (account, friend) pair from the mirror, from an account not used yet in this run. */
async function pickFriend(
  db: Kysely<Database>,
  ids: readonly string[],
  used: Set<string>,
): Promise<{ account: string; friend: string } | undefined> {
  for (let tries = 0; tries < 50; tries++) {
    const account = ids[Math.floor(Math.random() * ids.length)]!;
    if (used.has(account)) continue;
    const row = await sql<{ friend_id: string }>`
      SELECT friend_id FROM tim.friends WHERE account_id = ${account} ORDER BY random() LIMIT 1`.execute(db);
    const friend = row.rows[0]?.friend_id;
    if (friend) return { account, friend };
  }
  return undefined;
}

async function friendExists(db: Kysely<Database>, account: string, friend: string): Promise<boolean> {
  const r =
    await sql`SELECT 1 FROM tim.friends WHERE account_id = ${account} AND friend_id = ${friend}`.execute(db);
  return r.rows.length > 0;
}

async function count(db: Kysely<Database>, where: string): Promise<number> {
  const r = await sql<{ n: string }>`SELECT count(*) AS n FROM tim.accounts WHERE ${sql.raw(where)}`.execute(
    db,
  );
  return Number(r.rows[0]?.n ?? 0);
}

/** Polls `cond` every `everyMs` until it holds (true) or `timeoutMs` passes (false). */
async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number, everyMs = 250): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  while (performance.now() < end) {
    if (await cond()) return true;
    await sleep(everyMs);
  }
  return false;
}

/** The scenario's report lines. */
export function freshnessLines(r: FreshnessResult): string[] {
  const line = (m: FreshnessMeasure) => {
    const d = m.delaysMs;
    const sec = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    return `${m.mode.padEnd(16)} ${String(d.length).padStart(3)} changes: median ${sec(percentile(d, 50))}, p95 ${sec(percentile(d, 95))}, max ${sec(d.at(-1) ?? Number.NaN)}${m.lost ? `; ${m.lost} never arrived` : ''}`;
  };
  return [
    `${r.settings.accounts} accounts, SYNC_INTERVAL=${r.settings.intervalSeconds}s, quota ${r.settings.rateLimit}/s, latency ${r.settings.latencyMs[0]}–${r.settings.latencyMs[1]} ms; the daemon's regular work: ${r.callsPerSecond.toFixed(0)} calls/s`,
    line(r.scheduled),
    line(r.webhooks),
    `scheduled pulls wait for the account's next sync (up to the interval, ${r.settings.intervalSeconds} s here, 1 h by default); webhooks do not`,
  ];
}
