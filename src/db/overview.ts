/**
 * What the status page shows from the database: accounts by status, how far the current sweep has
 * come, sync lag, replicas, resyncs waiting and the latest errors. Read in a few statements, each
 * one pass over `tim.accounts` at most; the caller caches the answer, since the page polls.
 */
import { type Kysely, sql } from 'kysely';
import { countByStatus, latestErrors } from './accounts.js';
import type { AccountStatus, Database } from './schema.js';

/** A live replica as the status page lists it. */
export interface OverviewReplica {
  replicaId: string;
  hostname: string;
  /** Its share of the budget, as it last reported. */
  callsPerSecond: number;
  peers: number;
  heartbeatAgeSeconds: number;
}

/** An account's latest error. */
export interface OverviewError {
  accountId: string;
  status: AccountStatus;
  /** ISO time of the attempt that failed. */
  at: string | null;
  error: string;
}

/** See {@link readOverview}. */
export interface Overview {
  accounts: {
    byStatus: Record<AccountStatus, number>;
    total: number;
    /** Not `disabled` or `missing`: the accounts a sweep covers. */
    active: number;
  };
  sweep: {
    /** Active accounts whose last successful sync is within `SYNC_INTERVAL`. */
    syncedWithinInterval: number;
    /** Active accounts due now. */
    dueNow: number;
    /** Accounts attempted per second over the last minute, by every replica. */
    accountsPerSecond: number;
    /** Seconds until the due accounts are done at that rate; null when nothing is moving. */
    etaSeconds: number | null;
  };
  lag: {
    /** Percentiles of now − `last_synced_at` over active accounts synced at least once. */
    p50Seconds: number | null;
    p95Seconds: number | null;
    /** How long the oldest due account has waited. */
    oldestDueSeconds: number;
    /** Active accounts with no successful sync within twice `SYNC_INTERVAL`. */
    overdue: number;
  };
  /** Resyncs requested (`resync`, webhooks) and not yet started. */
  pendingResyncs: number;
  replicas: OverviewReplica[];
  /** The latest errors, newest first. */
  errors: OverviewError[];
}

/** How many errors {@link readOverview} lists. */
export const OVERVIEW_ERRORS = 10;

/**
 * Reads the overview.
 *
 * @param opts.intervalMs `SYNC_INTERVAL`, which defines a sweep and what counts as overdue
 */
export async function readOverview(db: Kysely<Database>, opts: { intervalMs: number }): Promise<Overview> {
  const interval = sql`(${opts.intervalMs}::float8 * interval '1 millisecond')`;
  const [byStatus, agg, replicas, errors] = await Promise.all([
    countByStatus(db),
    sql<{
      active: number;
      synced_within: number;
      due: number;
      attempted_last_minute: number;
      p50: number | null;
      p95: number | null;
      oldest_due: number | null;
      overdue: number;
      resyncs: number;
    }>`
      WITH a AS (
        SELECT *, status NOT IN ('disabled', 'missing') AS active FROM tim.accounts
      )
      SELECT count(*) FILTER (WHERE active)::int AS active,
             count(*) FILTER (WHERE active AND last_synced_at > now() - ${interval})::int AS synced_within,
             count(*) FILTER (WHERE active AND next_sync_at <= now())::int AS due,
             count(*) FILTER (WHERE last_attempt_at > now() - interval '1 minute')::int AS attempted_last_minute,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM now() - last_synced_at))
               FILTER (WHERE active AND last_synced_at IS NOT NULL)::float8 AS p50,
             percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM now() - last_synced_at))
               FILTER (WHERE active AND last_synced_at IS NOT NULL)::float8 AS p95,
             extract(epoch FROM now() - min(next_sync_at) FILTER (
               WHERE active AND next_sync_at <= now() AND next_sync_at > '-infinity'))::float8 AS oldest_due,
             count(*) FILTER (
               WHERE active AND coalesce(last_synced_at, created_at) < now() - 2 * ${interval})::int AS overdue,
             count(*) FILTER (WHERE priority = 0 AND status <> 'disabled')::int AS resyncs
      FROM a`.execute(db),
    sql<{
      replica_id: string;
      hostname: string;
      calls_per_second: number;
      peers: number;
      age: number;
    }>`
      SELECT replica_id, hostname, calls_per_second, peers,
             extract(epoch FROM now() - heartbeat_at)::float8 AS age
      FROM tim.live_replicas ORDER BY replica_id`.execute(db),
    latestErrors(db, OVERVIEW_ERRORS).execute(),
  ]);
  const a = agg.rows[0]!;
  const accountsPerSecond = a.attempted_last_minute / 60;
  return {
    accounts: {
      byStatus,
      total: Object.values(byStatus).reduce((s, n) => s + n, 0),
      active: a.active,
    },
    sweep: {
      syncedWithinInterval: a.synced_within,
      dueNow: a.due,
      accountsPerSecond,
      etaSeconds: a.due === 0 ? 0 : accountsPerSecond > 0 ? a.due / accountsPerSecond : null,
    },
    lag: {
      p50Seconds: a.p50,
      p95Seconds: a.p95,
      oldestDueSeconds: a.oldest_due ?? 0,
      overdue: a.overdue,
    },
    pendingResyncs: a.resyncs,
    replicas: replicas.rows.map((r) => ({
      replicaId: r.replica_id,
      hostname: r.hostname,
      callsPerSecond: r.calls_per_second,
      peers: r.peers,
      heartbeatAgeSeconds: r.age,
    })),
    errors: errors.map((e) => ({
      accountId: e.account_id,
      status: e.status,
      at: e.last_attempt_at ? new Date(e.last_attempt_at).toISOString() : null,
      error: e.last_error ?? '',
    })),
  };
}
