/**
 * The simulator as its own process (`friend-mirror simulate`), as the demo and the benchmark run
 * it: Tencent does not share the mirror's event loop, so neither should its stand-in.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import type { CallRecord } from './call-log.js';
import type { SimulatorStats } from './server.js';

/** A started simulator process and the base URL it listens at. */
export interface SimulatorProcess {
  baseUrl: string;
  child: ChildProcess;
}

/**
 * Spawns `node <cliPath> simulate` with `env` added to this process's environment and resolves once
 * it prints the address it listens at. Rejects with its last stderr output if it exits first.
 * `nodeArgs` go to node before the script (e.g. `--cpu-prof`).
 */
export async function spawnSimulator(
  cliPath: string,
  env: Record<string, string>,
  nodeArgs: readonly string[] = [],
): Promise<SimulatorProcess> {
  const child = spawn(process.execPath, [...nodeArgs, cliPath, 'simulate'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Kept for the error message; its shutdown notice is noise otherwise.
  let stderrTail = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderrTail = (stderrTail + d.toString()).slice(-2000);
  });
  const lines = createInterface({ input: child.stdout! });
  const exited = once(child, 'exit').then(([code]) => {
    throw new Error(`the simulator exited with code ${code} before it was ready: ${stderrTail.trim()}`);
  });
  const ready = (async () => {
    for await (const line of lines) {
      const m = /listening at (\S+?):? /.exec(line);
      if (m) return m[1]!;
    }
    throw new Error('the simulator closed its output before it was ready');
  })();
  const baseUrl = await Promise.race([ready, exited]);
  exited.catch(() => {});
  return { baseUrl, child };
}

/**
 * One request to the simulator's control API (`/__sim/…`), answered with JSON.
 * @throws Error naming the path and status when it does not answer 2xx
 */
export async function controlRequest<T>(
  baseUrl: string,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<T> {
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    ...(body === undefined
      ? {}
      : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
  });
  if (!res.ok)
    throw new Error(`simulator ${method} ${path} answered HTTP ${res.status}: ${await res.text()}`);
  return (await res.json()) as T;
}

/** What a test or the bench reads of a running simulator's calls, over its control API. */
export interface SimulatorCallLog {
  /** Every logged call since the last {@link clearCalls}, oldest first. */
  calls(): Promise<CallRecord[]>;
  clearCalls(): Promise<void>;
  /** Its counters, with the most calls it stamped in any one second since the last clear. */
  stats(): Promise<SimulatorStats & { maxCallsInWindow: number }>;
}

/** The call log of the simulator at `baseUrl` (`GET /__sim/calls`, `/__sim/stats`, `POST /__sim/clear-calls`). */
export function simulatorCallLog(baseUrl: string): SimulatorCallLog {
  return {
    calls: async () =>
      (await controlRequest<{ calls: CallRecord[] }>(baseUrl, 'GET', '/__sim/calls?limit=100000000')).calls,
    clearCalls: async () => {
      await controlRequest(baseUrl, 'POST', '/__sim/clear-calls', {});
    },
    stats: () => controlRequest(baseUrl, 'GET', '/__sim/stats'),
  };
}
