/**
 * Reading CPU time and memory of processes from /proc (Linux), so the benchmark can say who used
 * the machine: the mirror, the simulator, or Postgres. Elsewhere every reading is simply absent.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';

/** CPU seconds of this (the benchmark's own) process. */
function selfCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Clock ticks per second of /proc/<pid>/stat; 100 on every mainstream Linux. */
const TICKS_PER_SECOND = 100;

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** utime + stime of a process, in seconds, or undefined once it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  const stat = read(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  // The command name can hold spaces and parentheses: fields are counted after its closing ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** `VmRSS` and `VmHWM` (peak) of a process in KiB. */
export function memoryKb(pid: number): { rssKb: number; peakKb: number } | undefined {
  const status = read(`/proc/${pid}/status`);
  if (!status) return undefined;
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  return { rssKb: field('VmRSS'), peakKb: field('VmHWM') };
}

/** Busy and total CPU seconds of the whole machine since boot (all cores). */
function machineSeconds(): { busy: number; total: number } | undefined {
  const line = read('/proc/stat')?.split('\n')[0];
  if (!line?.startsWith('cpu ')) return undefined;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: (total - idle) / TICKS_PER_SECOND, total: total / TICKS_PER_SECOND };
}

/**
 * Pids of the Postgres backends serving `database`: a backend's process title (its cmdline) reads
 * `postgres: <user> <database> <client> <state>`. Other databases on the same server (say, another
 * test run on a shared machine) are left out; so are shared background processes (WAL writer,
 * checkpointer), whose work cannot be attributed.
 */
function postgresPids(database: string): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  const pids: number[] = [];
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    if (read(`/proc/${e}/comm`)?.trim() !== 'postgres') continue;
    const title = read(`/proc/${e}/cmdline`)?.replace(/\0/g, ' ') ?? '';
    if (title.includes(` ${database} `)) pids.push(Number(e));
  }
  return pids;
}

/** CPU used during a stretch of time, in cores (1.0 = one core busy the whole time). */
export interface CpuUse {
  seconds: number;
  /** The whole machine, all processes. */
  machine: number;
  machineCores: number;
  /** Named processes (the mirror, the simulator). */
  byName: Record<string, number>;
  /** Backends of the benchmark's database, including ones that came and went (sampled every 250 ms). */
  postgres: number;
  /** What the rest of the machine used meanwhile (other processes, Postgres background work). */
  other: number;
  /** 1-minute load average at the end. */
  loadAverage: number;
  /** Busy CPU-seconds of the whole machine since the start, sampled every 250 ms: [Date.now(), seconds]. */
  machineTimeline: [number, number][];
}

/** Cores the whole machine kept busy between two `Date.now()` times, from a {@link CpuUse} timeline. */
export function machineBusyBetween(use: CpuUse, from: number, to: number): number {
  const t = use.machineTimeline;
  const at = (time: number) => t.findLast(([when]) => when <= time) ?? t[0];
  const a = at(from);
  const b = at(to);
  if (!a || !b || b[0] - a[0] < 500) return Number.NaN;
  return (b[1] - a[1]) / ((b[0] - a[0]) / 1000);
}

/**
 * Samples CPU time of named pids, every Postgres process and the machine until `stop()`.
 * Backends that exit between samples lose at most their last 250 ms.
 */
export function watchCpu(pids: Record<string, number>, database: string, cores: number): { stop(): CpuUse } {
  const started = performance.now();
  const self0 = selfCpu();
  const machine0 = machineSeconds();
  const first: Record<string, number> = {};
  const last: Record<string, number> = {};
  for (const [name, pid] of Object.entries(pids)) {
    first[name] = cpuSeconds(pid) ?? 0;
    last[name] = first[name];
  }
  const pgFirst = new Map<number, number>();
  const pgLast = new Map<number, number>();
  const samplePostgres = (initial: boolean) => {
    for (const pid of postgresPids(database)) {
      const s = cpuSeconds(pid);
      if (s === undefined) continue;
      if (!pgFirst.has(pid)) pgFirst.set(pid, initial ? s : 0);
      pgLast.set(pid, s);
    }
  };
  samplePostgres(true);
  const machineTimeline: [number, number][] = [[Date.now(), 0]];
  const sampleMachine = () => {
    const now = machineSeconds();
    if (now && machine0) machineTimeline.push([Date.now(), now.busy - machine0.busy]);
  };
  const timer = setInterval(() => {
    sampleMachine();
    samplePostgres(false);
    for (const [name, pid] of Object.entries(pids)) last[name] = cpuSeconds(pid) ?? last[name]!;
  }, 250);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      sampleMachine();
      samplePostgres(false);
      for (const [name, pid] of Object.entries(pids)) last[name] = cpuSeconds(pid) ?? last[name]!;
      const seconds = (performance.now() - started) / 1000;
      const machine1 = machineSeconds();
      let pgUsed = 0;
      for (const [pid, s] of pgLast) pgUsed += s - (pgFirst.get(pid) ?? 0);
      const byName: Record<string, number> = {};
      for (const name of Object.keys(pids)) byName[name] = (last[name]! - first[name]!) / seconds;
      const machine = machine0 && machine1 ? (machine1.busy - machine0.busy) / seconds : Number.NaN;
      const postgres = pgUsed / seconds;
      const named = Object.values(byName).reduce((a, b) => a + b, 0);
      return {
        seconds,
        machine,
        machineCores: cores,
        byName,
        postgres,
        other: Math.max(0, machine - named - postgres - (selfCpu() - self0) / seconds),
        loadAverage: loadavg()[0] ?? Number.NaN,
        machineTimeline,
      };
    },
  };
}
