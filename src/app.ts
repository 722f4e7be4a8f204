/**
 * Wiring: builds the long-lived parts (database, Tencent client, limiter, logger) from config.
 * The only module besides the CLI that knows every layer.
 */
import type { Kysely } from 'kysely';
import type { DbConfig, SyncConfig, TimConfig } from './config.js';
import { createDb } from './db/pool.js';
import type { Database } from './db/schema.js';
import type { Logger } from './log.js';
import { CallLimiter } from './sync/limiter.js';
import type { PassDeps } from './sync/pass.js';
import { TimClient, type TimClientOptions } from './tim/client.js';
import { SigningUserSig, StaticUserSig, type UserSigProvider } from './tim/usersig.js';

/** Opens the database pool; idle-connection failures are logged, not fatal. */
export function openDb(cfg: DbConfig, log: Logger, extraConnections = 0): Kysely<Database> {
  return createDb(cfg.databaseUrl, {
    maxConnections: cfg.poolSize + extraConnections,
    onIdleError: (err) =>
      log.warn({ err: { message: err.message } }, 'an idle database connection failed; it will be replaced'),
  });
}

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

/** The Tencent client, with a pool sized for the accounts in flight. */
export function timClientFrom(
  cfg: TimConfig,
  sync: SyncConfig,
  onCall?: TimClientOptions['onCall'],
): TimClient {
  return new TimClient({
    baseUrl: cfg.baseUrl,
    sdkAppId: cfg.sdkAppId,
    identifier: cfg.identifier,
    userSig: userSigFrom(cfg),
    timeoutMs: cfg.timeoutMs,
    // Each account in flight has at most one call open at a time.
    connections: Math.max(8, Math.min(sync.concurrency, 256)),
    ...(onCall ? { onCall } : {}),
  });
}

/** Everything a sync pass needs, from config. */
export function passDepsFrom(
  db: Kysely<Database>,
  client: PassDeps['client'],
  tim: TimConfig,
  sync: SyncConfig,
  log: Logger,
): Omit<PassDeps, 'signal' | 'onAccount'> {
  return {
    db,
    client,
    limiter: new CallLimiter({ ratePerSecond: tim.rateLimitPerSecond, jitterMs: tim.rateJitterMs }),
    concurrency: sync.concurrency,
    maxPages: sync.maxPages,
    nextSync: { intervalMs: sync.intervalMs },
    ...(sync.discover ? { discover: { maxAccounts: sync.discoverMaxAccounts } } : {}),
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
