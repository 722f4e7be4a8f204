/**
 * One process's part in the mirror, the same for `run` and `sync`: its place in the replica
 * registry, its share of the call budget, the call path to Tencent (client and limiter), what a
 * pass needs, and (for `run`) its metrics. `run` adds the scheduler and its servers, `sync` one pass;
 * both start and stop the process's part here, so the shutdown order is written once.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { type Kysely, sql } from 'kysely';
import { passDepsFrom, type TimCalls, timCallsFrom } from './app.js';
import type { SyncConfig, TimConfig } from './config.js';
import { releaseLeases } from './db/leases.js';
import { ReplicaSession } from './db/replicas.js';
import type { Database } from './db/schema.js';
import type { Logger } from './log.js';
import { type AccountsSummary, createMetrics, type Metrics } from './metrics.js';
import { dropGraceMs, ReplicaBudget } from './sync/budget.js';
import { sleep } from './sync/limiter.js';
import type { PassDeps } from './sync/pass.js';
import { RowBudget } from './sync/row-budget.js';
import type { CallEvent } from './tim/client.js';

/** Account counts by status and the age of the oldest due account, for metrics and `run`'s summary. */
export async function accountsSummary(db: Kysely<Database>): Promise<AccountsSummary> {
  const res = await sql<{ status: string; n: number; lag: number | null; reconcile_backlog: number }>`
    SELECT status, count(*)::int AS n,
           extract(epoch FROM now() - min(next_sync_at) FILTER (
             WHERE next_sync_at <= now() AND next_sync_at > '-infinity' AND status NOT IN ('disabled', 'missing')))::float8 AS lag,
           count(*) FILTER (WHERE reconcile_due_at <= now() AND status NOT IN ('disabled', 'missing'))::int AS reconcile_backlog
    FROM tim.accounts GROUP BY status`.execute(db);
  const byStatus: Record<string, number> = {};
  let lag = 0;
  let reconcileBacklog = 0;
  for (const r of res.rows) {
    byStatus[r.status] = r.n;
    lag = Math.max(lag, r.lag ?? 0);
    reconcileBacklog += r.reconcile_backlog;
  }
  return { byStatus, lagSeconds: lag, reconcileBacklog };
}

/** The settings a {@link Daemon} is made from. */
export type DaemonSettings = { tim: TimConfig; sync: SyncConfig };

/** Options of {@link openDaemon}. */
export interface DaemonOptions {
  /** This process's id in the registry and on its leases (`REPLICA_ID`); default: host, pid and a random part. */
  replicaId?: string | undefined;
  /**
   * A one-shot pass (`sync`), not the daemon (`run`): its default id starts with `sync-`, it takes
   * the whole budget at once when its first heartbeat finds no other replica (see
   * `ReplicaBudgetDeps.fastStartWhenAlone`), and failed heartbeats are not logged.
   */
  oneShot?: boolean;
  /** Keep Prometheus metrics of the calls, the limiter and the budget in {@link Daemon.metrics}. */
  metrics?: boolean;
  /** Told about every HTTP call to Tencent, retries included (after the metrics). */
  onCall?: (e: CallEvent) => void;
}

/**
 * See {@link openDaemon}. Made at once: the client (and the call thread) exist from the start, the
 * limiter at rate 0; {@link Daemon.start} begins the heartbeats that raise it to this process's share.
 */
export class Daemon {
  /** This process's id in the registry and on the leases it takes. */
  readonly replicaId: string;
  /** The Tencent client and the limiter that paces it; the budget sets the limiter's rate. */
  readonly calls: TimCalls;
  /** This process's share of `TIM_RATE_LIMIT`, kept by heartbeats once started. */
  readonly budget: ReplicaBudget;
  /** The registry session (row and advisory lock); registered after the first heartbeat. */
  readonly session: ReplicaSession;
  /** The metrics, when asked for ({@link DaemonOptions.metrics}). */
  readonly metrics: Metrics | undefined;
  /**
   * What a pass, or one account's sync (`sync/pass.ts` `accountSyncDeps`), needs. Made once, so
   * everything this process syncs shares one call path.
   */
  readonly passDeps: Omit<PassDeps, 'signal' | 'onAccount'>;
  readonly #db: Kysely<Database>;
  readonly #stop = new AbortController();
  #budgetRun: Promise<void> | undefined;
  #stopped: Promise<number> | undefined;

