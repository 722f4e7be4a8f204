/**
 * The single place that reads `process.env`. Each loader returns a frozen, typed config, or throws
 * a {@link ConfigError} whose one-line message names the variable and what it expects. Values of
 * secret variables are never echoed.
 */
import { isIP } from 'node:net';
import { isRegion, REGION_NAMES, type Region, regionBaseUrl } from './tim/regions.js';

/** A bad or missing setting. The CLI prints the message and exits with code 2. */
export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
  readonly variable: string;
  constructor(variable: string, expectation: string) {
    super(`${variable} ${expectation}`);
    this.variable = variable;
  }
}

type Env = Record<string, string | undefined>;

const SECRET_VARS = new Set([
  'TIM_SECRET_KEY',
  'TIM_USERSIG',
  'ADMIN_TOKEN',
  'TIM_CALLBACK_TOKEN',
  'DATABASE_URL',
  'SIM_CONTROL_TOKEN',
]);

function shown(name: string, raw: string): string {
  return SECRET_VARS.has(name)
    ? '(value hidden)'
    : JSON.stringify(raw.length > 80 ? `${raw.slice(0, 80)}…` : raw);
}

function str(env: Env, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === undefined || v === '' ? undefined : v;
}

function int(env: Env, name: string, def: number, min: number, max: number): number {
  const raw = str(env, name);
  if (raw === undefined) return def;
  const n = /^-?\d+$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `must be a whole number from ${min} to ${max}, got ${shown(name, raw)}`);
  }
  return n;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `90`, `90s`, `15m`, `1h`, `500ms`, `1d` (a bare number is seconds) to milliseconds. */
export function parseDurationMs(raw: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(raw.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2] ?? 's']!);
}

function duration(env: Env, name: string, defMs: number, minMs: number): number {
  const raw = str(env, name);
  if (raw === undefined) return defMs;
  const ms = parseDurationMs(raw);
  if (ms === undefined || ms < minMs) {
    throw new ConfigError(
      name,
      `must be a duration like 90s, 15m or 1h (at least ${minMs / 1000}s), got ${shown(name, raw)}`,
    );
  }
  return ms;
}

function bool(env: Env, name: string, def: boolean): boolean {
  const raw = str(env, name)?.toLowerCase();
  if (raw === undefined) return def;
  if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
  if (['0', 'false', 'no', 'off'].includes(raw)) return false;
  throw new ConfigError(name, `must be true or false, got ${shown(name, raw)}`);
}

/** Database settings. */
export interface DbConfig {
  databaseUrl: string;
  /** `DATABASE_POOL_SIZE`: connections per process. */
  poolSize: number;
}

/** Loads `DATABASE_URL` and `DATABASE_POOL_SIZE`. */
export function loadDbConfig(env: Env = process.env): Readonly<DbConfig> {
  const databaseUrl = str(env, 'DATABASE_URL');
  if (!databaseUrl)
    throw new ConfigError('DATABASE_URL', 'is required, e.g. postgres://user:pass@host:5432/db');
  if (!/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError('DATABASE_URL', 'must start with postgres:// or postgresql://');
  }
  return Object.freeze({ databaseUrl, poolSize: int(env, 'DATABASE_POOL_SIZE', 16, 1, 1000) });
}

/** Tencent IM settings. */
export interface TimConfig {
  sdkAppId: number;
  identifier: string;
  /** Exactly one of these two. */
  secretKey?: string;
  userSig?: string;
  region: Region;
  baseUrl: string;
  /** `TIM_RATE_LIMIT`: friend_get calls per second, summed over all replicas. */
  rateLimitPerSecond: number;
  /** `TIM_RATE_JITTER_MS`: network-delay spread the rate guarantee covers (see sync/limiter.ts). */
  rateJitterMs: number;
  /** `TIM_TIMEOUT_MS`: whole-call timeout; must exceed Tencent's own 3 s. */
  timeoutMs: number;
  /** `TIM_USERSIG_TTL`: validity of generated UserSigs. */
  userSigTtlSeconds: number;
  /**
   * `TIM_CALL_THREAD`: pace and send friend_get calls from a worker thread of their own
   * (sync/call-thread.ts); false paces and sends them on the main thread.
   */
  callThread: boolean;
}

function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || (isIP(h) === 4 && h.startsWith('127.'));
}

