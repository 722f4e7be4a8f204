/**
 * Full and incremental sweeps: the simulator in its own process, the mirror (`sync --all`) in its
 * own process, one fresh database. The full sweep is a first sync of every account; then a share of
 * the accounts change at the source and the incremental sweep runs over all of them again.
 */
import { sql } from 'kysely';
import { addAccounts } from '../../src/db/accounts.js';
import { migrateToLatest } from '../../src/db/migrate.js';
import { createDb } from '../../src/db/pool.js';
import type { AccountTruth } from '../../src/simulator/index.js';
import { diffAccount } from '../../src/verify.js';
import { type CallStats, callStats } from '../lib/calls.js';
import { type MirrorRun, runMirrorPass } from '../lib/mirror-runner.js';
import { createScratchDatabase } from '../lib/postgres.js';
import { type SimProcess, type SimSettings, startSimulator } from '../lib/simulator.js';

/** Settings of a sweep run. */
export interface SweepSettings extends SimSettings {
  /** Share of accounts changed before the incremental sweep; 0 skips it. */
  mutateFraction: number;
  mutateSeed: number;
  /** Extra mirror environment (SYNC_CONCURRENCY, DATABASE_POOL_SIZE, TIM_RATE_JITTER_MS …). */
  mirrorEnv: Record<string, string>;
  /** Accounts compared with the simulator's truth after the incremental sweep, besides the changed ones. */
  verifySample: number;
  cpuProfDir?: string;
  mirrorNodeArgs?: string[];
  /** Called with a progress line. */
  say: (line: string) => void;
}

/** One pass, as measured. */
export interface PassMeasure extends MirrorRun {
  calls: CallStats;
  /** The simulator's event-loop delay during the pass: how late its arrival stamps could be. */
  simLoopDelay: { p99Ms: number; maxMs: number };
  /** Rows in the mirror afterwards. */
  friendRows: number;
  tagRows: number;
  /** Fewest and most friends of one account in the mirror afterwards. */
  friendsPerAccount: { min: number; max: number };
}

/** The incremental pass, with its checks. */
export interface IncrementalMeasure extends PassMeasure {
  mutated: string[];
  /** 1 per unchanged account + every page of each changed account. */
  expectedCalls: number;
  /** friends + friend_tags rows with updated_at in the pass, of accounts not changed at the source. */
  rowsTouchedOutsideChanged: number;
  /** Accounts whose last_changed_at moved in the pass though the source did not change them. */
  changedOutsideMutated: number;
  verified: number;
  verifyProblems: string[];
}

/** Everything one sweep run measured. */
export interface SweepResult {
  settings: SweepSettings;
  /** The simulator ran at raised priority (bench/lib/simulator.ts says why). */
  simRaisedPriority: boolean;
  full: PassMeasure;
  incremental?: IncrementalMeasure;
}

