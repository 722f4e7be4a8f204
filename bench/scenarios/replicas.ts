/**
 * Three replicas sharing one budget (issue #3): three `friend-mirror run` processes against one
 * database and the simulator (its own process). Once all three hold a share of the budget, the
 * accounts are added, and the replicas' first syncs of them are measured; then `resync --all`
 * and the sweep of unchanged accounts (one call each, a deployment's steady state).
 *
 * What it shows is whether replicas sharing the budget keep the pipe busy: the rate while work
 * remained, against the quota, and the busiest second. test/replicas.process.test.ts holds the
 * correctness (every account once, never above the limit, takeover after a death); the speed is
 * judged here, where `bench:ci` fails only on a breakdown (bench/lib/guard.ts).
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
import { type CallStats, callStats } from '../lib/calls.js';
import { createScratchDatabase } from '../lib/postgres.js';
import { CLI_PATH, type SimSettings, startSimulator } from '../lib/simulator.js';

/** Settings of the replicas scenario. */
export interface ReplicasSettings extends SimSettings {
  replicas: number;
  mirrorEnv: Record<string, string>;
  say: (line: string) => void;
}

/** One measured sweep. */
export interface ReplicaSweep {
  label: 'first syncs' | 'unchanged';
  calls: CallStats;
  /** Every account synced since the sweep began, none failing. */
  synced: number;
  failing: number;
}

/** What the scenario measured. */
export interface ReplicasResult {
  settings: ReplicasSettings;
  accounts: number;
  sweeps: ReplicaSweep[];
  friendRows: number;
}

/** How long one sweep may take before the scenario gives up on it. */
const SWEEP_TIMEOUT_MS = 300_000;

interface Replica {
  child: ChildProcess;
  exited: Promise<unknown>;
  adminUrl: Promise<string>;
  tail: () => string;
}

/** Runs the scenario on a fresh database of the server at `adminUrl`. */
export async function runReplicas(adminUrl: string, s: ReplicasSettings): Promise<ReplicasResult> {
  s.say(`replicas: simulator with ${s.accounts} accounts, ${s.replicas} replicas of \`friend-mirror run\` …`);
  const sim = await startSimulator(s);
  const scratch = await createScratchDatabase(adminUrl, 'replicas');
  const db = createDb(scratch.url, { maxConnections: 2, applicationName: 'bench replicas' });
  const replicas: Replica[] = [];
  const env: Record<string, string> = {
    DATABASE_URL: scratch.url,
    TIM_BASE_URL: sim.baseUrl,
    TIM_SDKAPPID: String(s.sdkAppId),
    TIM_SECRET_KEY: s.secretKey,
    TIM_USERSIG: '',
    TIM_RATE_LIMIT: String(s.rateLimit),
    // Every account once per sweep: the next scheduled sync is far beyond the scenario.
    SYNC_INTERVAL: '1h',
    SYNC_LEASE: '60s',
    HTTP_PORT: '0',
    LOG_LEVEL: 'info',
    ...s.mirrorEnv,
  };
  try {
    await migrateToLatest(db);
    for (let n = 1; n <= s.replicas; n++) replicas.push(startReplica(env, `bench-replica-${n}`));
    const admins = await Promise.all(replicas.map((r) => r.adminUrl));
    s.say('replicas: waiting for every replica to hold its share of the budget …');
    const shared = await waitUntil(
      async () => (await Promise.all(admins.map(shareOf))).every((x) => x > 0),
      60_000,
    );
    if (!shared) throw new Error(`the replicas never all held a share:\n${tails(replicas)}`);

    const ids = (await sim.get<{ accounts: string[] }>('/__sim/accounts')).accounts;
    const sweeps: ReplicaSweep[] = [];
    const sweep = async (label: ReplicaSweep['label'], start: () => Promise<void>) => {
      await sim.clearCalls();
      const since = new Date();
      await start();
      const done = await waitUntil(
        async () => (await syncedSince(db, since)) === ids.length,
        SWEEP_TIMEOUT_MS,
      );
      if (!done) throw new Error(`replicas: the ${label} sweep did not finish:\n${tails(replicas)}`);
      const failing = await count(db, sql`failures > 0 OR status = 'failing'`);
      const m: ReplicaSweep = { label, calls: callStats(await sim.calls()), synced: ids.length, failing };
      sweeps.push(m);
      s.say(`replicas: ${sweepLine(m, s.rateLimit)}`);
    };
    s.say('replicas: first syncs of every account, arriving at the running replicas …');
    await sweep('first syncs', () => addAccounts(db, ids).then(() => undefined));
    s.say('replicas: `resync --all`, every account unchanged …');
    await sweep('unchanged', async () => {
      const child = spawn(process.execPath, [CLI_PATH, 'resync', '--all'], {
        env: { ...process.env, ...env, LOG_LEVEL: 'warn' },
        stdio: 'ignore',
      });
      const [code] = (await once(child, 'exit')) as [number | null];
      if (code !== 0) throw new Error(`resync --all exited with ${code}`);
    });
    return {
      settings: s,
      accounts: ids.length,
      sweeps,
      friendRows: await count(db, sql`true`, 'tim.friends'),
    };
  } finally {
    await Promise.all(replicas.map(stopReplica));
    await db.destroy();
    await sim.stop();
    await scratch.drop();
  }
}