/** Loads the `TIM_*` settings. */
export function loadTimConfig(env: Env = process.env): Readonly<TimConfig> {
  const appRaw = str(env, 'TIM_SDKAPPID');
  if (!appRaw) throw new ConfigError('TIM_SDKAPPID', "is required: the app's SDKAppID from the IM console");
  const sdkAppId = int(env, 'TIM_SDKAPPID', 0, 1, 2 ** 32 - 1);

  const identifier = str(env, 'TIM_IDENTIFIER') ?? 'administrator';
  if (Buffer.byteLength(identifier) > 32) throw new ConfigError('TIM_IDENTIFIER', 'must be at most 32 bytes');

  const secretKey = str(env, 'TIM_SECRET_KEY');
  const userSig = str(env, 'TIM_USERSIG');
  if ((secretKey === undefined) === (userSig === undefined)) {
    throw new ConfigError('TIM_SECRET_KEY', 'or TIM_USERSIG must be set, exactly one of the two');
  }

  const regionRaw = str(env, 'TIM_REGION') ?? 'china';
  if (!isRegion(regionRaw)) {
    throw new ConfigError(
      'TIM_REGION',
      `must be one of ${REGION_NAMES.join('|')}, got ${shown('TIM_REGION', regionRaw)}`,
    );
  }

  let baseUrl = regionBaseUrl(regionRaw);
  const baseRaw = str(env, 'TIM_BASE_URL');
  if (baseRaw) {
    let url: URL;
    try {
      url = new URL(baseRaw);
    } catch {
      throw new ConfigError(
        'TIM_BASE_URL',
        `must be a URL like https://proxy.example:8443, got ${shown('TIM_BASE_URL', baseRaw)}`,
      );
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new ConfigError('TIM_BASE_URL', 'must use https:// (or http:// to a loopback address)');
    }
    // The URL carries the UserSig, so it must not cross a network in clear text unless asked for.
    if (
      url.protocol === 'http:' &&
      !isLoopbackHost(url.hostname) &&
      !bool(env, 'TIM_ALLOW_INSECURE_HTTP', false)
    ) {
      throw new ConfigError(
        'TIM_BASE_URL',
        'uses plain http:// to a non-loopback host; use https:// or set TIM_ALLOW_INSECURE_HTTP=true',
      );
    }
    if (url.search || url.hash)
      throw new ConfigError('TIM_BASE_URL', 'must not carry a query string or fragment');
    baseUrl = baseRaw.replace(/\/+$/, '');
  }

  return Object.freeze({
    sdkAppId,
    identifier,
    ...(secretKey ? { secretKey } : {}),
    ...(userSig ? { userSig } : {}),
    region: regionRaw,
    baseUrl,
    rateLimitPerSecond: int(env, 'TIM_RATE_LIMIT', 200, 1, 100_000),
    rateJitterMs: int(env, 'TIM_RATE_JITTER_MS', 20, 0, 1_000),
    timeoutMs: int(env, 'TIM_TIMEOUT_MS', 8_000, 3_500, 120_000),
    userSigTtlSeconds: Math.round(duration(env, 'TIM_USERSIG_TTL', 86_400_000, 600_000) / 1000),
    callThread: bool(env, 'TIM_CALL_THREAD', true),
  });
}

/**
 * Settings the mirror once read and now ignores, with what became of them. Setting one is no
 * error (deployment files outlive releases); the CLI warns once so it can be removed.
 */
const OBSOLETE_SETTINGS: Readonly<Record<string, string>> = {
  TIM_CALL_THREAD_NICE: 'the call thread no longer changes its priority',
};

/** The obsolete settings `env` sets, each with the warning to log about it. */
export function obsoleteSettings(env: Env = process.env): { variable: string; message: string }[] {
  return Object.entries(OBSOLETE_SETTINGS)
    .filter(([name]) => env[name] !== undefined)
    .map(([variable, why]) => ({ variable, message: `${variable} is ignored (${why}) and can be removed` }));
}

/** Sync settings. */
export interface SyncConfig {
  /** `SYNC_CONCURRENCY`: accounts in flight per process. */
  concurrency: number;
  /** `SYNC_APPLY_CONCURRENCY`: accounts written to Postgres at once per process. */
  applyConcurrency: number;
  /** `SYNC_INTERVAL`: how often an unchanged account is re-checked. */
  intervalMs: number;
  /** `SYNC_MAX_PAGES`: pages one pull may take before it is declared endless. */
  maxPages: number;
  /** `SYNC_RETRY_ATTEMPTS`: tries per call for transient errors. */
  retryAttempts: number;
  /** `SYNC_LEASE`: how long a claimed account stays claimed if its replica dies mid-sync. */
  leaseMs: number;
  /** `SYNC_RECONCILE_INTERVAL`: every account is read in full at least this often; 0 = off. */
  reconcileIntervalMs: number;
  /** `SYNC_DISCOVER`: add every friend seen to `tim.accounts`. */
  discover: boolean;
  /** `SYNC_DISCOVER_MAX_ACCOUNTS`: discovery stops adding once `tim.accounts` holds this many rows. */
  discoverMaxAccounts: number;
  /** `SYNC_MISSING_RECHECK`: how long an account Tencent does not know (`missing`) waits before it is tried again. */
  missingRecheckMs: number;
  /**
   * `SYNC_ROW_BUDGET`: friends held in memory at once across the accounts in flight (sync/row-budget.ts);
   * 0 means no budget.
   */
  rowBudget: number;
}

