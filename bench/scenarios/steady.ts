/**
 * Steady pacing (issue #18): does the pipe stay full, pass after pass? Several full sweeps, each a
 * first sync into a fresh database, then consecutive incremental passes over the last one, each
 * after a small share of the accounts changed at the source. The simulator (at raised priority,
 * standing in for Tencent) stamps every arrival; per pass it reports:
 * - calls/s ÷ quota from the first call to the last;
 * - empty 250 ms buckets while work remained (a stall of the pipe), and the fewest calls in one;
 * - the most calls in any 1 s window (the quota: never above it);
 * - 60007 answers.
 * One bad pass in many is what the single sweep of the other scenarios can miss: an incremental
 * pass once ran at 0.55 of the quota after one 60007.
 */
import { addAccounts } from '../../src/db/accounts.js';
import { migrateToLatest } from '../../src/db/migrate.js';
import { createDb } from '../../src/db/pool.js';
import { type CallStats, callStats } from '../lib/calls.js';
import { runMirrorPass } from '../lib/mirror-runner.js';
import { createScratchDatabase, type ScratchDatabase } from '../lib/postgres.js';
import { type SimSettings, startSimulator } from '../lib/simulator.js';

/** Settings of the steady scenario. */
export interface SteadySettings extends SimSettings {
  /** Full sweeps, each into a fresh database. */
  fullSweeps: number;
  /** Incremental passes after the last full sweep. */
  incrementalPasses: number;
  /** Share of accounts changed at the source before each incremental pass. */
  mutateFraction: number;
  mutateSeed: number;
  /** Extra mirror environment, as for the sweep. */
  mirrorEnv: Record<string, string>;
  mirrorNodeArgs?: string[];
  say: (line: string) => void;
}

/** One pass of the scenario. */
export interface SteadyPass {
  kind: 'full' | 'incremental';
  /** 1-based, per kind. */
  index: number;
  calls: CallStats;
  /** The mirror's exit code and failed accounts: a pass that lost accounts proves nothing. */
  exitCode: number;
  failed: number;
}

/** Everything the scenario measured. */
export interface SteadyResult {
  settings: SteadySettings;
  simRaisedPriority: boolean;
  passes: SteadyPass[];
}

/** One line per pass, for the console and BENCHMARKS.md. */
export function steadyLines(r: SteadyResult): string[] {
  const quota = r.settings.rateLimit;
  return r.passes.map((p) => {
    const c = p.calls;
    return (
      `${p.kind} ${String(p.index).padStart(2)}: ${c.arrived} calls, ${(c.arrivalRate / quota).toFixed(3)} of the quota first to last ` +
      `(${c.arrivalRate.toFixed(1)}/s); 250 ms buckets while work remained: ${c.buckets.length}, ${c.emptyBuckets} empty, ` +
      `min ${Number.isNaN(c.minBucket) ? '-' : c.minBucket}; max in any 1 s ${c.maxInAnySecond}; 60007 ${c.rateLimited}` +
      `${p.exitCode !== 0 || p.failed > 0 ? `; exit ${p.exitCode}, ${p.failed} failed` : ''}`
    );
  });
}

/** Runs the full sweeps, then the incremental passes. */
export async function runSteady(adminUrl: string, s: SteadySettings): Promise<SteadyResult> {
  s.say(`steady: starting the simulator: ${s.accounts} accounts, mean ${s.meanFriends} friends …`);
  const sim = await startSimulator(s);
  const passes: SteadyPass[] = [];
  let scratch: ScratchDatabase | undefined;
  try {
    const ids = (await sim.get<{ accounts: string[] }>('/__sim/accounts')).accounts;
    const pass = async (kind: SteadyPass['kind'], index: number, db: ScratchDatabase) => {
      await sim.clearCalls();
      const run = await runMirrorPass({
        env: {
          DATABASE_URL: db.url,
          TIM_BASE_URL: sim.baseUrl,
          TIM_SDKAPPID: String(s.sdkAppId),
          TIM_SECRET_KEY: s.secretKey,
          TIM_USERSIG: '',
          TIM_RATE_LIMIT: String(s.rateLimit),
          ...s.mirrorEnv,
        },
        simPid: sim.pid,
        database: db.name,
        nodeArgs: s.mirrorNodeArgs ?? [],
      });
      const p: SteadyPass = {
        kind,
        index,
        calls: callStats(await sim.calls()),
        exitCode: run.report.exitCode,
        failed: run.report.failed,
      };
      passes.push(p);
      s.say(steadyLines({ settings: s, simRaisedPriority: sim.raisedPriority, passes: [p] })[0]!);
    };

    for (let i = 1; i <= s.fullSweeps; i++) {
      await scratch?.drop();
      scratch = await createScratchDatabase(adminUrl, 'steady');
      const db = createDb(scratch.url, { maxConnections: 2 });
      try {
        await migrateToLatest(db);
        await addAccounts(db, ids);
      } finally {
        await db.destroy();
      }
      await pass('full', i, scratch);
    }
    if (!scratch) return { settings: s, simRaisedPriority: sim.raisedPriority, passes };
    for (let i = 1; i <= s.incrementalPasses; i++) {
      await sim.post('/__sim/mutate', { random: { fraction: s.mutateFraction, seed: s.mutateSeed + i } });
      await pass('incremental', i, scratch);
    }
    return { settings: s, simRaisedPriority: sim.raisedPriority, passes };
  } finally {
    await sim.stop();
    await scratch?.drop();
  }
}