/** Runs the full sweep, then (when `mutateFraction` > 0) the incremental one. */
export async function runSweep(adminUrl: string, s: SweepSettings): Promise<SweepResult> {
  s.say(
    `starting the simulator: ${s.accounts} accounts, mean ${s.meanFriends} friends (max ${s.maxFriends}) …`,
  );
  const sim = await startSimulator(s);
  const scratch = await createScratchDatabase(adminUrl, 'sweep');
  const db = createDb(scratch.url, { maxConnections: 4 });
  try {
    await migrateToLatest(db);
    const ids = (await sim.get<{ accounts: string[] }>('/__sim/accounts')).accounts;
    await addAccounts(db, ids);
    const mirrorEnv: Record<string, string> = {
      DATABASE_URL: scratch.url,
      TIM_BASE_URL: sim.baseUrl,
      TIM_SDKAPPID: String(s.sdkAppId),
      TIM_SECRET_KEY: s.secretKey,
      TIM_USERSIG: '',
      TIM_RATE_LIMIT: String(s.rateLimit),
      ...s.mirrorEnv,
    };
    const measure = async (label: string): Promise<PassMeasure> => {
      await sim.clearCalls();
      const run = await runMirrorPass({
        env: mirrorEnv,
        simPid: sim.pid,
        database: scratch.name,
        nodeArgs: s.mirrorNodeArgs ?? [],
        ...(s.cpuProfDir ? { cpuProfDir: `${s.cpuProfDir}/${label}` } : {}),
      });
      const counts = await sql<{ f: string; t: string; min: number; max: number }>`
        SELECT (SELECT count(*) FROM tim.friends) AS f, (SELECT count(*) FROM tim.friend_tags) AS t,
               (SELECT min(friend_count) FROM tim.accounts) AS min,
               (SELECT max(friend_count) FROM tim.accounts) AS max`.execute(db);
      const simStats = await sim.stats();
      return {
        ...run,
        calls: callStats(await sim.calls()),
        simLoopDelay: simStats.loopDelay,
        friendRows: Number(counts.rows[0]?.f ?? 0),
        tagRows: Number(counts.rows[0]?.t ?? 0),
        friendsPerAccount: { min: counts.rows[0]?.min ?? 0, max: counts.rows[0]?.max ?? 0 },
      };
    };

    s.say('full sweep (first sync of every account) …');
    const full = await measure('full');
    if (s.mutateFraction <= 0) return { settings: s, simRaisedPriority: sim.raisedPriority, full };

    const { changed } = await sim.post<{ changed: string[] }>('/__sim/mutate', {
      random: { fraction: s.mutateFraction, seed: s.mutateSeed },
    });
    s.say(`incremental sweep (${changed.length} accounts changed at the source) …`);
    let expectedCalls = ids.length - changed.length;
    const truths = new Map<string, AccountTruth>();
    const truth = async (id: string) =>
      truths.get(id) ?? (await sim.get<AccountTruth>(`/__sim/truth?account=${encodeURIComponent(id)}`));
    for (const id of changed) {
      const t = await truth(id);
      truths.set(id, t);
      expectedCalls += Math.max(1, Math.ceil(t.friends.length / s.pageSize));
    }
    const pass = await measure('incremental');
    const since = new Date(pass.report.startedAt);
    const touched = await sql<{ rows: string; accounts: string }>`
      SELECT (SELECT count(*) FROM tim.friends WHERE updated_at >= ${since} AND account_id <> ALL(${changed}::text[]))
           + (SELECT count(*) FROM tim.friend_tags WHERE updated_at >= ${since} AND account_id <> ALL(${changed}::text[])) AS rows,
             (SELECT count(*) FROM tim.accounts WHERE last_changed_at >= ${since} AND account_id <> ALL(${changed}::text[])) AS accounts`.execute(
      db,
    );
    // The changed accounts, plus an even sample of the rest: the mirror must equal the source.
    const rest = ids.filter((id) => !truths.has(id));
    const step = Math.max(1, Math.floor(rest.length / Math.max(1, s.verifySample)));
    const sample = rest.filter((_, i) => i % step === 0).slice(0, s.verifySample);
    const problems: string[] = [];
    for (const id of [...changed, ...sample]) {
      const diffs = await diffAccount(db, id, (await truth(id)).friends, 3);
      problems.push(...diffs.slice(0, Math.max(0, 5 - problems.length)));
    }
    return {
      settings: s,
      simRaisedPriority: sim.raisedPriority,
      full,
      incremental: {
        ...pass,
        mutated: changed,
        expectedCalls,
        rowsTouchedOutsideChanged: Number(touched.rows[0]?.rows ?? 0),
        changedOutsideMutated: Number(touched.rows[0]?.accounts ?? 0),
        verified: changed.length + sample.length,
        verifyProblems: problems,
      },
    };
  } finally {
    await db.destroy();
    await sim.stop();
    await scratch.drop();
  }
}

/** Re-exported for the runner's type imports. */
export type { SimProcess };
