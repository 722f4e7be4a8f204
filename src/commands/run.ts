/**
 * `friend-mirror run`: the daemon. Claims due accounts under leases, syncs them at this replica's
 * share of the call budget, serves health, readiness, metrics and resync over HTTP, starts resyncs
 * as soon as they are requested (LISTEN/NOTIFY), and shuts down gracefully.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { type Kysely, sql } from 'kysely';
import type { CallbackConfig, DaemonConfig, DbConfig, SyncConfig, TimConfig } from '../config.js';
import { accountsSummary, openDaemon } from '../daemon.js';
import { RESYNC_CHANNEL, requestResync } from '../db/accounts.js';
import { FriendWriter } from '../db/friend-writer.js';
import { claimDueAccounts, releaseDeadLeases, releaseLeases } from '../db/leases.js';
import { migrationsAreCurrent } from '../db/migrate.js';
import { listen } from '../db/notify.js';
import type { Database } from '../db/schema.js';
import { startAdminServer } from '../http/admin-server.js';
import { type CallbackServer, startCallbackServer } from '../http/callback-server.js';
import { createCallbackMetrics } from '../metrics.js';
import { createStatusReport } from '../status-report.js';
import { type CallTrouble, callTrouble, describeError, syncAccount } from '../sync/account-sync.js';
import { CallHistory } from '../sync/call-history.js';
import { CallbackLatency } from '../sync/callback-latency.js';
import { sleep } from '../sync/limiter.js';
import { createOutcomeReporter } from '../sync/outcome-report.js';
import { accountSyncDeps, limitedCall } from '../sync/pass.js';
import { ResyncQueue } from '../sync/resync-queue.js';
import { Scheduler } from '../sync/scheduler.js';
import { CallbackVerifier } from '../tim/callback-sign.js';
import { type CommandContext, EXIT } from './context.js';

/** Everything `run` is configured with. */
export interface RunConfig {
  db: DbConfig;
  tim: TimConfig;
  sync: SyncConfig;
  daemon: DaemonConfig;
  /** The webhook receiver; off when absent or without a token. */
  callback?: CallbackConfig;
}

/** How often a daemon frees the leases of gone replicas (at most; it does so while claiming). */
const REAP_EVERY_MS = 1_000;

/** Troubles after which claiming pauses and probes, rather than stopping (see sync/scheduler.ts). */
const PAUSING: ReadonlySet<CallTrouble | undefined> = new Set(['lockout', 'refused', 'unreachable']);
/** Troubles no retry fixes: claiming stops for good, the daemon stays up, not ready. */
const STOPPING: ReadonlySet<CallTrouble | undefined> = new Set(['config', 'broken']);
/** At most one warning a minute while calls stay paused; the metrics and /readyz tell the rest. */
const PAUSE_WARN_INTERVAL_MS = 60_000;

