/**
 * `npm run bench`: measures the mirror against the quota (issue #5) and writes BENCHMARKS.md.
 * `npm run bench:ci`: a small full sweep and three replicas sharing the budget, which fail only on
 * gross regressions (bench/lib/guard.ts).
 *
 * usage: node dist/bench/run.js [--ci] [--only full,incremental,steady,wide,ceiling,scheduler,freshness,status,replicas] [--no-write]
 *
 * Settings: BENCH_* variables (bench/lib/settings.ts); the mirror's SYNC_CONCURRENCY, SYNC_ROW_BUDGET,
 * DATABASE_POOL_SIZE, TIM_RATE_JITTER_MS, TIM_TIMEOUT_MS and TIM_CALL_THREAD pass through to it
 * (e.g. TIM_CALL_THREAD=false to compare with pacing on the main thread). Postgres: BENCH_DATABASE_URL, else
 * TEST_DATABASE_URL, else an embedded server. BENCHMARKS.md is written only by a run of every
 * scenario (not with --only or --ci); it links the hand-written analysis in bench/notes.md.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadTimConfig } from '../src/config.js';
import { BREAKDOWN_UTILISATION, evaluateGuard } from './lib/guard.js';
import { type MachineInfo, machineInfo } from './lib/machine.js';
import { percentile } from './lib/percentile.js';
import { type BenchServer, chooseServer } from './lib/postgres.js';
import { machineBusyBetween } from './lib/proc.js';
import { type BenchSettings, envPrefix, readSettings } from './lib/settings.js';
import { SIM_NICE } from './lib/simulator.js';
import { type CeilingResult, runCeiling, type WriteTiming } from './scenarios/ceiling.js';
import { type FreshnessResult, freshnessLines, runFreshness } from './scenarios/freshness.js';
import { type ReplicasResult, replicaLines, runReplicas } from './scenarios/replicas.js';
import { runScheduler, type SchedulerResult } from './scenarios/scheduler.js';
import { runStatus, type StatusResult, statusLines } from './scenarios/status.js';
import { runSteady, type SteadyResult, steadyLines } from './scenarios/steady.js';
import { type PassMeasure, runSweep, type SweepResult } from './scenarios/sweep.js';
import { runWide, type WideResult, wideLines } from './scenarios/wide.js';

const ALL = [
  'full',
  'incremental',
  'steady',
  'wide',
  'ceiling',
  'scheduler',
  'freshness',
  'status',
  'replicas',
] as const;
type Scenario = (typeof ALL)[number];

/**
 * The CI guard's sweep: a first sync of 400 accounts, about 1,400 calls (7 s at the quota). Pages of
 * 20 friends keep the per-call work small, so on a healthy 2-core runner the mirror keeps the pipe
 * full with CPU to spare (about 1.1 of 2 cores busy, 93–95% of the quota), while every account still
 * pages (3–4 pages each) and writes standard and custom tags. What it catches is the pipe not being
 * kept full (limiter, concurrency, pool, budget, apply suddenly far slower) or the quota being
 * broken, not this machine's speed: the full-size sweep is CPU-bound on 2 cores (BENCHMARKS.md).
 */
const CI_DEFAULTS: Partial<BenchSettings> = {
  accounts: 400,
  meanFriends: 60,
  maxFriends: 300,
  pageSize: 20,
  latencyMs: [10, 40],
  rateLimit: 200,
  mutateFraction: 0,
};

/**
 * `TIM_RATE_JITTER_MS` of the guard's mirror. The limiter counts a call when it grants it; the
 * request reaches the socket when the event loop next gets to it, after whatever else is due (a
 * page to parse, a garbage collection). On a busy 2-core runner that delay varies by more than the
 * default 20 ms, and 2 of 15 guard runs here saw 202–204 calls in one second at the simulator
 * (BENCHMARKS.md). 50 ms covers it (at most 193–195 in 6 runs) and still allows 95% of the quota.
 */
const CI_RATE_JITTER_MS = 50;

/** The sweep's simulated app and the UserSig key both sides use. */
const APP = { sdkAppId: 1400000000, secretKey: 'bench-secret-key' };

interface Results {
  machine: MachineInfo;
  server: Pick<BenchServer, 'source' | 'version' | 'settings'>;
  settings: BenchSettings;
  sweep?: SweepResult;
  sweepCommand?: string;
  steady?: SteadyResult;
  steadyCommand?: string;
  wide?: WideResult;
  wideCommand?: string;
  ceiling?: CeilingResult;
  ceilingCommand?: string;
  scheduler?: SchedulerResult;
  schedulerCommand?: string;
  freshness?: FreshnessResult;
  freshnessCommand?: string;
  status?: StatusResult;
  statusCommand?: string;
  replicas?: ReplicasResult;
  replicasCommand?: string;
}

/**
 * The freshness scenario's app: many small accounts and a short sync interval, so the daemon's
 * regular work is a steady load (about 3,000 accounts per 30 s) while changes are measured, and the
 * run ends in minutes. `BENCH_FRESHNESS_*` override it.
 */
