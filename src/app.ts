/**
 * Wiring: builds the long-lived parts (Tencent client and limiter, logger) from config; the CLI
 * opens the database pool. The only module besides the CLI that knows every layer.
 */
import type { Kysely } from 'kysely';
import type { SyncConfig, TimConfig } from './config.js';
import type { Database } from './db/schema.js';
import type { Logger } from './log.js';
import { openCallThread, type PriorityReport } from './sync/call-thread.js';
import { CallLimiter, type Limiter } from './sync/limiter.js';
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
  /** The nice value the call thread asked for and got, once it has reported; undefined without one. */
  callThreadNice(): { wanted: number; nice: number } | undefined;
  /** Stops the limiter and closes the client (and with them the call thread). */
  close(): Promise<void>;
}

/**
 * Says once per process what nice value the call thread got (a restarted thread asks again, and
 * gets the same answer). Not getting it is no error: calls are paced the same, only less promptly on
 * a machine whose cores are all busy.
 */
function logPriorityOnce(log: Logger): (report: PriorityReport) => void {
  let said = false;
  return (r) => {
    if (said) return;
    said = true;
    if (r.refused === undefined) {
      log.debug({ nice: r.nice }, 'the call thread runs at its own priority');
      return;
    }
    log.info(
      { wanted: r.wanted, nice: r.nice, refused: r.refused },
      `the call thread could not take nice ${r.wanted} (${r.refused}); it runs at nice ${r.nice}. ` +
        `Grant CAP_SYS_NICE or a nice ulimit of ${20 - r.wanted} (docker-compose.yml does), ` +
        'or set TIM_CALL_THREAD_NICE=0 to stop asking',
    );
  };
}

/**
 * The Tencent client and its limiter, from config, with a pool sized for the accounts in flight.
 *
 * With `TIM_CALL_THREAD` (the default) both are faces of one call thread (sync/call-thread.ts): the
 * client's transport paces each call in the thread's limiter, and the limiter returned here only
 * forwards controls to it. Neither works with a partner made elsewhere, so they are made here, together.
 * When the compiled worker is missing (running from TypeScript sources, as the tests do), or with
 * `TIM_CALL_THREAD=false`, it is a {@link CallLimiter} and a client that sends in this thread.
 */
export function timCallsFrom(
  cfg: TimConfig,
  sync: SyncConfig,
  log: Logger,
  opts: { ratePerSecond?: number; onCall?: TimClientOptions['onCall'] } = {},
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
  if (cfg.callThread) {
    let appliedNice: { wanted: number; nice: number } | undefined;
    const logPriority = logPriorityOnce(log);
    const opened = openCallThread({
      baseUrl: cfg.baseUrl,
      timeoutMs: cfg.timeoutMs,
      connections,
      ratePerSecond,
      jitterMs: cfg.rateJitterMs,
      nice: cfg.callThreadNice,
      onPriority: (report) => {
        appliedNice = { wanted: report.wanted, nice: report.nice };
        logPriority(report);
      },
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
        callThreadNice: () => appliedNice,
        close: () => client.close(),
      };
    }
    log.debug(
      { reason: opened.unavailable },
      'call thread unavailable; pacing and sending calls in this thread',
    );
  }
  const client = new TimClient(clientOptions);
  const limiter = new CallLimiter({ ratePerSecond, jitterMs: cfg.rateJitterMs });
  return {
    client,
    limiter,
    callThread: false,
    callThreadNice: () => undefined,
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
): Omit<PassDeps, 'signal' | 'onAccount'> {
  return {
    db,
    client: calls.client,
    limiter: calls.limiter,
    concurrency: sync.concurrency,
    maxPages: sync.maxPages,
    nextSync: { intervalMs: sync.intervalMs },
    missingRecheckMs: sync.missingRecheckMs,
    ...(sync.discover ? { discover: { maxAccounts: sync.discoverMaxAccounts } } : {}),
    ...(sync.rowBudget > 0 ? { rowBudget: new RowBudget(sync.rowBudget) } : {}),
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