  constructor(log: Logger, db: Kysely<Database>, cfg: DaemonSettings, opts: DaemonOptions) {
    const oneShot = opts.oneShot === true;
    // Unique per process and per pass: a second `sync` in the same process (tests, or a pid reused)
    // must not take the first one's leases for its own.
    const replicaId =
      opts.replicaId ??
      `${oneShot ? 'sync-' : ''}${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.replicaId = replicaId;
    this.#db = db;
    // One budget for the process: every account in flight, whoever started it, holds rows in it.
    const rowBudget = cfg.sync.rowBudget > 0 ? new RowBudget(cfg.sync.rowBudget) : undefined;
    const metrics = opts.metrics
      ? createMetrics({
          collectAccounts: () => accountsSummary(db),
          // Read at scrape time, once `calls` and `budget` below exist.
          limiterQueue: () => this.calls.limiter.queued(),
          rateComplaints: () => this.calls.limiter.complaints,
          budget: () => ({
            limitPerSecond: cfg.tim.rateLimitPerSecond,
            sharePerSecond: this.budget.rate,
            replicas: this.budget.peers,
          }),
          syncIntervalSeconds: cfg.sync.intervalMs / 1000,
          ...(rowBudget ? { rowBudget } : {}),
        })
      : undefined;
    this.metrics = metrics;
    const onCall =
      metrics || opts.onCall
        ? (e: CallEvent) => {
            metrics?.observeCall(e);
            opts.onCall?.(e);
          }
        : undefined;
    // Rate 0 until the budget has heard from the other replicas, so a process that joins (a `sync`
    // next to daemons, too) never pushes the app over TIM_RATE_LIMIT.
    this.calls = timCallsFrom(cfg.tim, cfg.sync, log, { ratePerSecond: 0, ...(onCall ? { onCall } : {}) });
    this.passDeps = passDepsFrom(db, this.calls, cfg.sync, log, rowBudget);
    // Registered (row + session lock) before the first claim, so no one takes our leases for a dead
    // one's, and if this process dies its leases are free at once (db/leases.ts).
    this.session = new ReplicaSession(db, {
      replicaId,
      hostname: hostname(),
      pid: process.pid,
      ttlMs: 5_000,
      onLost: (err) => {
        log.warn(
          { err: { message: err.message } },
          `registry connection lost: no calls until registered again${oneShot ? '' : ' (others take over this share)'}`,
        );
        this.budget.lost();
      },
    });
    this.budget = new ReplicaBudget({
      replicaId,
      limit: cfg.tim.rateLimitPerSecond,
      heartbeat: (peers, callsPerSecond) => this.session.heartbeat(peers, callsPerSecond),
      live: () => this.session.live(),
      dropGraceMs: dropGraceMs(cfg.tim.rateJitterMs),
      setRate: (rate) => this.calls.limiter.setRate(rate),
      now: () => performance.now(),
      sleep,
      fastStartWhenAlone: oneShot,
      onChange: (rate, peers) =>
        log.info(
          { rate, peers, ...(oneShot ? {} : { replicaId }) },
          `call budget share: ${rate}/s with ${peers} replica(s)`,
        ),
      ...(oneShot
        ? {}
        : {
            onError: (err: unknown) =>
              log.warn({ err: { message: (err as Error).message } }, 'replica heartbeat failed; retrying'),
          }),
    });
  }

  /** Starts the heartbeats, which register this process and raise its rate to its share. Idempotent. */
  start(): void {
    if (this.#budgetRun || this.#stop.signal.aborted) return;
    this.#budgetRun = this.budget.run(this.#stop.signal);
  }

  /**
   * Waits until this process is registered, for at most `ms` and no longer than `signal` or the
   * daemon lasts, and says whether it is: claims wait for it, so that our leases never look like a
   * dead replica's to a daemon freeing those.
   */
  async waitRegistered(ms: number, signal?: AbortSignal): Promise<boolean> {
    if (this.session.registered) return true;
    const waited = new AbortController();
    const until = AbortSignal.any([waited.signal, this.#stop.signal, ...(signal ? [signal] : [])]);
    await Promise.race([this.session.whenRegistered(until), sleep(ms, until).catch(() => {})]);
    waited.abort();
    return this.session.registered;
  }

  /**
   * Stops, in this order: the heartbeats (so none fails on the closing session); the leases this
   * process still holds, released so their accounts are due again at once rather than when the
   * lease ends; the registry row and session; last the limiter and the client, whose calls have
   * ended by then. Resolves with the number of leases released. Safe to call again (and before
   * {@link Daemon.start}): every call gets the first one's result.
   */
  stop(): Promise<number> {
    this.#stopped ??= this.#shutdown();
    return this.#stopped;
  }

  async #shutdown(): Promise<number> {
    this.#stop.abort();
    await this.#budgetRun;
    const released = await releaseLeases(this.#db, this.replicaId).catch(() => 0);
    await this.session.close();
    await this.calls.close();
    return released;
  }
}

/**
 * Builds this process's part of the mirror (see {@link Daemon}); with `metrics: true` its
 * `metrics` are there. {@link Daemon.start} begins the heartbeats, {@link Daemon.stop} ends it all.
 *
 * @example
 * const daemon = openDaemon(ctx, db, cfg, { oneShot: true });
 * daemon.start();
 * try {
 *   await runPass({ ...daemon.passDeps, signal }, accounts);
 * } finally {
 *   await daemon.stop();
 * }
 */
export function openDaemon<O extends DaemonOptions = DaemonOptions>(
  ctx: { log: Logger },
  db: Kysely<Database>,
  cfg: DaemonSettings,
  opts?: O,
): O extends { metrics: true } ? Daemon & { readonly metrics: Metrics } : Daemon {
  // The cast only narrows `metrics`, which the constructor makes exactly when `opts.metrics` is true.
  return new Daemon(ctx.log, db, cfg, opts ?? {}) as never;
}