function freshnessSettings(settings: BenchSettings) {
  const n = (name: string, dflt: number) => Number(process.env[`BENCH_FRESHNESS_${name}`] ?? dflt);
  return {
    ...settings,
    ...APP,
    accounts: n('ACCOUNTS', 3000),
    meanFriends: n('MEAN_FRIENDS', 20),
    maxFriends: n('MAX_FRIENDS', 200),
    intervalSeconds: n('INTERVAL_SECONDS', 30),
    changes: n('CHANGES', 40),
  };
}

/**
 * The replicas scenario: three daemons, and small accounts (about one page each) so that the work
 * per call is light and what is judged is the budget's sharing keeping the pipe busy, with the
 * apply of many small first syncs. `BENCH_REPLICAS_*` override it.
 */
function replicasSettings(settings: BenchSettings) {
  const n = (name: string, dflt: number) => Number(process.env[`BENCH_REPLICAS_${name}`] ?? dflt);
  return {
    ...settings,
    ...APP,
    replicas: n('COUNT', 3),
    accounts: n('ACCOUNTS', 1500),
    meanFriends: n('MEAN_FRIENDS', 2),
    maxFriends: n('MAX_FRIENDS', 10),
  };
}

/**
 * The steady scenario: 5 full sweeps (a fresh database each) and 10 incremental passes, on the
 * sweep's app, `BENCH_MUTATE_FRACTION` of the accounts changed before each incremental pass.
 * `BENCH_STEADY_FULL` and `BENCH_STEADY_INCREMENTAL` override the counts.
 */
function steadySettings(settings: BenchSettings) {
  const n = (name: string, dflt: number) => Number(process.env[`BENCH_STEADY_${name}`] ?? dflt);
  return {
    ...settings,
    ...APP,
    fullSweeps: n('FULL', 5),
    incrementalPasses: n('INCREMENTAL', 10),
  };
}

/**
 * The wide sweep's app (issue #18): every account at Tencent's 3,000-friend cap, enough of them to
 * keep the default 64 accounts in flight for a while. `BENCH_WIDE_*` override it.
 */
function wideSettings(settings: BenchSettings) {
  const n = (name: string, dflt: number) => Number(process.env[`BENCH_WIDE_${name}`] ?? dflt);
  return { ...settings, ...APP, accounts: n('ACCOUNTS', 300), friends: n('FRIENDS', 3000) };
}

/** The status scenario's mirror: 1,000,000 friend rows by default. `BENCH_STATUS_*` override it. */
function statusSettings() {
  const n = (name: string, dflt: number) => Number(process.env[`BENCH_STATUS_${name}`] ?? dflt);
  return {
    friendRows: n('FRIEND_ROWS', 1_000_000),
    accounts: n('ACCOUNTS', 10_000),
    wideAccounts: n('WIDE_ACCOUNTS', 1_000_000),
    runs: n('RUNS', 21),
    cliRuns: n('CLI_RUNS', 5),
  };
}