/** Runs the daemon until SIGTERM/SIGINT. */
export async function runCommand(ctx: CommandContext, db: Kysely<Database>, cfg: RunConfig): Promise<number> {
  const log = ctx.log;
  // For the status page's chart: the last minutes of calls, without a Prometheus server.
  const callHistory = new CallHistory();
  const daemon = openDaemon(ctx, db, cfg, {
    replicaId: cfg.daemon.replicaId,
    metrics: true,
    onCall: () => callHistory.record(),
  });
  const { replicaId, metrics, budget, passDeps } = daemon;
  const { limiter } = daemon.calls;
  const hardStop = new AbortController();
  let fatalMessage: string | undefined;
  /** When claiming last paused because calls did not get through; undefined while they do. */
  let pausedSince: Date | undefined;
  let lastPauseWarnAt = Number.NEGATIVE_INFINITY;

  /** Accounts whose attempt ended without reaching the database; their leases are released later. */
  const orphaned = new Set<string>();
  // Totals for the periodic summary line.
  const totals = { calls: 0, accounts: 0, changed: 0, failed: 0 };

  const reportExtras = createOutcomeReporter(log, { discoverMaxAccounts: cfg.sync.discoverMaxAccounts });
  // Webhooks (issue #6): callbacks mark accounts through a coalescing queue; the latency tracker
  // matches them with the syncs that follow, for callback_to_sync_seconds.
  const markQueue = new ResyncQueue({
    mark: async (ids) => {
      await requestResync(db, { ids }, { full: false, reportUnknown: false });
    },
    onError: (err, pending, retryInMs) => {
      callbackMetrics.observeMarkFailure();
      log.warn(
        { err: { message: (err as Error).message }, pending, retryInMs },
        'cannot mark callback accounts for resync (is Postgres up?); retrying',
      );
    },
  });
  const callbackMetrics = createCallbackMetrics(metrics, { pendingMarks: () => markQueue.pending });
  const callbackLatency = new CallbackLatency();

  const writer = new FriendWriter(db, { applyConcurrency: cfg.sync.applyConcurrency });
  let predecessorReleased = false;
  let lastReapAt = Number.NEGATIVE_INFINITY;
  const scheduler = new Scheduler({
    concurrency: cfg.sync.concurrency,
    idleMs: 1_000,
    sleep,
    claim: async (limit) => {
      if (!(await daemon.waitRegistered(1_000))) return [];
      if (!predecessorReleased) {
        // Leases under our id from before this process started belong to a dead predecessor (a
        // restart with the same REPLICA_ID); the registry cannot tell them apart from ours.
        const n = await releaseLeases(db, replicaId);
        predecessorReleased = true;
        if (n > 0) log.info({ released: n }, 'released leases a previous process under this replica id left');
      }
      if (performance.now() - lastReapAt >= REAP_EVERY_MS) {
        lastReapAt = performance.now();
        const freed = await releaseDeadLeases(db);
        if (freed > 0) log.info({ freed }, 'freed leases of replicas that are gone');
      }
      if (orphaned.size > 0) {
        // The database is reachable again (or this would throw): hand those accounts back first.
        // Only these: syncs cut off while this release runs add theirs for the next claim.
        const ids = [...orphaned];
        await releaseLeases(db, replicaId, ids);
        for (const id of ids) orphaned.delete(id);
      }
      return claimDueAccounts(db, {
        owner: replicaId,
        limit,
        leaseMs: cfg.sync.leaseMs,
        reconcile: { intervalMs: cfg.sync.reconcileIntervalMs },
      });
    },
    syncOne: async (state, signal) => {
      const syncStartedAt = performance.now();
      const call = limitedCall(passDeps, signal, () => {
        totals.calls++;
      });
      const outcome = await syncAccount(accountSyncDeps(passDeps, call, writer, signal), state).catch(
        (err: unknown) => {
          // Not even the failure could be recorded (Postgres is down), or calls are paused and the
          // account was not at fault: the lease would otherwise hold it until it expires. Release it
          // as soon as the next claim (or probe) reaches the database.
          const trouble = callTrouble(err);
          if (!STOPPING.has(trouble) && trouble !== 'abort') orphaned.add(state.accountId);
          throw err;
        },
      );
      totals.accounts++;
      if (outcome.result === 'changed') totals.changed++;
      if (outcome.result === 'failed') totals.failed++;
      metrics.observeAccount(outcome);
      reportExtras(outcome);
      if (outcome.result === 'changed' || outcome.result === 'unchanged') {
        for (const s of callbackLatency.synced(state.accountId, syncStartedAt)) {
          callbackMetrics.observeCallbackToSync(s);
        }
      }
      log.debug(
        {
          account: state.accountId,
          result: outcome.result,
          calls: outcome.calls,
          ms: Math.round(outcome.durationMs),
        },
        outcome.error ? `account sync ${outcome.result}: ${describeError(outcome.error)}` : 'account synced',
      );
      return outcome;
    },
    isFatal: (err) => STOPPING.has(callTrouble(err)) && !hardStop.signal.aborted,
    pauseFor: (err) => {
      const trouble = callTrouble(err);
      return PAUSING.has(trouble) ? trouble : undefined;
    },
    onPause: (p) => {
      if (p.failedProbes === 0) pausedSince = new Date();
      metrics.setPaused(p.reason);
      const now = performance.now();
      if (now - lastPauseWarnAt < PAUSE_WARN_INTERVAL_MS) return;
      lastPauseWarnAt = now;
      log.warn(
        {
          reason: p.reason,
          failedProbes: p.failedProbes,
          nextProbeMs: p.backoffMs,
          err: { message: (p.error as Error).message },
        },
        `calls to Tencent do not get through (${p.reason}): ${(p.error as Error).message}; ` +
          `claiming paused, probing with one account in ${Math.ceil(p.backoffMs / 1000)}s`,
      );
    },
    onResume: (p) => {
      metrics.setPaused(undefined);
      log.info(
        {
          reason: p.reason,
          failedProbes: p.failedProbes,
          pausedMs: Date.now() - (pausedSince?.getTime() ?? 0),
        },
        'calls to Tencent go through again; claiming resumed',
      );
      pausedSince = undefined;
    },
    onSyncError: (err, state) => {
      if (hardStop.signal.aborted) return;
      const trouble = callTrouble(err);
      if (STOPPING.has(trouble)) {
        fatalMessage = (err as Error).message;
        log.fatal(
          { account: state.accountId },
          `stopped calling Tencent: ${fatalMessage}; fix it and restart`,
        );
      } else if (PAUSING.has(trouble) || trouble === 'abort') {
        // The pause (onPause) says it, once for every account that failed the same way.
      } else {
        log.error(
          { account: state.accountId, err: { message: (err as Error).message } },
          'account sync crashed',
        );
      }
    },
    onClaimError: (err, backoffMs) =>
      log.warn(
        { err: { message: (err as Error).message }, backoffMs },
        'cannot claim accounts (is Postgres up?); retrying',
      ),
  });

  let migrationsOk = false;
  const readiness = async () => {
    const checks: Record<string, { ok: boolean; detail?: string }> = {};
    try {
      await sql`SELECT 1`.execute(db);
      checks.database = { ok: true };
      migrationsOk ||= await migrationsAreCurrent(db);
      checks.migrations = migrationsOk
        ? { ok: true }
        : { ok: false, detail: 'pending migrations: run migrate' };
    } catch (err) {
      checks.database = { ok: false, detail: `database unreachable: ${(err as Error).message}` };
    }
    const paused = scheduler.paused;
    checks.tencent = fatalMessage
      ? { ok: false, detail: fatalMessage }
      : paused
        ? {
            ok: false,
            detail:
              `calls paused since ${pausedSince?.toISOString() ?? 'now'} (${paused.reason}): ` +
              `${(paused.error as Error).message}; probing with one account`,
          }
        : { ok: true };
    return { ready: Object.values(checks).every((c) => c.ok), checks };
  };
  const admin = await startAdminServer({
    host: cfg.daemon.httpHost,
    port: cfg.daemon.httpPort,
    ...(cfg.daemon.adminToken ? { adminToken: cfg.daemon.adminToken } : {}),
    log,
    metrics,
    resync: (req) =>
      requestResync(db, req.all ? { all: true } : { ids: req.ids ?? [] }, { full: req.full === true }),
    readiness,
    status: createStatusReport({
      db,
      replicaId,
      rateLimit: cfg.tim.rateLimitPerSecond,
      intervalMs: cfg.sync.intervalMs,
      budget: () => ({ share: limiter.rate, peers: budget.peers }),
      calls: callHistory,
      metrics,
      webhooksEnabled: Boolean(cfg.callback?.token),
      ready: async () => (await readiness()).ready,
    }),
  });

  let callbackServer: CallbackServer | undefined;
  if (cfg.callback?.token) {
    callbackServer = await startCallbackServer({
      host: cfg.callback.host,
      port: cfg.callback.port,
      sdkAppId: cfg.tim.sdkAppId,
      verifier: new CallbackVerifier({
        token: cfg.callback.token,
        maxSkewSeconds: cfg.callback.maxSkewSeconds,
      }),
      enqueue: (ids) => markQueue.add(ids),
      onAccepted: (ids) => callbackLatency.received(ids),
      log,
      metrics: callbackMetrics,
    }).catch(async (err: unknown) => {
      await admin.close();
      throw err;
    });
  } else {
    log.info('webhook receiver off: set TIM_CALLBACK_TOKEN (the IM console callback token) to enable it');
  }

  const listener = listen({
    url: cfg.db.databaseUrl,
    channel: RESYNC_CHANNEL,
    onNotify: () => scheduler.wake(),
    onConnect: () => scheduler.wake(),
    onError: (err) => log.warn({ err: { message: err.message } }, 'LISTEN connection lost; reconnecting'),
  });

  // Event-loop lag is the first thing to look at when a replica runs below its share.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  let lastSummary = { at: performance.now(), calls: 0 };
  const summaryTimer = setInterval(async () => {
    const now = performance.now();
    const rate = ((totals.calls - lastSummary.calls) * 1000) / (now - lastSummary.at);
    lastSummary = { at: now, calls: totals.calls };
    let lagSeconds: number | undefined;
    try {
      lagSeconds = Math.round((await accountsSummary(db)).lagSeconds);
    } catch {
      lagSeconds = undefined;
    }
    log.info(
      {
        callsPerSecond: +rate.toFixed(1),
        share: limiter.rate,
        peers: budget.peers,
        accountsDone: totals.accounts,
        changed: totals.changed,
        failed: totals.failed,
        inFlight: scheduler.inFlight,
        lagSeconds,
        eventLoopDelayP99Ms: Math.round(loopDelay.percentile(99) / 1e6),
      },
      'sync summary',
    );
    loopDelay.reset();
  }, cfg.daemon.summaryIntervalMs);
  summaryTimer.unref();

  log.info(
    {
      replicaId,
      admin: admin.url,
      ...(callbackServer ? { callback: callbackServer.url } : {}),
      rateLimit: cfg.tim.rateLimitPerSecond,
      concurrency: cfg.sync.concurrency,
      reconcileIntervalMs: cfg.sync.reconcileIntervalMs,
      discover: cfg.sync.discover,
      callThread: daemon.calls.callThread,
    },
    'daemon started',
  );
  daemon.start();
  const onStop = () => {
    log.info({ timeoutMs: cfg.daemon.shutdownTimeoutMs }, 'shutting down: finishing accounts in flight');
    setTimeout(() => hardStop.abort(new Error('shutdown timeout')), cfg.daemon.shutdownTimeoutMs).unref();
  };
  ctx.signal.addEventListener('abort', onStop, { once: true });
  try {
    await scheduler.run(ctx.signal, hardStop.signal);
    if (!ctx.signal.aborted) {
      // Claiming stopped on a fatal error: stay up, not ready, so the operator sees why.
      await new Promise<void>((resolve) =>
        ctx.signal.addEventListener('abort', () => resolve(), { once: true }),
      );
    }
  } finally {
    clearInterval(summaryTimer);
    loopDelay.disable();
    // Webhooks first: Tencent has had its OK for every mark still queued and will not send them
    // again, so the receiver stops taking new ones and the queue writes what it holds.
    await callbackServer?.close();
    await markQueue.close();
    const released = await daemon.stop();
    await listener.close();
    await admin.close();
    log.info({ released }, 'daemon stopped');
  }
  return fatalMessage ? EXIT.usage : EXIT.ok;
}
