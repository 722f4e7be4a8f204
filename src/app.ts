/**
 * Wiring: builds the long-lived parts (Tencent client and limiter, logger) from config; the CLI
 * opens the database pool. The only module besides the CLI that knows every layer.
 */
import type { Kysely } from 'kysely';
import type { SyncConfig, TimConfig } from './config.js';
import type { Database } from './db/schema.js';
import type { Logger } from './log.js';
import { openCallThread } from './sync/call-thread.js';
import { CallLimiter, COMPLAINT_RUN_MS, type Limiter, type RateComplaint } from './sync/limiter.js';
import type { PassDeps } from './sync/pass.js';
import { RowBudget } from './sync/row-budget.js';
import { TimClient, type TimClientOptions } from './tim/client.js';
import { SigningUserSig, StaticUserSig, type UserSigProvider } from './tim/usersig.js';

/** The UserSig source the config asks for. */
export function userSigFrom(cfg: TimConfig): UserSigProvider {
  if (cfg.userSig) return new StaticUserSig(cfg.userSig);
  return new SigningUserSig({
    secretKey: cfg.secretKey!,
    sdkAppId: cfg.sdkAppId,
    identifier: cfg.identifier,
    expireSeconds: cfg.userSigTtlSeconds,
  });
}

/** The Tencent client and the limiter that paces its calls, made together by {@link timCallsFrom}. */
export interface TimCalls {
  client: TimClient;
  limiter: Limiter;
  /** True when calls are paced and sent from the call thread (`TIM_CALL_THREAD`). */
  callThread: boolean;
  /** Stops the limiter and closes the client (and with them the call thread). */
  close(): Promise<void>;
}

/** At most one warning a minute about a run of "too frequent" answers; the metrics count every one. */
const COMPLAINT_WARN_INTERVAL_MS = 60_000;

/**
 * Logs what the limiter made of a "too frequent" answer. A slip costs nothing and needs nothing
 * done, so it is a debug line; a run of them is a warning that says what to do.
 */
function logComplaint(log: Logger): (c: RateComplaint) => void {
  let warnedAt = Number.NEGATIVE_INFINITY;
  return (c) => {
    if (c.verdict === 'slip') {
      log.debug(c, 'Tencent answered "too frequent" once: taken for a timing slip, the rate is kept');
      return;
    }
    if (performance.now() - warnedAt < COMPLAINT_WARN_INTERVAL_MS) {
      log.debug(c, 'Tencent answers "too frequent" again: the rate is cut');
      return;
    }
    warnedAt = performance.now();
    log.warn(
      c,
      `Tencent answered "too frequent" again within ${COMPLAINT_RUN_MS / 1000} s although this process ` +
        `kept to its share: another client is probably calling with the same app's quota. The rate is ` +
        'cut and comes back within seconds once the refusals stop. If this keeps happening, lower ' +
        "TIM_RATE_LIMIT to what the other clients leave of the app's quota, or stop the other client",
    );
  };
}

/**
 * The Tencent client and its limiter, from config, with a pool sized for the accounts in flight.
 *
 * With `TIM_CALL_THREAD` (the default) both are faces of one call thread (sync/call-thread.ts): the
 * client's transport paces each call in the thread's limiter, and the limiter returned here only
 * forwards controls to it. Neither works with a partner made elsewhere, so they are made here, together.
 * With `TIM_CALL_THREAD=false` it is a {@link CallLimiter} and a client that sends in this thread; so
 * it is, with a warning, when the compiled worker is missing (a packaging fault: it ships with the
 * rest of `dist/`), since calls paced in this thread still keep the rate guarantee.
 */
export function timCallsFrom(
  cfg: TimConfig,
  sync: SyncConfig,
  log: Logger,
  opts: {
    ratePerSecond?: number;
    onCall?: TimClientOptions['onCall'];
    /** The call thread's worker entry; default the compiled one (see {@link openCallThread}). */
    workerUrl?: URL;
  } = {},
): TimCalls {
  const ratePerSecond = opts.ratePerSecond ?? cfg.rateLimitPerSecond;
  // Each account in flight has at most one call open at a time.
  const connections = Math.max(8, Math.min(sync.concurrency, 256));
  const clientOptions: TimClientOptions = {
    baseUrl: cfg.baseUrl,
    sdkAppId: cfg.sdkAppId,
    identifier: cfg.identifier,
    userSig: userSigFrom(cfg),
    timeoutMs: cfg.timeoutMs,
    connections,
    ...(opts.onCall ? { onCall: opts.onCall } : {}),
  };
  const onComplaint = logComplaint(log);
  if (cfg.callThread) {
    const opened = openCallThread({
      baseUrl: cfg.baseUrl,
      timeoutMs: cfg.timeoutMs,
      connections,
      ratePerSecond,
      jitterMs: cfg.rateJitterMs,
      ...(opts.workerUrl ? { workerUrl: opts.workerUrl } : {}),
      onComplaint,
      onCrash: (c) =>
        log.error(
          { reason: c.reason, failedCalls: c.failedCalls, restarting: c.restarting },
          c.restarting
            ? 'the call thread stopped unexpectedly; restarted it (calls resume after one rate window)'
            : 'the call thread keeps crashing; no more calls can be made: restart the process',
        ),
    });
    if ('thread' in opened) {
      const { thread } = opened;
      log.debug('friend_get calls are paced and sent from the call thread');
      const client = new TimClient({ ...clientOptions, transport: thread.transport });
      return {
        client,
        limiter: thread.limiter,
        callThread: true,
        close: () => client.close(),
      };
    }
    log.warn(
      { reason: opened.unavailable },
      'the call thread cannot start: its compiled worker is missing (a packaging fault); ' +
        'pacing and sending calls in this thread instead',
    );
  }
  const client = new TimClient(clientOptions);
  const limiter = new CallLimiter({ ratePerSecond, jitterMs: cfg.rateJitterMs, onComplaint });
  return {
    client,
    limiter,
    callThread: false,
    close: async () => {
      await limiter.stop();
      await client.close();
    },
  };
}

/** Everything a sync pass needs, from config. */
export function passDepsFrom(
  db: Kysely<Database>,
  calls: Pick<PassDeps, 'client' | 'limiter'>,
  sync: SyncConfig,
  log: Logger,
  /** The process's row budget when the caller shares it (metrics); default: one from `SYNC_ROW_BUDGET`. */
  rowBudget: RowBudget | undefined = sync.rowBudget > 0 ? new RowBudget(sync.rowBudget) : undefined,
): Omit<PassDeps, 'signal' | 'onAccount'> {
  return {
    db,
    client: calls.client,
    limiter: calls.limiter,
    concurrency: sync.concurrency,
    applyConcurrency: sync.applyConcurrency,
    maxPages: sync.maxPages,
    nextSync: { intervalMs: sync.intervalMs },
    missingRecheckMs: sync.missingRecheckMs,
    ...(sync.discover ? { discover: { maxAccounts: sync.discoverMaxAccounts } } : {}),
    ...(rowBudget ? { rowBudget } : {}),
    retry: {
      attempts: sync.retryAttempts,
      onRetry: (err, attempt, delayMs) =>
        log.debug(
          { code: err.code, retryClass: err.retryClass, attempt, delayMs },
          `retrying after: ${err.message}`,
        ),
    },
  };
}