/** The scenario's lines for the console and BENCHMARKS.md. */
export function replicaLines(r: ReplicasResult): string[] {
  const rate = r.settings.rateLimit;
  return [
    `${r.settings.replicas} replicas, ${r.accounts} accounts (mean ${r.settings.meanFriends} friends), quota ${rate}/s`,
    ...r.sweeps.map((w) => sweepLine(w, rate)),
    `calls per second, first syncs: ${r.sweeps[0]?.calls.perSecond.join(' ') ?? '-'}`,
  ];
}

function sweepLine(w: ReplicaSweep, rate: number): string {
  const c = w.calls;
  return `${w.label}: ${c.arrived} calls; while work remained (${c.sustainedSeconds.toFixed(1)} s) ${c.sustainedRate.toFixed(1)}/s = ${((100 * c.sustainedRate) / rate).toFixed(1)}% of the quota; busiest second ${c.maxInAnySecond}, 60007 ${c.rateLimited}; ${w.synced} accounts synced, ${w.failing} failing`;
}

function startReplica(env: Record<string, string>, id: string): Replica {
  const child = spawn(process.execPath, [CLI_PATH, 'run'], {
    env: { ...process.env, ...env, REPLICA_ID: id },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = once(child, 'exit');
  let tail = '';
  const adminUrl = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (line) => {
      tail = `${tail}\n${line}`.slice(-2000);
      try {
        const j = JSON.parse(line) as { msg?: string; admin?: string };
        if (j.msg === 'daemon started' && j.admin) resolve(j.admin);
      } catch {
        // not JSON
      }
    });
    void exited.then(() => reject(new Error(`replica ${id} exited before it started: ${tail}`)));
  });
  return { child, exited, adminUrl, tail: () => `${id}:${tail}` };
}

async function stopReplica(r: Replica): Promise<void> {
  if (r.child.exitCode !== null || r.child.signalCode !== null) return;
  r.child.kill('SIGTERM');
  await Promise.race([r.exited, sleep(15_000).then(() => r.child.kill('SIGKILL'))]);
  await r.exited;
}

function tails(replicas: Replica[]): string {
  return replicas.map((r) => r.tail()).join('\n---\n');
}

/** A replica's share of the budget, from its /metrics. */
async function shareOf(adminUrl: string): Promise<number> {
  const body = await (await fetch(`${adminUrl}/metrics`)).text();
  return Number(/^tim_mirror_call_share_per_second (\S+)$/m.exec(body)?.[1] ?? 0);
}

async function syncedSince(db: Kysely<Database>, since: Date): Promise<number> {
  return count(db, sql`last_synced_at >= ${since}`);
}

async function count(
  db: Kysely<Database>,
  where: ReturnType<typeof sql>,
  table: 'tim.accounts' | 'tim.friends' = 'tim.accounts',
): Promise<number> {
  const r = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.table(table)} WHERE ${where}`.execute(
    db,
  );
  return Number(r.rows[0]?.n ?? 0);
}

/** Polls `cond` every 200 ms; false when `timeoutMs` passed first. */
async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return true;
    await sleep(200);
  }
  return false;
}