/** Default `SYNC_ROW_BUDGET`, chosen by the `wide` bench scenario (BENCHMARKS.md). */
export const DEFAULT_ROW_BUDGET = 50_000;

/** `SYNC_ROW_BUDGET`: a whole number of rows ≥ 1, or `0`/`off` for no budget. */
function rowBudget(env: Env): number {
  const raw = str(env, 'SYNC_ROW_BUDGET');
  if (raw !== undefined && ['0', 'off'].includes(raw.toLowerCase())) return 0;
  try {
    return int(env, 'SYNC_ROW_BUDGET', DEFAULT_ROW_BUDGET, 1, 1_000_000_000);
  } catch {
    throw new ConfigError(
      'SYNC_ROW_BUDGET',
      `must be a whole number of friends held in memory at once (at least 1, e.g. ${DEFAULT_ROW_BUDGET}), or 0/off for no budget, got ${shown('SYNC_ROW_BUDGET', raw ?? '')}`,
    );
  }
}

/** `SYNC_RECONCILE_INTERVAL`: a duration of at least 1 s, or `0`/`off`. */
function reconcileInterval(env: Env): number {
  const raw = str(env, 'SYNC_RECONCILE_INTERVAL');
  if (raw !== undefined && ['0', 'off', 'false', 'no'].includes(raw.toLowerCase())) return 0;
  try {
    return duration(env, 'SYNC_RECONCILE_INTERVAL', 86_400_000, 1_000);
  } catch {
    throw new ConfigError(
      'SYNC_RECONCILE_INTERVAL',
      `must be a duration like 12h or 1d (at least 1s), or 0/off to turn reconciliation off, got ${shown('SYNC_RECONCILE_INTERVAL', raw ?? '')}`,
    );
  }
}

/** Loads the `SYNC_*` settings. */
export function loadSyncConfig(env: Env = process.env): Readonly<SyncConfig> {
  return Object.freeze({
    concurrency: int(env, 'SYNC_CONCURRENCY', 64, 1, 10_000),
    applyConcurrency: int(env, 'SYNC_APPLY_CONCURRENCY', 4, 1, 256),
    intervalMs: duration(env, 'SYNC_INTERVAL', 3_600_000, 1_000),
    maxPages: int(env, 'SYNC_MAX_PAGES', 100, 1, 10_000),
    retryAttempts: int(env, 'SYNC_RETRY_ATTEMPTS', 4, 1, 20),
    leaseMs: duration(env, 'SYNC_LEASE', 300_000, 5_000),
    reconcileIntervalMs: reconcileInterval(env),
    discover: bool(env, 'SYNC_DISCOVER', false),
    discoverMaxAccounts: int(env, 'SYNC_DISCOVER_MAX_ACCOUNTS', 1_000_000, 1, 1_000_000_000),
    missingRecheckMs: duration(env, 'SYNC_MISSING_RECHECK', 86_400_000, 1_000),
    rowBudget: rowBudget(env),
  });
}

