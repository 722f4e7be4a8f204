/**
 * Scheduler scale: 1,000,000 accounts in `tim.accounts`. Times `claimDueAccounts` (src/db/leases.ts,
 * what the daemon calls for every batch) when some, all or none of them are due, and measures the
 * daemon's (`friend-mirror run`) RSS and CPU while idle over that table and while syncing.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { availableParallelism } from 'node:os';
import { type Kysely, sql } from 'kysely';
import { claimDueAccounts } from '../../src/db/leases.js';
import { migrateToLatest } from '../../src/db/migrate.js';
import { createDb } from '../../src/db/pool.js';
import type { Database } from '../../src/db/schema.js';
import { sleep } from '../../src/sync/limiter.js';
import { type CallStats, callStats } from '../lib/calls.js';
import { percentile } from '../lib/percentile.js';
import { createScratchDatabase } from '../lib/postgres.js';
import { memoryKb, watchCpu } from '../lib/proc.js';
import { CLI_PATH, type SimSettings, startSimulator } from '../lib/simulator.js';

/** Settings of the scheduler scenario. */
export interface SchedulerSettings extends SimSettings {
  /** Accounts in the table (the simulator's are among them). */
  schedulerAccounts: number;
  /** Accounts per claim; the daemon's batch. */
  batch: number;
  /** Claims timed per case. */
  claims: number;
  mirrorEnv: Record<string, string>;
  say: (line: string) => void;
}

/** Claim latencies of one case, ms. */
export interface ClaimTiming {
  case: string;
  due: number;
  claimed: number;
  medianMs: number;
  p95Ms: number;
  maxMs: number;
}

/** The daemon's footprint. */
export interface DaemonMeasure {
  idleRssMb: number;
  idleCpuCores: number;
  idlePostgresCores: number;
  runningPeakRssMb: number;
  runningSeconds: number;
  synced: number;
  calls: CallStats;
}

/** What the scheduler scenario measured. */
export interface SchedulerResult {
  settings: SchedulerSettings;
  accounts: number;
  loadSeconds: number;
  claims: ClaimTiming[];
  daemon: DaemonMeasure;
}

async function timeClaims(
  db: Kysely<Database>,
  label: string,
  due: number,
  s: SchedulerSettings,
): Promise<ClaimTiming> {
  const times: number[] = [];
  let claimed = 0;
  for (let i = 0; i < s.claims; i++) {
    const t = performance.now();
    const got = await claimDueAccounts(db, { owner: `bench-${i % 4}`, limit: s.batch, leaseMs: 300_000 });
    times.push(performance.now() - t);
    claimed += got.length;
  }
  times.sort((a, b) => a - b);
  return {
    case: label,
    due,
    claimed: Math.round(claimed / s.claims),
    medianMs: percentile(times, 50),
    p95Ms: percentile(times, 95),
    maxMs: times[times.length - 1] ?? Number.NaN,
  };
}

/** Runs the scheduler scenario on a fresh database. */
export async function runScheduler(adminUrl: string, s: SchedulerSettings): Promise<SchedulerResult> {
  const scratch = await createScratchDatabase(adminUrl, 'scheduler');
  const db = createDb(scratch.url, { maxConnections: 2 });
  const sim = await startSimulator(s);
  try {
    await migrateToLatest(db);
    const simIds = (await sim.get<{ accounts: string[] }>('/__sim/accounts')).accounts;
    s.say(`scheduler: loading ${s.schedulerAccounts} accounts …`);
    const t0 = performance.now();
    // Synced accounts, due over the next hour (SYNC_INTERVAL 1h, as if the mirror has run a while).
    await sql`
      INSERT INTO tim.accounts (account_id, standard_sequence, custom_sequence, friend_count, status,
                                last_synced_at, priority, next_sync_at)
      SELECT 'bench_' || lpad(i::text, 8, '0'), 1, 1, 300, 'ok', now(), 2,
             now() + random() * interval '1 hour'
      FROM generate_series(1, ${Math.max(0, s.schedulerAccounts - simIds.length)}::int) AS i`.execute(db);
    await sql`
      INSERT INTO tim.accounts (account_id, next_sync_at, priority)
      SELECT id, now() + interval '1 day', 2 FROM unnest(${simIds}::text[]) AS t(id)`.execute(db);
    await sql`VACUUM ANALYZE tim.accounts`.execute(db);
    const loadSeconds = (performance.now() - t0) / 1000;
    const total = Number(
      (await sql<{ n: string }>`SELECT count(*) AS n FROM tim.accounts`.execute(db)).rows[0]?.n,
    );

    const claims: ClaimTiming[] = [];
    const release = () =>
      sql`UPDATE tim.accounts SET lease_owner = NULL, leased_at = NULL, lease_expires_at = NULL
          WHERE lease_owner IS NOT NULL`.execute(db);
    // 1. Steady state: a minute's worth due (1/60 of the table), the rest later in the hour.
    await sql`UPDATE tim.accounts SET next_sync_at = now() - random() * interval '1 minute'
              WHERE account_id LIKE 'bench_%' AND random() < 1.0 / 60`.execute(db);
    await sql`VACUUM ANALYZE tim.accounts`.execute(db);
    let due = await countDue(db);
    s.say(`scheduler: timing claims of ${s.batch} with ${due} due …`);
    claims.push(await timeClaims(db, 'steady state: ~1/60 of the table due', due, s));
    await release();
    // 2. Backlog: every account due (a fresh import, or the mirror was down for an hour).
    await sql`UPDATE tim.accounts SET next_sync_at = now() - random() * interval '1 hour'
              WHERE account_id LIKE 'bench_%'`.execute(db);
    await sql`VACUUM ANALYZE tim.accounts`.execute(db);
    due = await countDue(db);
    s.say(`scheduler: timing claims with ${due} due …`);
    claims.push(await timeClaims(db, 'backlog: every account due', due, s));
    await sql`UPDATE tim.accounts SET priority = 1, next_sync_at = '-infinity', status = 'pending',
              standard_sequence = NULL, custom_sequence = NULL WHERE account_id LIKE 'bench_%'`.execute(db);
    await sql`VACUUM ANALYZE tim.accounts`.execute(db);
    due = await countDue(db);
    claims.push(await timeClaims(db, 'fresh import: every account pending', due, s));
    // 3. Idle: nothing due.
    await sql`UPDATE tim.accounts SET next_sync_at = now() + interval '5 minutes' + random() * interval '1 hour',
              priority = 2, status = 'ok', lease_owner = NULL, leased_at = NULL, lease_expires_at = NULL`.execute(
      db,
    );
    await sql`VACUUM ANALYZE tim.accounts`.execute(db);
    claims.push(await timeClaims(db, 'idle: nothing due', await countDue(db), s));

    const daemon = await measureDaemon(db, scratch.url, scratch.name, sim, simIds, s);
    return { settings: s, accounts: total, loadSeconds, claims, daemon };
  } finally {
    await db.destroy();
    await sim.stop();
    await scratch.drop();
  }
}

