/**
 * Starts the mirror process (bench/mirror.ts) for one pass and collects its report, with the CPU
 * used meanwhile by it, the simulator and Postgres.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { MirrorReport } from '../mirror.js';
import { type CpuUse, watchCpu } from './proc.js';

const MIRROR_PATH = fileURLToPath(new URL('../mirror.js', import.meta.url));

/** Options of {@link runMirrorPass}. */
export interface MirrorPassOptions {
  /** Environment of the mirror: DATABASE_URL, TIM_*, SYNC_* … (added to the benchmark's own). */
  env: Record<string, string>;
  simPid: number;
  /** The database the mirror writes to, to tell its Postgres backends from others. */
  database: string;
  /** Write a V8 CPU profile of the mirror process into this directory (`node --cpu-prof`). */
  cpuProfDir?: string;
  /** Extra `node` flags, e.g. `--trace-gc`. */
  nodeArgs?: string[];
}

/** A change of the process's share of the call budget (src/sync/budget.ts), from its log. */
export interface BudgetChange {
  /** ms since the process started. */
  atMs: number;
  rate: number;
}

/** What one pass measured. */
export interface MirrorRun {
  report: MirrorReport;
  cpu: CpuUse;
  budget: BudgetChange[];
  /** The row budget (`SYNC_ROW_BUDGET`) and the most friends it held at once, as `sync` logs them; absent without one. */
  rowBudget?: { limit: number; peak: number };
  /** Log lines at warn or above (failures), first 20. */
  warnings: string[];
}

/** Runs one pass in a fresh mirror process. */
export async function runMirrorPass(opts: MirrorPassOptions): Promise<MirrorRun> {
  const nodeArgs: string[] = [...(opts.nodeArgs ?? [])];
  if (opts.cpuProfDir) {
    mkdirSync(opts.cpuProfDir, { recursive: true });
    nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${opts.cpuProfDir}`);
  }
  const child = spawn(process.execPath, [...nodeArgs, MIRROR_PATH], {
    // info: the budget logs every change of this process's rate, which the report shows.
    env: { ...process.env, LOG_LEVEL: 'info', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const cpuWatch = watchCpu(
    { mirror: child.pid!, simulator: opts.simPid },
    opts.database,
    availableParallelism(),
  );
  const spawnedAt = Date.now();
  let stdout = '';
  let stderr = '';
  const budget: BudgetChange[] = [];
  const warnings: string[] = [];
  let rowBudget: MirrorRun['rowBudget'];
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderr = `${stderr.slice(-4000)}${line}\n`;
    if (!line.startsWith('{')) return;
    try {
      const entry = JSON.parse(line) as {
        level?: number;
        time?: string;
        msg?: string;
        rate?: number;
        rowBudget?: number;
        peakRowsHeld?: number;
      };
      if (typeof entry.rowBudget === 'number' && typeof entry.peakRowsHeld === 'number') {
        rowBudget = { limit: entry.rowBudget, peak: entry.peakRowsHeld };
      }
      if (typeof entry.rate === 'number' && entry.msg?.startsWith('call budget share')) {
        const at = entry.time ? Date.parse(entry.time) : Date.now();
        budget.push({ atMs: at - spawnedAt, rate: entry.rate });
      }
      if ((entry.level ?? 0) >= 40 && warnings.length < 20) warnings.push(entry.msg ?? line);
    } catch {
      // not a log line
    }
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  const cpu = cpuWatch.stop();
  // The report is the last JSON line; node flags such as --trace-gc may print around it.
  const line = stdout.split('\n').findLast((l) => l.startsWith('{"exitCode"')) ?? '';
  if (process.env.BENCH_MIRROR_STDOUT) writeFileSync(process.env.BENCH_MIRROR_STDOUT, stdout);
  if (code !== 0 || !line.startsWith('{')) {
    throw new Error(`the mirror process exited with code ${code}: ${stderr.trim() || stdout.trim()}`);
  }
  return {
    report: JSON.parse(line) as MirrorReport,
    cpu,
    budget,
    warnings,
    ...(rowBudget ? { rowBudget } : {}),
  };
}