const out = (line = '') => process.stdout.write(`${line}\n`);
const say = (line: string) => process.stderr.write(`» ${line}\n`);

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { ci: { type: 'boolean' }, only: { type: 'string' }, 'no-write': { type: 'boolean' } },
    strict: true,
  });
  const ci = values.ci === true;
  const only = new Set<Scenario>(
    values.only
      ? (values.only.split(',').map((s) => s.trim()) as Scenario[])
      : ci
        ? ['full', 'replicas']
        : [...ALL],
  );
  for (const s of only)
    if (!ALL.includes(s)) throw new Error(`unknown scenario ${s}; expected ${ALL.join(',')}`);
  const settings = readSettings(process.env, ci ? CI_DEFAULTS : {});
  if (ci && settings.mirrorEnv.TIM_RATE_JITTER_MS === undefined) {
    settings.mirrorEnv.TIM_RATE_JITTER_MS = String(CI_RATE_JITTER_MS);
  }
  const base = ci ? 'npm run bench:ci' : 'npm run bench';
  const onlyArg = (names: Scenario[]) =>
    ci || only.size === ALL.length ? '' : ` -- --only ${names.join(',')}`;

  const server = await chooseServer();
  const r: Results = {
    machine: machineInfo(),
    server: { source: server.source, version: server.version, settings: server.settings },
    settings,
  };
  say(`PostgreSQL ${server.version} (${server.source}); ${r.machine.cpu}, ${r.machine.cores} cores`);
  try {
    if (only.has('full') || only.has('incremental')) {
      const names = ALL.filter((s) => (s === 'full' || s === 'incremental') && only.has(s));
      r.sweepCommand = `${envPrefix(settings)}${base}${onlyArg(names)}`;
      r.sweep = await runSweep(server.adminUrl, {
        ...settings,
        ...APP,
        mutateFraction: only.has('incremental') ? settings.mutateFraction : 0,
        say,
        ...(settings.cpuProfDir ? { cpuProfDir: settings.cpuProfDir } : {}),
      });
      printSweep(r.sweep, r.sweepCommand);
    }
    if (only.has('steady')) {
      r.steadyCommand = `${envPrefix(settings)}${base}${onlyArg(['steady'])}`;
      r.steady = await runSteady(server.adminUrl, { ...steadySettings(settings), say });
      out(`\n## steady   $ ${r.steadyCommand}`);
      for (const l of steadyLines(r.steady)) out(`  ${l}`);
    }
    if (only.has('wide')) {
      r.wideCommand = `${envPrefix(settings)}${base}${onlyArg(['wide'])}`;
      r.wide = await runWide(server.adminUrl, { ...wideSettings(settings), say });
      out(`\n## wide sweep   $ ${r.wideCommand}`);
      for (const l of [...passLines(r.wide.pass, settings.rateLimit), ...wideLines(r.wide)]) out(`  ${l}`);
    }
    if (only.has('ceiling')) {
      r.ceilingCommand = `${envPrefix(settings)}${base}${onlyArg(['ceiling'])}`;
      r.ceiling = await runCeiling(server.adminUrl, {
        ...settings,
        parallel: Number(process.env.BENCH_CEILING_PARALLEL ?? 4),
        ...(process.env.BENCH_SCHEMA_CHANGE ? { schemaChange: process.env.BENCH_SCHEMA_CHANGE } : {}),
        say,
      });
      printCeiling(r.ceiling, r.ceilingCommand);
    }
    // After the sweeps, as issue #5 asks: it uses the claim function of the daemon (src/db/leases.ts).
    if (only.has('scheduler')) {
      r.schedulerCommand = `${envPrefix(settings)}${base}${onlyArg(['scheduler'])}`;
      r.scheduler = await runScheduler(server.adminUrl, {
        ...settings,
        ...APP,
        batch: 64,
        claims: 50,
        say,
      });
      printScheduler(r.scheduler, r.schedulerCommand);
    }
    if (only.has('freshness')) {
      r.freshnessCommand = `${envPrefix(settings)}${base}${onlyArg(['freshness'])}`;
      r.freshness = await runFreshness(server.adminUrl, { ...freshnessSettings(settings), say });
      out(`\n## freshness   $ ${r.freshnessCommand}`);
      for (const l of freshnessLines(r.freshness)) out(`  ${l}`);
    }
    if (only.has('status')) {
      r.statusCommand = `${envPrefix(settings)}${base}${onlyArg(['status'])}`;
      r.status = await runStatus(server.adminUrl, { ...statusSettings(), say });
      out(`\n## status   $ ${r.statusCommand}`);
      for (const l of statusLines(r.status)) out(`  ${l}`);
    }
    if (only.has('replicas')) {
      r.replicasCommand = `${envPrefix(settings)}${base}${onlyArg(['replicas'])}`;
      r.replicas = await runReplicas(server.adminUrl, { ...replicasSettings(settings), say });
      out(`\n## replicas   $ ${r.replicasCommand}`);
      for (const l of replicaLines(r.replicas)) out(`  ${l}`);
    }
  } finally {
    await server.stop();
  }

  const rows = summaryRows(r);
  out();
  out(
    `machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.ramGb.toFixed(0)} GB; Node ${r.machine.node}; PostgreSQL ${r.server.version} (${r.server.source})`,
  );
  out(
    table(
      ['scenario', 'measure', 'value', 'target', ''],
      rows.map((x) => [x.scenario, x.measure, x.value, x.target, x.status]),
    ),
  );

  if (ci) {
    const full = r.sweep?.full;
    if (!full && only.has('full')) return 1;
    const replicasOk = only.has('replicas') ? judgeReplicas(r.replicas, settings.rateLimit) : true;
    if (!full) return replicasOk ? 0 : 1;
    const judge = (m: PassMeasure) =>
      evaluateGuard(m.calls, settings.rateLimit, {
        foreignCores: m.cpu.other,
        sweep: { exitCode: m.report.exitCode, failed: m.report.failed, friendRows: m.friendRows },
      });
    let verdict = judge(full);
    if (verdict.inconclusive) {
      // Someone else had the CPU: one more try before giving up on judging utilisation.
      out();
      for (const line of verdict.lines) out(`bench:ci ${line}; running the sweep again`);
      const again = await withServer(async (url) =>
        runSweep(url, { ...settings, ...APP, mutateFraction: 0, say }),
      );
      printSweep(again, r.sweepCommand ?? base);
      verdict = judge(again.full);
    }
    out();
    for (const line of verdict.lines) out(`bench:ci ${line}`);
    return verdict.ok && replicasOk ? 0 : 1;
  }
  if (values['no-write'] !== true && only.size === ALL.length) {
    const path = fileURLToPath(new URL('../../BENCHMARKS.md', import.meta.url));
    writeFileSync(path, renderMarkdown(r, rows));
    say(`wrote ${path}`);
  }
  return 0;
}

/**
 * The guard's verdict on the replicas: each sweep clean (every account synced, none failing, never
 * above the quota, no 60007) and above a breakdown share of the quota while work remained. Only a
 * breakdown fails, not a slow machine: the replicas' rate is CPU-bound on a small runner, and a
 * budget that stops being shared (shares that do not add up to the quota, a replica left at 0) costs
 * a third of it or more.
 */
