/**
 * The simulator in its own process (`friend-mirror simulate`, as `npm run demo` runs it), so the
 * mirror's numbers show the mirror's own cost and not the simulator competing for its event loop.
 * Latency is set through the control API (`POST /__sim/config`), which takes an exact [min, max].
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { setPriority } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { CallRecord, SimulatorStats } from '../../src/simulator/index.js';

/** Settings of the simulated app (the `SIM_*` variables of `friend-mirror simulate`). */
export interface SimSettings {
  accounts: number;
  meanFriends: number;
  maxFriends: number;
  seed: number;
  pageSize: number;
  rateLimit: number;
  latencyMs: readonly [number, number];
  sdkAppId: number;
  secretKey: string;
}

/** A running simulator process. */
export interface SimProcess {
  baseUrl: string;
  pid: number;
  /** Whether it runs at raised priority (see {@link startSimulator}). */
  raisedPriority: boolean;
  /** The `SIM_*` environment it was started with, for printing the exact command. */
  env: Record<string, string>;
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body: unknown): Promise<T>;
  /** Every logged call since the last `clearCalls()`, oldest first. */
  calls(): Promise<CallRecord[]>;
  clearCalls(): Promise<void>;
  stats(): Promise<SimulatorStats & { maxCallsInWindow: number }>;
  stop(): Promise<void>;
}

/** The built CLI, next to this file in dist/. */
export const CLI_PATH = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

/** Starts `friend-mirror simulate` and waits until it listens. */
export async function startSimulator(s: SimSettings): Promise<SimProcess> {
  const simEnv: Record<string, string> = {
    SIM_PORT: '0',
    SIM_ACCOUNTS: String(s.accounts),
    SIM_MEAN_FRIENDS: String(s.meanFriends),
    SIM_MAX_FRIENDS: String(s.maxFriends),
    SIM_SEED: String(s.seed),
    SIM_PAGE_SIZE: String(s.pageSize),
    SIM_RATE_LIMIT: String(s.rateLimit),
    TIM_SDKAPPID: String(s.sdkAppId),
    TIM_SECRET_KEY: s.secretKey,
    LOG_LEVEL: 'warn',
  };
  const child: ChildProcess = spawn(process.execPath, [CLI_PATH, 'simulate'], {
    env: { ...process.env, ...simEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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
  // The simulator timestamps arrivals, standing in for Tencent, whose servers do not share our
  // cores. At equal priority on a saturated 2-core machine its own scheduling delays bunch arrivals
  // together, so the one-second windows it counts are not the ones the mirror sent; ahead of the
  // mirror and Postgres in the queue it records them when they arrive. Needs root; otherwise it runs
  // at normal priority, and the report says so.
  let raisedPriority = false;
  try {
    setPriority(child.pid!, -10);
    raisedPriority = true;
  } catch {
    // not permitted
  }

  const request = async <T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      ...(body === undefined
        ? {}
        : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    });
    if (!res.ok)
      throw new Error(`simulator ${method} ${path} answered HTTP ${res.status}: ${await res.text()}`);
    return (await res.json()) as T;
  };
  const sim: SimProcess = {
    baseUrl,
    pid: child.pid!,
    raisedPriority,
    env: simEnv,
    get: (path) => request('GET', path),
    post: (path, body) => request('POST', path, body),
    calls: async () => (await request<{ calls: CallRecord[] }>('GET', '/__sim/calls?limit=100000000')).calls,
    clearCalls: async () => {
      await request('POST', '/__sim/clear-calls', {});
    },
    stats: () => request('GET', '/__sim/stats'),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = once(child, 'exit');
      child.kill('SIGTERM');
      await gone;
    },
  };
  await sim.post('/__sim/config', { latencyMs: [s.latencyMs[0], s.latencyMs[1]] });
  return sim;
}