async function countDue(db: Kysely<Database>): Promise<number> {
  const res = await sql<{ n: string }>`
    SELECT count(*) AS n FROM tim.accounts WHERE next_sync_at <= now() AND status NOT IN ('disabled', 'missing')`.execute(
    db,
  );
  return Number(res.rows[0]?.n ?? 0);
}

/**
 * The daemon over the whole table: idle (nothing due) for a while, then the simulator's accounts
 * are made due and it syncs them. RSS and CPU come from /proc.
 */
async function measureDaemon(
  db: Kysely<Database>,
  url: string,
  database: string,
  sim: Awaited<ReturnType<typeof startSimulator>>,
  simIds: string[],
  s: SchedulerSettings,
): Promise<DaemonMeasure> {
  s.say('scheduler: the daemon (friend-mirror run), idle over the table …');
  const child = spawn(process.execPath, [CLI_PATH, 'run'], {
    env: {
      ...process.env,
      LOG_LEVEL: 'warn',
      DATABASE_URL: url,
      TIM_BASE_URL: sim.baseUrl,
      TIM_SDKAPPID: String(s.sdkAppId),
      TIM_SECRET_KEY: s.secretKey,
      TIM_USERSIG: '',
      TIM_RATE_LIMIT: String(s.rateLimit),
      HTTP_PORT: '0',
      ...s.mirrorEnv,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const exited = once(child, 'exit');
  const pid = child.pid!;
  try {
    // Past start-up (migration check, first heartbeats, the budget settling), then sample.
    await sleep(8_000);
    if (child.exitCode !== null) throw new Error(`the daemon exited: ${stderr.trim()}`);
    const watch = watchCpu({ daemon: pid }, database, availableParallelism());
    const idle: number[] = [];
    const idleStart = performance.now();
    while (performance.now() - idleStart < 5_000) {
      idle.push(memoryKb(pid)?.rssKb ?? 0);
      await sleep(250);
    }
    const idleCpu = watch.stop();

    s.say(`scheduler: ${simIds.length} accounts made due; the daemon syncs them …`);
    await sim.clearCalls();
    const started = performance.now();
    await sql`UPDATE tim.accounts SET next_sync_at = '-infinity', priority = 1
              WHERE account_id = ANY(${simIds}::text[])`.execute(db);
    let peakKb = 0;
    let synced = 0;
    while (performance.now() - started < 180_000) {
      peakKb = Math.max(peakKb, memoryKb(pid)?.rssKb ?? 0);
      const res = await sql<{ n: string }>`
        SELECT count(*) AS n FROM tim.accounts WHERE account_id = ANY(${simIds}::text[]) AND last_synced_at IS NOT NULL`.execute(
        db,
      );
      synced = Number(res.rows[0]?.n ?? 0);
      if (synced >= simIds.length) break;
      await sleep(200);
    }
    const runningSeconds = (performance.now() - started) / 1000;
    peakKb = Math.max(peakKb, memoryKb(pid)?.peakKb ?? 0);
    return {
      idleRssMb: Math.max(...idle) / 1024,
      idleCpuCores: idleCpu.byName.daemon ?? Number.NaN,
      idlePostgresCores: idleCpu.postgres,
      runningPeakRssMb: peakKb / 1024,
      runningSeconds,
      synced,
      calls: callStats(await sim.calls()),
    };
  } finally {
    if (child.exitCode === null) child.kill('SIGTERM');
    await Promise.race([exited, sleep(15_000).then(() => child.kill('SIGKILL'))]);
  }
}
