/**
 * The benchmark's knobs, from `BENCH_*` variables, with the defaults of issue #5. The mirror's own
 * variables (SYNC_CONCURRENCY, SYNC_ROW_BUDGET, DATABASE_POOL_SIZE, TIM_RATE_JITTER_MS, TIM_TIMEOUT_MS,
 * TIM_CALL_THREAD) pass through unchanged and are shown in the command line
 * that reproduces a run.
 */

/** Every knob, resolved. */
export interface BenchSettings {
  accounts: number;
  meanFriends: number;
  maxFriends: number;
  seed: number;
  pageSize: number;
  /** TIM_RATE_LIMIT of the mirror and SIM_RATE_LIMIT of the simulator. */
  rateLimit: number;
  latencyMs: [number, number];
  mutateFraction: number;
  mutateSeed: number;
  verifySample: number;
  schedulerAccounts: number;
  /** Write V8 CPU profiles of the mirror process here (node --cpu-prof). */
  cpuProfDir: string | undefined;
  /** Mirror variables set in the environment, shown in the command line. */
  mirrorEnv: Record<string, string>;
  /** Extra `node` flags for the mirror process (BENCH_MIRROR_NODE_ARGS). */
  mirrorNodeArgs: string[];
  /** BENCH_* variables that differ from the defaults, shown in the command line. */
  overrides: Record<string, string>;
}

const MIRROR_VARS = [
  'SYNC_CONCURRENCY',
  'SYNC_ROW_BUDGET',
  'DATABASE_POOL_SIZE',
  'TIM_RATE_JITTER_MS',
  'TIM_TIMEOUT_MS',
  'TIM_CALL_THREAD',
];

/** Reads the settings; `defaults` are the full run's or the CI guard's. */
export function readSettings(env: NodeJS.ProcessEnv, defaults: Partial<BenchSettings> = {}): BenchSettings {
  const overrides: Record<string, string> = {};
  const num = (name: string, def: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return def;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0)
      throw new Error(`${name} must be a non-negative number, got ${JSON.stringify(raw)}`);
    overrides[name] = raw;
    return n;
  };
  const latencyRaw = env.BENCH_LATENCY_MS;
  let latencyMs: [number, number] = defaults.latencyMs ?? [30, 150];
  if (latencyRaw) {
    const m = /^(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?$/.exec(latencyRaw.trim());
    if (!m || Number(m[2] ?? m[1]) < Number(m[1])) {
      throw new Error(
        `BENCH_LATENCY_MS must be MIN-MAX in ms (e.g. 30-150) or one number, got ${JSON.stringify(latencyRaw)}`,
      );
    }
    latencyMs = [Number(m[1]), Number(m[2] ?? m[1])];
    overrides.BENCH_LATENCY_MS = latencyRaw;
  }
  const mirrorEnv: Record<string, string> = {};
  for (const name of MIRROR_VARS) {
    const v = env[name];
    if (v) mirrorEnv[name] = v;
  }
  // Node flags for the mirror process only (e.g. --max-semi-space-size=64 or --trace-gc).
  const mirrorNodeArgs = env.BENCH_MIRROR_NODE_ARGS?.trim().split(/\s+/).filter(Boolean) ?? [];
  if (mirrorNodeArgs.length > 0) overrides.BENCH_MIRROR_NODE_ARGS = mirrorNodeArgs.join(' ');
  const cpuProfDir = env.BENCH_CPU_PROF || undefined;
  if (cpuProfDir) overrides.BENCH_CPU_PROF = cpuProfDir;
  return {
    accounts: num('BENCH_ACCOUNTS', defaults.accounts ?? 1000),
    meanFriends: num('BENCH_MEAN_FRIENDS', defaults.meanFriends ?? 300),
    maxFriends: num('BENCH_MAX_FRIENDS', defaults.maxFriends ?? 3000),
    seed: num('BENCH_SEED', defaults.seed ?? 20261125),
    pageSize: num('BENCH_PAGE_SIZE', defaults.pageSize ?? 500),
    rateLimit: num('BENCH_RATE_LIMIT', defaults.rateLimit ?? 200),
    latencyMs,
    mutateFraction: num('BENCH_MUTATE_FRACTION', defaults.mutateFraction ?? 0.02),
    mutateSeed: num('BENCH_MUTATE_SEED', defaults.mutateSeed ?? 7),
    verifySample: num('BENCH_VERIFY_SAMPLE', defaults.verifySample ?? 20),
    schedulerAccounts: num('BENCH_SCHEDULER_ACCOUNTS', defaults.schedulerAccounts ?? 1_000_000),
    cpuProfDir,
    mirrorEnv,
    mirrorNodeArgs,
    overrides,
  };
}

/** `VAR=value … ` prefix that reproduces a run. */
export function envPrefix(s: BenchSettings, extra: Record<string, string> = {}): string {
  const vars = { ...s.overrides, ...s.mirrorEnv, ...extra };
  return Object.entries(vars)
    .map(([k, v]) => `${k}=${/^[\w.,:/@-]+$/.test(v) ? v : JSON.stringify(v)} `)
    .join('');
}
