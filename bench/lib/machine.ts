/** The machine a benchmark ran on, for the report. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';

/** What BENCHMARKS.md records about the run's machine and code. */
export interface MachineInfo {
  cpu: string;
  cores: number;
  ramGb: number;
  node: string;
  date: string;
  commit: string;
}

/** Reads the CPU model from /proc/cpuinfo (Linux), the rest from Node and git. */
export function machineInfo(): MachineInfo {
  let cpu = 'unknown';
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpu;
  } catch {
    // not Linux
  }
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { encoding: 'utf8' }).trim();
    if (dirty) commit += ' (with uncommitted changes)';
  } catch {
    // not a git checkout
  }
  return {
    cpu,
    cores: availableParallelism(),
    ramGb: totalmem() / 2 ** 30,
    node: process.version,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    commit,
  };
}
