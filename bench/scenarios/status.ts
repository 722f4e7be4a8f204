/**
 * `friend-mirror status` on a large mirror: 1,000,000 friend rows over 10,000 synced accounts
 * (`BENCH_STATUS_*` change the sizes). Times {@link readStatus} (every query `status` runs, on a
 * warm connection) and the whole command (`node dist/src/cli.js status`: Node start-up, connect,
 * schema check, queries), and checks that the friend rows it reports equal a recount. A second,
 * informational case adds accounts without friends up to 1,000,000, to show what status costs
 * when the accounts table, which it does read, is large.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { type Kysely, sql } from 'kysely';
import { readStatus } from '../../src/commands/status.js';
import { migrateToLatest } from '../../src/db/migrate.js';
import { createDb } from '../../src/db/pool.js';
import type { Database } from '../../src/db/schema.js';
import { percentile } from '../lib/percentile.js';
import { createScratchDatabase } from '../lib/postgres.js';
import { CLI_PATH } from '../lib/simulator.js';

/** Settings of the status scenario. */
export interface StatusSettings {
  /** Friend rows in the mirror, spread evenly over {@link accounts}. */
  friendRows: number;
  /** Accounts that hold them. */
  accounts: number;
  /** Accounts in the informational second case (the extra ones have no friends). */
  wideAccounts: number;
  /** Timed calls of readStatus per case. */
  runs: number;
  /** Timed runs of the CLI. */
  cliRuns: number;
  say: (line: string) => void;
}

/** Timings of one case, ms. */
export interface StatusTiming {
  case: string;
  accounts: number;
  friendRows: number;
  medianMs: number;
  p95Ms: number;
  maxMs: number;
}

/** What the status scenario measured. */
export interface StatusResult {
  settings: StatusSettings;
  loadSeconds: number;
  /** readStatus with {@link StatusSettings.friendRows} rows: the case with the 100 ms target. */
  status: StatusTiming;
  /** The whole `friend-mirror status` process, same data. */
  cli: StatusTiming;
  /** readStatus with {@link StatusSettings.wideAccounts} accounts. */
  wide: StatusTiming;
  /** The friend rows status reported, and `count(*)` of tim.friends. */
  reported: number;
  recount: number;
}

function timing(label: string, accounts: number, friendRows: number, times: number[]): StatusTiming {
  const sorted = [...times].sort((a, b) => a - b);
  return {
    case: label,
    accounts,
    friendRows,
    medianMs: percentile(sorted, 50),
    p95Ms: percentile(sorted, 95),
    maxMs: sorted[sorted.length - 1] ?? Number.NaN,
  };
}

async function timeReadStatus(db: Kysely<Database>, runs: number): Promise<number[]> {
  await readStatus(db); // warm: plans, catalog caches, the pool's connection
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await readStatus(db);
    times.push(performance.now() - t);
  }
  return times;
}

async function timeCli(url: string, runs: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const child = spawn(process.execPath, [CLI_PATH, 'status'], {
      env: { ...process.env, DATABASE_URL: url, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    const [code] = (await once(child, 'exit')) as [number | null];
    times.push(performance.now() - t);
    if (code !== 0) throw new Error(`friend-mirror status exited ${code}: ${stderr.slice(-500)}`);
  }
  return times;
}

/** Runs the status scenario on a fresh database. */
export async function runStatus(adminUrl: string, s: StatusSettings): Promise<StatusResult> {
  const scratch = await createScratchDatabase(adminUrl, 'status');
  const db = createDb(scratch.url, { maxConnections: 1 });
  try {
    await migrateToLatest(db);
    const perAccount = Math.ceil(s.friendRows / s.accounts);
    s.say(`status: loading ${s.friendRows} friend rows over ${s.accounts} accounts …`);
    const t0 = performance.now();
    // Synced accounts as the apply leaves them: friend_count equal to their rows, due within the hour.
    await sql`
      INSERT INTO tim.accounts (account_id, standard_sequence, custom_sequence, friend_count, status,
                                last_synced_at, priority, next_sync_at, reconcile_due_at)
      SELECT 'status_' || lpad(i::text, 8, '0'), 1, 1,
             greatest(0, least(${perAccount}::int, ${s.friendRows}::int - (i - 1) * ${perAccount}::int)),
             'ok', now(), 2, now() + random() * interval '1 hour', now() + random() * interval '7 days'
      FROM generate_series(1, ${s.accounts}::int) AS i`.execute(db);
    await sql`
      INSERT INTO tim.friends (account_id, friend_id, remark, add_source, add_time)
      SELECT 'status_' || lpad(((n - 1) / ${perAccount}::int + 1)::text, 8, '0'),
             'friend_' || n, 'remark ' || n, 'AddSource_Type_' || (n % 7), now()
      FROM generate_series(1, ${s.friendRows}::int) AS n`.execute(db);
    await sql`VACUUM ANALYZE`.execute(db);
    const loadSeconds = (performance.now() - t0) / 1000;

    s.say(`status: timing readStatus ×${s.runs} and the CLI ×${s.cliRuns} …`);
    const status = timing('readStatus', s.accounts, s.friendRows, await timeReadStatus(db, s.runs));
    const cli = timing(
      'friend-mirror status (process)',
      s.accounts,
      s.friendRows,
      await timeCli(scratch.url, s.cliRuns),
    );
    const reported = (await readStatus(db)).friendRows;
    const recount = Number(
      (await sql<{ n: string }>`SELECT count(*) AS n FROM tim.friends`.execute(db)).rows[0]?.n,
    );

    const extra = Math.max(0, s.wideAccounts - s.accounts);
    s.say(`status: adding ${extra} accounts without friends …`);
    await sql`
      INSERT INTO tim.accounts (account_id, standard_sequence, custom_sequence, status, last_synced_at,
                                priority, next_sync_at, reconcile_due_at)
      SELECT 'wide_' || lpad(i::text, 8, '0'), 1, 1, 'ok', now(), 2,
             now() + random() * interval '1 hour', now() + random() * interval '7 days'
      FROM generate_series(1, ${extra}::int) AS i`.execute(db);
    await sql`VACUUM ANALYZE tim.accounts`.execute(db);
    const wide = timing(
      'readStatus, wide accounts table',
      s.accounts + extra,
      s.friendRows,
      await timeReadStatus(db, s.runs),
    );
    return { settings: s, loadSeconds, status, cli, wide, reported, recount };
  } finally {
    await db.destroy();
    await scratch.drop();
  }
}

/** The scenario's console and BENCHMARKS.md lines. */
export function statusLines(r: StatusResult): string[] {
  const line = (t: StatusTiming, runs: number) =>
    `${t.case.padEnd(32)} ${t.accounts.toLocaleString('en').padStart(9)} accounts, ${t.friendRows.toLocaleString('en')} friend rows: median ${t.medianMs.toFixed(1)} ms, p95 ${t.p95Ms.toFixed(1)} ms, max ${t.maxMs.toFixed(1)} ms (${runs} runs)`;
  return [
    `loaded in ${r.loadSeconds.toFixed(1)} s; friend rows reported ${r.reported.toLocaleString('en')}, recount ${r.recount.toLocaleString('en')}`,
    line(r.status, r.settings.runs),
    line(r.cli, r.settings.cliRuns),
    line(r.wide, r.settings.runs),
  ];
}