function judgeReplicas(r: ReplicasResult | undefined, rateLimit: number): boolean {
  out();
  if (!r || r.sweeps.length === 0) {
    out('bench:ci FAIL replicas: no sweep measured');
    return false;
  }
  let ok = true;
  for (const w of r.sweeps) {
    const verdict = evaluateGuard(w.calls, rateLimit, {
      minUtilisation: BREAKDOWN_UTILISATION,
      sweep: { exitCode: 0, failed: w.failing, friendRows: r.friendRows },
    });
    for (const line of verdict.lines) out(`bench:ci replicas, ${w.label}: ${line}`);
    ok &&= verdict.ok;
  }
  return ok;
}

/** Runs `work` on a freshly chosen server and stops it afterwards. */
async function withServer<T>(work: (adminUrl: string) => Promise<T>): Promise<T> {
  const server = await chooseServer();
  try {
    return await work(server.adminUrl);
  } finally {
    await server.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// The summary: one row per number issue #5 asks for, with its target.

interface SummaryRow {
  scenario: string;
  measure: string;
  value: string;
  target: string;
  /** ✓ met, ✗ missed, blank: informational. */
  status: string;
}

/** Rounded down, so a ratio just under a target never reads as meeting it (96.95% is not 97.0%). */
const pct = (x: number) => `${(Math.floor(x * 1000 + 1e-9) / 10).toFixed(1)}%`;
/** The mirror's `TIM_RATE_JITTER_MS`, as its own config reads it from the bench's environment. */
const jitterAllowanceMs = (mirrorEnv: Record<string, string>) =>
  loadTimConfig({ TIM_SDKAPPID: '1400000000', TIM_SECRET_KEY: 'bench', ...mirrorEnv }).rateJitterMs;
const check = (ok: boolean) => (ok ? '✓' : '✗');

function summaryRows(r: Results): SummaryRow[] {
  const rows: SummaryRow[] = [];
  const add = (scenario: string, measure: string, value: string, target = '', status = '') =>
    rows.push({ scenario, measure, value, target, status });
  const rate = r.settings.rateLimit;
  const f = r.sweep?.full;
  if (f) {
    const wall = f.report.passSeconds;
    const sustained = f.calls.sustainedRate / rate;
    add(
      'full sweep',
      'calls/s ÷ quota while work remained',
      `${pct(sustained)} (${f.calls.sustainedRate.toFixed(1)}/s)`,
      '≥ 97%',
      check(sustained >= 0.97),
    );
    add(
      'full sweep',
      'calls/s ÷ quota over the whole pass',
      `${pct(f.report.calls / wall / rate)} (${(f.report.calls / wall).toFixed(1)}/s)`,
    );
    add(
      'full sweep',
      'wall time vs limit (calls ÷ quota)',
      `${wall.toFixed(1)} s vs ${(f.report.calls / rate).toFixed(1)} s (×${(wall / (f.report.calls / rate)).toFixed(2)})`,
    );
    add(
      'full sweep',
      'max calls in any 1 s window',
      `${f.calls.maxInAnySecond} (60007: ${f.calls.rateLimited})`,
      `≤ ${rate}`,
      check(f.calls.maxInAnySecond <= rate && f.calls.rateLimited === 0),
    );
    add(
      'full sweep',
      "the simulator's arrival stamps: late by up to",
      `${f.simLoopDelay.maxMs.toFixed(0)} ms (p99 ${f.simLoopDelay.p99Ms.toFixed(0)} ms), vs the ${jitterAllowanceMs(r.settings.mirrorEnv)} ms allowance`,
    );
    add(
      'full sweep',
      'friend rows/s, tag rows/s',
      `${(f.report.friendsWritten / wall).toFixed(0)}, ${(f.report.tagsWritten / wall).toFixed(0)}`,
    );
    add(
      'full sweep',
      'peak RSS of the mirror process',
      `${(f.report.maxRssKb / 1024).toFixed(0)} MB`,
      '≤ 250 MB',
      check(f.report.maxRssKb / 1024 <= 250),
    );
    add(
      'full sweep',
      'machine CPU busy while work remained',
      `${machineBusyBetween(f.cpu, f.calls.firstAt, f.calls.drainAt).toFixed(2)} of ${f.cpu.machineCores} cores (other processes: ${f.cpu.other.toFixed(2)})`,
    );
    add(
      'full sweep',
      'start of `sync` to its first call',
      `${((f.calls.firstAt - f.report.startedAt) / 1000).toFixed(1)} s`,
    );
  }
  const i = r.sweep?.incremental;
  if (i) {
    const wall = i.report.passSeconds;
    const sustained = i.calls.sustainedRate / rate;
    add(
      'incremental',
      'calls (1 per unchanged account + changed pages)',
      `${i.report.calls} (expected ${i.expectedCalls}; ${i.report.unchanged} unchanged)`,
      '= expected',
      check(i.report.calls === i.expectedCalls),
    );
    add(
      'incremental',
      'rows written by unchanged accounts',
      `${i.rowsTouchedOutsideChanged}`,
      '0',
      check(i.rowsTouchedOutsideChanged === 0 && i.changedOutsideMutated === 0),
    );
    add(
      'incremental',
      `rows written (${i.mutated.length} changed accounts)`,
      `${i.report.friendsWritten} friend, ${i.report.tagsWritten} tag`,
    );
    add(
      'incremental',
      'calls/s ÷ quota while work remained',
      `${pct(sustained)} (${i.calls.sustainedRate.toFixed(1)}/s)`,
      '≥ 97%',
      check(sustained >= 0.97),
    );
    add(
      'incremental',
      'wall time vs limit',
      `${wall.toFixed(1)} s vs ${(i.report.calls / rate).toFixed(1)} s (×${(wall / (i.report.calls / rate)).toFixed(2)})`,
    );
    add(
      'incremental',
      'mirror equals the simulator',
      `${i.verified} accounts checked, ${i.verifyProblems.length} differences`,
      '0',
      check(i.verifyProblems.length === 0),
    );
  }
  const st0 = r.steady;
  if (st0) {
    const of = (kind: 'full' | 'incremental') => st0.passes.filter((p) => p.kind === kind);
    const range = (xs: number[]) =>
      xs.length ? `${pct(Math.min(...xs))}–${pct(Math.max(...xs))}` : 'no pass';
    const ratios = (kind: 'full' | 'incremental') => of(kind).map((p) => p.calls.arrivalRate / rate);
    const inc = ratios('incremental');
    add(
      'steady',
      `incremental: calls/s ÷ quota, first call to last (${inc.length} passes)`,
      range(inc),
      '≥ 95%',
      check(inc.length > 0 && Math.min(...inc) >= 0.95),
    );
    add('steady', `full sweeps: the same (${of('full').length} passes)`, range(ratios('full')));
    const all = st0.passes;
    const empty = all.reduce((n, p) => n + p.calls.emptyBuckets, 0);
    const minBucket = Math.min(
      ...all.map((p) => (Number.isNaN(p.calls.minBucket) ? Infinity : p.calls.minBucket)),
    );
    add(
      'steady',
      'empty 250 ms buckets while work remained, all passes',
      `${empty} (fewest calls in a bucket: ${Number.isFinite(minBucket) ? minBucket : '-'})`,
      '0',
      check(empty === 0),
    );
    const maxWindow = Math.max(0, ...all.map((p) => p.calls.maxInAnySecond));
    add(
      'steady',
      'max calls in any 1 s window, all passes',
      `${maxWindow} (60007: ${all.reduce((n, p) => n + p.calls.rateLimited, 0)})`,
      `≤ ${rate}`,
      check(maxWindow <= rate),
    );
  }
  const w = r.wide;
  if (w) {
    const p = w.pass;
    const wall = p.report.passSeconds;
    add(
      'wide sweep',
      `peak RSS, ${w.settings.accounts} accounts of ${w.settings.friends} friends`,
      `${(p.report.maxRssKb / 1024).toFixed(0)} MB`,
      '≤ 250 MB',
      check(p.report.maxRssKb / 1024 <= 250),
    );
    add(
      'wide sweep',
      'calls/s ÷ quota while work remained',
      `${pct(p.calls.sustainedRate / rate)} (${p.calls.sustainedRate.toFixed(1)}/s)`,
    );
    add('wide sweep', 'friend rows/s', `${(p.report.friendsWritten / wall).toFixed(0)}`);
    add(
      'wide sweep',
      'friends held in memory at once (row budget)',
      p.rowBudget ? `at most ${p.rowBudget.peak} of ${p.rowBudget.limit}` : 'no budget',
    );
  }
  const c = r.ceiling;
  if (c) {
    add(
      'db ceiling',
      'apply rows/s ÷ COPY rows/s (wall)',
      `${pct(c.ratio)} (${c.apply.rowsPerSecond.toFixed(0)} vs ${c.copy.rowsPerSecond.toFixed(0)})`,
      '≥ 50%',
      check(c.ratio >= 0.5),
    );
    add('db ceiling', 'the same in Postgres CPU per row', pct(c.cpuRatio));
    add(
      'db ceiling',
      `pages of 500 friends/s the apply sustains (${c.settings.parallel} at once)`,
      `${(c.friendRows / (c.applyParallel.ms / 1000) / 500).toFixed(0)}`,
    );
  }
  const s = r.scheduler;
  if (s) {
    for (const t of s.claims) {
      add(
        'scheduler',
        `claim ${s.settings.batch} of ${s.accounts.toLocaleString('en')}: ${t.case}`,
        `${t.medianMs.toFixed(1)} ms median, ${t.p95Ms.toFixed(1)} p95 (${t.claimed} got)`,
        '≤ 20 ms (median)',
        check(t.medianMs <= 20),
      );
    }
    add(
      'scheduler',
      'daemon RSS idle / running (peak)',
      `${s.daemon.idleRssMb.toFixed(0)} MB / ${s.daemon.runningPeakRssMb.toFixed(0)} MB`,
    );
    add(
      'scheduler',
      'daemon CPU idle (daemon + its Postgres backends)',
      `${(s.daemon.idleCpuCores * 100).toFixed(1)}% + ${(s.daemon.idlePostgresCores * 100).toFixed(1)}% of a core`,
    );
  }
  const fr = r.freshness;
  if (fr) {
    for (const m of [fr.scheduled, fr.webhooks]) {
      add(
        'freshness',
        `change at the source → row in Postgres, ${m.mode}`,
        `${(percentile(m.delaysMs, 50) / 1000).toFixed(2)} s median, ${(percentile(m.delaysMs, 95) / 1000).toFixed(2)} s p95 (${m.delaysMs.length} changes${m.lost ? `, ${m.lost} lost` : ''})`,
        m.mode === 'webhooks' ? '≤ 2 s' : `≤ interval + 10% jitter (${fr.settings.intervalSeconds * 1.1} s)`,
        check(
          m.lost === 0 &&
            percentile(m.delaysMs, 95) <= (m.mode === 'webhooks' ? 2000 : fr.settings.intervalSeconds * 1100),
        ),
      );
    }
  }
  const st = r.status;
  if (st) {
    add(
      'status',
      `status queries, ${st.status.friendRows.toLocaleString('en')} friend rows (${st.status.accounts.toLocaleString('en')} accounts)`,
      `${st.status.medianMs.toFixed(1)} ms median, ${st.status.p95Ms.toFixed(1)} p95`,
      '≤ 100 ms',
      check(st.status.medianMs <= 100),
    );
    add(
      'status',
      'friend rows reported = count(*)',
      `${st.reported.toLocaleString('en')} vs ${st.recount.toLocaleString('en')}`,
      'equal',
      check(st.reported === st.recount),
    );
    add('status', '`friend-mirror status` process, start to exit', `${st.cli.medianMs.toFixed(0)} ms median`);
    add(
      'status',
      `status queries, ${st.wide.accounts.toLocaleString('en')} accounts`,
      `${st.wide.medianMs.toFixed(1)} ms median, ${st.wide.p95Ms.toFixed(1)} p95`,
    );
  }
  const rp = r.replicas;
  if (rp) {
    for (const w of rp.sweeps) {
      const share = w.calls.sustainedRate / rate;
      add(
        `${rp.settings.replicas} replicas`,
        `calls/s ÷ quota while work remained, ${w.label}`,
        `${pct(share)} (${w.calls.sustainedRate.toFixed(1)}/s)`,
        '≥ 95% (issue #3)',
        check(share >= 0.95),
      );
      add(
        `${rp.settings.replicas} replicas`,
        `max calls in any 1 s window, ${w.label}`,
        `${w.calls.maxInAnySecond} (60007: ${w.calls.rateLimited})`,
        `≤ ${rate}`,
        check(w.calls.maxInAnySecond <= rate && w.calls.rateLimited === 0),
      );
    }
  }
  return rows;
}

function table(head: string[], body: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Console details per scenario.

function passLines(p: PassMeasure, rate: number): string[] {
  const wall = p.report.passSeconds;
  const calls = p.report.calls;
  const perCall = (cores: number) => ((cores * p.cpu.seconds * 1000) / calls).toFixed(2);
  return [
    `accounts ${p.report.accounts}: ${p.report.changed} changed, ${p.report.unchanged} unchanged, ${p.report.failed} failed, ${p.report.missing} missing; exit ${p.report.exitCode}`,
    `calls ${calls} (arrived ${p.calls.arrived}, not OK ${p.calls.notOk}, 60007 ${p.calls.rateLimited}); max in any 1 s window ${p.calls.maxInAnySecond}`,
    `wall ${wall.toFixed(1)} s vs limit ${(calls / rate).toFixed(2)} s; ${(calls / wall).toFixed(1)} calls/s = ${pct(calls / wall / rate)} of the quota; first call ${((p.calls.firstAt - p.report.startedAt) / 1000).toFixed(1)} s after start`,
    `while work remained (${p.calls.sustainedSeconds.toFixed(1)} s): ${p.calls.sustainedRate.toFixed(1)} calls/s = ${pct(p.calls.sustainedRate / rate)}`,
    `rows written: ${p.report.friendsWritten} friend (${(p.report.friendsWritten / wall).toFixed(0)}/s), ${p.report.tagsWritten} tag (${(p.report.tagsWritten / wall).toFixed(0)}/s); in the mirror: ${p.friendRows} friend, ${p.tagRows} tag`,
    `peak RSS ${(p.report.maxRssKb / 1024).toFixed(0)} MB; CPU in cores: mirror ${(p.cpu.byName.mirror ?? 0).toFixed(2)}, simulator ${(p.cpu.byName.simulator ?? 0).toFixed(2)}, Postgres backends ${p.cpu.postgres.toFixed(2)}, everything else ${p.cpu.other.toFixed(2)}; machine ${p.cpu.machine.toFixed(2)} of ${p.cpu.machineCores}, load average ${p.cpu.loadAverage.toFixed(1)}`,
    `machine CPU while work remained: ${machineBusyBetween(p.cpu, p.calls.firstAt, p.calls.drainAt).toFixed(2)} of ${p.cpu.machineCores} cores busy`,
    `CPU per call: mirror ${(p.report.cpuUserMs / calls).toFixed(2)} ms user + ${(p.report.cpuSystemMs / calls).toFixed(2)} ms system, Postgres ${perCall(p.cpu.postgres)} ms, simulator ${perCall(p.cpu.byName.simulator ?? 0)} ms`,
    `event-loop delay p99 ${p.report.loopDelayP99Ms.toFixed(0)} ms (max ${p.report.loopDelayMaxMs.toFixed(0)}), simulator's p99 ${p.simLoopDelay.p99Ms.toFixed(0)} ms (max ${p.simLoopDelay.maxMs.toFixed(0)}); call budget: ${p.budget.map((b) => `${b.rate}/s at ${(b.atMs / 1000).toFixed(1)} s`).join(', ') || 'no change logged'}`,
    `calls per second: ${p.calls.perSecond.join(' ')}`,
    `calls per 250 ms while work remained: ${p.calls.buckets.length} buckets, ${p.calls.emptyBuckets} empty, min ${Number.isNaN(p.calls.minBucket) ? '-' : p.calls.minBucket}`,
    ...p.warnings.slice(0, 5).map((w) => `warning: ${w}`),
  ];
}

function printSweep(r: SweepResult, command: string): void {
  out(`\n## full sweep   $ ${command}`);
  for (const l of passLines(r.full, r.settings.rateLimit)) out(`  ${l}`);
  const i = r.incremental;
  if (!i) return;
  out(`\n## incremental sweep   $ ${command}`);
  for (const l of passLines(i, r.settings.rateLimit)) out(`  ${l}`);
  out(
    `  ${i.mutated.length} accounts changed at the source; calls ${i.report.calls}, expected ${i.expectedCalls}; rows touched outside them ${i.rowsTouchedOutsideChanged}`,
  );
  out(
    `  ${i.verified} accounts compared with the simulator: ${i.verifyProblems.length ? i.verifyProblems.join('; ') : 'all equal'}`,
  );
}

function ceilingLines(r: CeilingResult): string[] {
  const row = (name: string, t: WriteTiming) =>
    `${name.padEnd(46)} ${(t.ms / 1000).toFixed(2).padStart(7)} s ${t.rowsPerSecond.toFixed(0).padStart(8)} rows/s; Postgres CPU ${t.postgresCpuSeconds.toFixed(2)} s (${(t.rows / t.postgresCpuSeconds).toFixed(0)} rows per CPU-second), client CPU ${t.clientCpuSeconds.toFixed(2)} s`;
  return [
    `${r.accounts} accounts, ${r.friendRows} friend rows + ${r.tagRows} tag rows${r.settings.schemaChange ? `; schema change: ${r.settings.schemaChange}` : ''}`,
    row('applySnapshot, one account after another', r.apply),
    row('COPY friends, then COPY friend_tags', r.copy),
    row(`applySnapshot, ${r.settings.parallel} accounts at once`, r.applyParallel),
    row('applySnapshot again, nothing changed', r.reapplyUnchanged),
    `apply ÷ COPY: ${pct(r.ratio)} in rows/s, ${pct(r.cpuRatio)} in Postgres CPU per row; the unchanged re-apply wrote ${r.reapplyUnchanged.rowsWritten} rows`,
  ];
}

function printCeiling(r: CeilingResult, command: string): void {
  out(`\n## database ceiling   $ ${command}`);
  for (const l of ceilingLines(r)) out(`  ${l}`);
}

function schedulerLines(r: SchedulerResult): string[] {
  return [
    `${r.accounts.toLocaleString('en')} accounts loaded in ${r.loadSeconds.toFixed(1)} s; claimDueAccounts(limit ${r.settings.batch}), ${r.settings.claims} claims per case:`,
    ...r.claims.map(
      (t) =>
        `  ${t.case.padEnd(40)} ${String(t.due).padStart(8)} due: median ${t.medianMs.toFixed(1)} ms, p95 ${t.p95Ms.toFixed(1)} ms, max ${t.maxMs.toFixed(1)} ms; ${t.claimed} claimed per call`,
    ),
    `daemon (friend-mirror run): RSS idle ${r.daemon.idleRssMb.toFixed(0)} MB, CPU idle ${(r.daemon.idleCpuCores * 100).toFixed(1)}% of a core (+ ${(r.daemon.idlePostgresCores * 100).toFixed(1)}% in its Postgres backends)`,
    `daemon syncing ${r.daemon.synced} due accounts in ${r.daemon.runningSeconds.toFixed(1)} s: peak RSS ${r.daemon.runningPeakRssMb.toFixed(0)} MB, ${r.daemon.calls.arrived} calls, ${r.daemon.calls.sustainedRate.toFixed(1)}/s while work remained, max ${r.daemon.calls.maxInAnySecond} in any 1 s`,
  ];
}

function printScheduler(r: SchedulerResult, command: string): void {
  out(`\n## scheduler scale   $ ${command}`);
  for (const l of schedulerLines(r)) out(`  ${l}`);
}

// ---------------------------------------------------------------------------------------------
// BENCHMARKS.md

function renderMarkdown(r: Results, rows: SummaryRow[]): string {
  const m = r.machine;
  const s = r.settings;
  const md: string[] = [];
  md.push('# Benchmarks');
  md.push('');
  md.push('Written by `npm run bench` (bench/run.ts): the latest run and the command behind each table.');
  md.push('What the numbers mean, and what was tried and measured: [bench/notes.md](bench/notes.md).');
  md.push('Re-run it to refresh every number below. Issue #5 has the targets.');
  md.push('');
  md.push('## Machine and run');
  md.push('');
  md.push('| | |');
  md.push('|---|---|');
  md.push(`| date | ${m.date} |`);
  md.push(`| code | ${m.commit} |`);
  md.push(`| CPU | ${m.cpu}, ${m.cores} cores |`);
  md.push(`| RAM | ${m.ramGb.toFixed(1)} GB |`);
  md.push(`| Node | ${m.node} |`);
  md.push(
    `| PostgreSQL | ${r.server.version} (${r.server.source}; ${Object.entries(r.server.settings)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ')}) |`,
  );
  md.push(
    `| simulated app | ${s.accounts} accounts, mean ${s.meanFriends} friends (max ${s.maxFriends}), seed ${s.seed}, page size ${s.pageSize}, latency ${s.latencyMs[0]}–${s.latencyMs[1]} ms, quota ${s.rateLimit}/s |`,
  );
  if (r.sweep) {
    md.push(
      `| simulator | its own process${r.sweep.simRaisedPriority ? `, at raised priority (nice ${SIM_NICE}) so that it timestamps arrivals on time` : ', normal priority (raising it needs root)'} |`,
    );
  }
  md.push(
    `| mirror settings | ${
      Object.entries(s.mirrorEnv)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ') || 'defaults'
    } |`,
  );
  md.push('');
  md.push(
    'Everything runs on the one machine: the simulator and the mirror in their own processes, and Postgres.',
  );
  md.push(
    'CPU figures are from /proc; "everything else" is what other processes on the machine used meanwhile.',
  );
  md.push('');
  md.push('## Summary');
  md.push('');
  md.push('| scenario | measure | value | target | |');
  md.push('|---|---|---|---|---|');
  for (const x of rows) md.push(`| ${x.scenario} | ${x.measure} | ${x.value} | ${x.target} | ${x.status} |`);
  md.push('');
  const block = (title: string, command: string | undefined, lines: string[]) => {
    md.push(`## ${title}`);
    md.push('');
    if (command) md.push(`\`${command}\``);
    md.push('');
    md.push('```');
    md.push(...lines);
    md.push('```');
    md.push('');
  };
  if (r.sweep) {
    block('Full sweep', r.sweepCommand, passLines(r.sweep.full, s.rateLimit));
    const i = r.sweep.incremental;
    if (i) {
      block('Incremental sweep', r.sweepCommand, [
        ...passLines(i, s.rateLimit),
        `${i.mutated.length} accounts changed at the source (POST /__sim/mutate fraction ${s.mutateFraction}, seed ${s.mutateSeed}); calls ${i.report.calls}, expected ${i.expectedCalls}`,
        `rows with updated_at in the pass outside the changed accounts: ${i.rowsTouchedOutsideChanged}; accounts marked changed outside them: ${i.changedOutsideMutated}`,
        `${i.verified} accounts compared with the simulator friend by friend: ${i.verifyProblems.length ? i.verifyProblems.join('; ') : 'all equal'}`,
      ]);
    }
  }
  if (r.steady) block('Steady pacing', r.steadyCommand, steadyLines(r.steady));
  if (r.wide)
    block('Wide sweep', r.wideCommand, [...passLines(r.wide.pass, s.rateLimit), ...wideLines(r.wide)]);
  if (r.ceiling) block('Database ceiling', r.ceilingCommand, ceilingLines(r.ceiling));
  if (r.scheduler) block('Scheduler scale', r.schedulerCommand, schedulerLines(r.scheduler));
  if (r.freshness) block('Freshness', r.freshnessCommand, freshnessLines(r.freshness));
  if (r.status) block('Status', r.statusCommand, statusLines(r.status));
  if (r.replicas) block('Replicas', r.replicasCommand, replicaLines(r.replicas));
  // Interleaved A/B pairs behind keep-or-remove decisions: hand-kept, copied in as they are, so a
  // new run refreshes the tables above without losing the comparisons.
  const pairs = fileURLToPath(new URL('../../bench/ab-pairs.md', import.meta.url));
  if (existsSync(pairs)) md.push(readFileSync(pairs, 'utf8').trimEnd(), '');
  md.push('## Analysis', '');
  md.push('The running analysis lives in [bench/notes.md](bench/notes.md), written by hand; it is linked,');
  md.push('not copied, so this file holds only what the last run measured.', '');
  return `${md.join('\n')}\n`;
}

process.exitCode = await main();
