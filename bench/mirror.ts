/**
 * The mirror process of the benchmark: `friend-mirror sync --all`, run through the CLI's own
 * `main()` (src/cli.ts) so that every part of the production path is measured (migrate check,
 * account claims, the replica budget, the pass), configured by the same environment variables.
 * It runs in its own process so that its CPU time and peak RSS are the mirror's alone. Prints one
 * JSON line ({@link MirrorReport}) on stdout when done.
 *
 * Not meant to be run by hand; `bench/run.ts` starts it.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { main } from '../src/cli.js';

/** What the mirror process reports. Times are `Date.now()` ms, comparable with the simulator's log. */
export interface MirrorReport {
  exitCode: number;
  /** The command's output, the summary line last. */
  output: string[];
  /** Parsed from the summary line (`formatSummary` in src/commands/sync.ts). */
  accounts: number;
  done: number;
  changed: number;
  unchanged: number;
  missing: number;
  failed: number;
  calls: number;
  friendsWritten: number;
  tagsWritten: number;
  /** The pass's own time, as the summary reports it (0.1 s resolution). */
  passSeconds: number;
  /** From the start of `main()` to its end: set-up (pool, migration check, budget) included. */
  commandMs: number;
  startedAt: number;
  endedAt: number;
  /** Peak resident set size of this process (getrusage), KiB. */
  maxRssKb: number;
  /** RSS sampled every 100 ms, KiB: [ms since start, rss]. */
  rssSamples: [number, number][];
  cpuUserMs: number;
  cpuSystemMs: number;
  /** Event-loop delay while syncing (perf_hooks histogram), ms. */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

const SUMMARY =
  /synced (\d+)\/(\d+) account\(s\) in ([\d.]+)s: (\d+) changed, (\d+) unchanged, (\d+) missing, (\d+) failed.*; (\d+) calls .*, (\d+) friend rows and (\d+) tag rows written/;

async function run(): Promise<void> {
  const rssSamples: [number, number][] = [];
  const t0 = performance.now();
  const sampler = setInterval(() => {
    rssSamples.push([Math.round(performance.now() - t0), Math.round(process.memoryUsage.rss() / 1024)]);
  }, 100);
  const loop = monitorEventLoopDelay({ resolution: 10 });
  const output: string[] = [];
  const startedAt = Date.now();
  const cpu0 = process.cpuUsage();
  loop.enable();
  const exitCode = await main(['sync', '--all'], { out: (line) => output.push(line) });
  loop.disable();
  const cpu = process.cpuUsage(cpu0);
  const endedAt = Date.now();
  clearInterval(sampler);
  const m = SUMMARY.exec(output.join('\n'));
  const n = (i: number) => Number(m?.[i] ?? Number.NaN);
  const report: MirrorReport = {
    exitCode,
    output,
    done: n(1),
    accounts: n(2),
    passSeconds: n(3),
    changed: n(4),
    unchanged: n(5),
    missing: n(6),
    failed: n(7),
    calls: n(8),
    friendsWritten: n(9),
    tagsWritten: n(10),
    commandMs: endedAt - startedAt,
    startedAt,
    endedAt,
    maxRssKb: process.resourceUsage().maxRSS,
    rssSamples,
    cpuUserMs: cpu.user / 1000,
    cpuSystemMs: cpu.system / 1000,
    loopDelayP99Ms: loop.percentile(99) / 1e6,
    loopDelayMaxMs: loop.max / 1e6,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

await run();