/** Logging settings. */
export interface LogConfig {
  level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** `LOG_FORMAT`: `json`, or `pretty` for people; default pretty on a terminal. */
  format: 'json' | 'pretty';
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Loads `LOG_LEVEL` and `LOG_FORMAT`. */
export function loadLogConfig(env: Env = process.env): Readonly<LogConfig> {
  const raw = (str(env, 'LOG_LEVEL') ?? 'info').toLowerCase();
  if (!(LEVELS as readonly string[]).includes(raw)) {
    throw new ConfigError('LOG_LEVEL', `must be one of ${LEVELS.join('|')}, got ${shown('LOG_LEVEL', raw)}`);
  }
  const format = (str(env, 'LOG_FORMAT') ?? (process.stderr.isTTY ? 'pretty' : 'json')).toLowerCase();
  if (format !== 'json' && format !== 'pretty') {
    throw new ConfigError('LOG_FORMAT', `must be json or pretty, got ${shown('LOG_FORMAT', format)}`);
  }
  return Object.freeze({ level: raw as LogConfig['level'], format });
}

/** Daemon settings (`run`). */
export interface DaemonConfig {
  /** `HTTP_HOST`: admin server address; loopback unless told otherwise. */
  httpHost: string;
  /** `HTTP_PORT`: admin server port; 0 picks a free one. */
  httpPort: number;
  /** `ADMIN_TOKEN`: bearer token for mutating admin endpoints; unset disables them. */
  adminToken?: string;
  /** `SHUTDOWN_TIMEOUT`: how long accounts in flight may take to finish after SIGTERM. */
  shutdownTimeoutMs: number;
  /** `LOG_SUMMARY_INTERVAL`: how often the daemon logs a summary line at info level. */
  summaryIntervalMs: number;
  /** `REPLICA_ID`: this replica's name in `tim.replicas`; default host-pid-random. */
  replicaId?: string;
}

/** Loads the daemon settings. */
export function loadDaemonConfig(env: Env = process.env): Readonly<DaemonConfig> {
  const adminToken = str(env, 'ADMIN_TOKEN');
  if (adminToken !== undefined && adminToken.length < 16) {
    throw new ConfigError('ADMIN_TOKEN', 'must be at least 16 characters (e.g. openssl rand -hex 24)');
  }
  const replicaId = str(env, 'REPLICA_ID');
  return Object.freeze({
    httpHost: str(env, 'HTTP_HOST') ?? '127.0.0.1',
    httpPort: int(env, 'HTTP_PORT', 8080, 0, 65_535),
    ...(adminToken ? { adminToken } : {}),
    shutdownTimeoutMs: duration(env, 'SHUTDOWN_TIMEOUT', 30_000, 1_000),
    summaryIntervalMs: duration(env, 'LOG_SUMMARY_INTERVAL', 30_000, 1_000),
    ...(replicaId ? { replicaId } : {}),
  });
}

/**
 * Webhook receiver settings (`run`). The receiver runs only when a callback token is set: without
 * one, anyone who found the port could make the mirror spend its call budget. The other settings
 * are then ignored, so one deployment file serves apps with and without webhooks.
 */
export interface CallbackConfig {
  /** `TIM_CALLBACK_TOKEN`: the callback token of the IM console; unset turns the receiver off. */
  token?: string;
  /** `CALLBACK_HOST`: the receiver's own listener, separate from the admin server. */
  host: string;
  /** `CALLBACK_PORT`: 0 picks a free one. */
  port: number;
  /** `CALLBACK_MAX_SKEW`: how far a callback's `RequestTime` may be from our clock, either way. */
  maxSkewSeconds: number;
}

/** Loads `TIM_CALLBACK_TOKEN`, `CALLBACK_HOST`, `CALLBACK_PORT` and `CALLBACK_MAX_SKEW`. */
export function loadCallbackConfig(env: Env = process.env): Readonly<CallbackConfig> {
  const token = str(env, 'TIM_CALLBACK_TOKEN');
  const port = int(env, 'CALLBACK_PORT', 8081, 0, 65_535);
  // Both listeners bind the same host by default; a shared port would fail at start with EADDRINUSE.
  if (token !== undefined && port !== 0 && port === int(env, 'HTTP_PORT', 8080, 0, 65_535)) {
    throw new ConfigError(
      'CALLBACK_PORT',
      'must differ from HTTP_PORT: the webhook receiver has its own listener',
    );
  }
  return Object.freeze({
    ...(token ? { token } : {}),
    host: str(env, 'CALLBACK_HOST') ?? '127.0.0.1',
    port,
    maxSkewSeconds: Math.round(duration(env, 'CALLBACK_MAX_SKEW', 300_000, 10_000) / 1000),
  });
}

/**
 * `SIM_CONTROL_TOKEN`: lets clients that are not on loopback use the simulator's control API, with
 * `Authorization: Bearer <token>` (the compose demo's seeding step, on the compose network). Read by
 * `friend-mirror simulate` and by the clients that call it. Unset: loopback clients only.
 */
export function loadSimControlToken(env: Env = process.env): string | undefined {
  const token = str(env, 'SIM_CONTROL_TOKEN');
  if (token !== undefined && token.length < 16) {
    throw new ConfigError('SIM_CONTROL_TOKEN', 'must be at least 16 characters (e.g. openssl rand -hex 24)');
  }
  return token;
}
