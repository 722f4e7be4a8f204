/**
 * The simulator in its own process (`friend-mirror simulate`, as `npm run demo` runs it), so the
 * mirror's numbers show the mirror's own cost and not the simulator competing for its event loop.
 * Latency is set through the control API (`POST /__sim/config`), which takes an exact [min, max].
 */
import { once } from 'node:events';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import {
  controlRequest,
  type SimulatorCallLog,
  simulatorCallLog,
  spawnSimulator,
} from '../../src/simulator/process.js';

/** Settings of the simulated app (the `SIM_*` variables of `friend-mirror simulate`). */
export interface SimSettings {
  accounts: number;
  meanFriends: number;
  maxFriends: number;
  /** Every account has at least this many friends (SIM_MIN_FRIENDS); default 0. */
  minFriends?: number;
  seed: number;
  pageSize: number;
  rateLimit: number;
  latencyMs: readonly [number, number];
  sdkAppId: number;
  secretKey: string;
  /** Write a V8 CPU profile of the simulator into `<cpuProfDir>/simulator` when it stops. */
  cpuProfDir?: string | undefined;
}

/** A running simulator process, with its call log (see `simulatorCallLog`). */
export interface SimProcess extends SimulatorCallLog {
  baseUrl: string;
  pid: number;
  /** Whether it runs at raised priority (see {@link startSimulator}). */
  raisedPriority: boolean;
  /** The `SIM_*` environment it was started with, for printing the exact command. */
  env: Record<string, string>;
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body: unknown): Promise<T>;
  stop(): Promise<void>;
}

/** The built CLI, next to this file in dist/. */
export const CLI_PATH = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

/**
 * The simulator's nice value when the bench may raise it. Only the simulator is raised: it stands
 * in for Tencent, whose servers do not share our cores. The mirror runs at the priority it is given.
 */
export const SIM_NICE = -20;

/** Starts `friend-mirror simulate` and waits until it listens. */
export async function startSimulator(s: SimSettings): Promise<SimProcess> {
  const simEnv: Record<string, string> = {
    SIM_PORT: '0',
    SIM_ACCOUNTS: String(s.accounts),
    SIM_MEAN_FRIENDS: String(s.meanFriends),
    SIM_MAX_FRIENDS: String(s.maxFriends),
    ...(s.minFriends ? { SIM_MIN_FRIENDS: String(s.minFriends) } : {}),
    SIM_SEED: String(s.seed),
    SIM_PAGE_SIZE: String(s.pageSize),
    SIM_RATE_LIMIT: String(s.rateLimit),
    TIM_SDKAPPID: String(s.sdkAppId),
    TIM_SECRET_KEY: s.secretKey,
    LOG_LEVEL: 'warn',
  };
  const profDir = s.cpuProfDir ? `${s.cpuProfDir}/simulator` : undefined;
  const { baseUrl, child } = await spawnSimulator(
    CLI_PATH,
    simEnv,
    profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [],
  );
  // The simulator timestamps arrivals, standing in for Tencent, whose servers do not share our
  // cores. At equal priority on a saturated 2-core machine its own scheduling delays bunch arrivals
  // together, so the one-second windows it counts are not the ones the mirror sent; ahead of the
  // mirror and Postgres in the queue it records them when they arrive. Its own event loop still
  // delays stamps (the report prints by how much). Needs root; otherwise it runs at normal
  // priority, and the report says so.
  let raisedPriority = false;
  try {
    setPriority(child.pid!, SIM_NICE);
    raisedPriority = true;
  } catch {
    // not permitted
  }

  const request = <T>(method: 'GET' | 'POST', path: string, body?: unknown) =>
    controlRequest<T>(baseUrl, method, path, body);
  const sim: SimProcess = {
    baseUrl,
    pid: child.pid!,
    raisedPriority,
    env: simEnv,
    get: (path) => request('GET', path),
    post: (path, body) => request('POST', path, body),
    ...simulatorCallLog(baseUrl),
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
