/**
 * Prometheus metrics of the mirror, on a private prom-client {@link Registry}: never the global
 * default one, so each process part (and each test) can make its own without name clashes.
 *
 * Label values come only from typed codes: the API name, a `TimError` `code`, Tencent's numeric
 * `ErrorCode`, an account `status`, a sync `result`. Never from ids, messages or URLs, so no label
 * can carry a secret (the UserSig lives in the call URL) or grow without bound.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { AccountSyncOutcome } from './sync/account-sync.js';
import type { CallEvent } from './tim/client.js';

/** What {@link MetricsOptions.collectAccounts} reports: account counts and how late the queue runs. */
export interface AccountsSummary {
  /** Accounts per `tim.accounts.status` (`pending`, `ok`, `missing`, `failing`, `disabled`). */
  byStatus: Record<string, number>;
  /** Age of the oldest due account (now − its `next_sync_at`); 0 when none is due. */
  lagSeconds: number;
  /** Active accounts whose reconciliation (full read) is overdue; omitted: not exported. */
  reconcileBacklog?: number;
}

/** Options of {@link createMetrics}. */
export interface MetricsOptions {
  /** Prefix of every metric name, default processes' ones included. Default `tim_mirror_`. */
  prefix?: string;
  /**
   * Reads account counts and lag (a Postgres query, typically). Called at scrape time, at most once
   * per {@link MetricsOptions.collectCacheMs}. Without it, `accounts` and `sync_lag_seconds` are not
   * exported at all rather than exported as a made-up 0.
   */
  collectAccounts?: () => Promise<AccountsSummary>;
  /** Calls waiting in the rate limiter. Without it, `limiter_queue_depth` is not exported. */
  limiterQueue?: () => number;
  /**
   * "Too frequent" complaints the limiter counted so far, by verdict (`Limiter.complaints`). Without
   * it, `rate_complaints_total` is not exported.
   */
  rateComplaints?: () => { slips: number; slowDowns: number };
  /**
   * The call budget as this replica sees it: `TIM_RATE_LIMIT` (the app's quota), this replica's
   * share of it (0 before its first settled decision and while it is fenced) and the live replicas
   * sharing it. Without it, `call_budget_per_second`, `call_share_per_second` and `replicas` are not
   * exported.
   */
  budget?: () => { limitPerSecond: number; sharePerSecond: number; replicas: number };
  /** `SYNC_INTERVAL` in seconds, exported as `sync_interval_seconds` so alerts can compare the lag with it. */
  syncIntervalSeconds?: number;
  /**
   * The row budget (`SYNC_ROW_BUDGET`, sync/row-budget.ts), read at scrape time. Without it (no
   * budget), `row_budget`, `rows_held` and `pulls_waiting_for_rows` are not exported.
   */
  rowBudget?: { readonly limit: number; readonly held: number; readonly waiting: number };
  /** How long a `collectAccounts` result (or failure) is reused. Default 5,000 ms. */
  collectCacheMs?: number;
  /** How long a scrape waits for `collectAccounts` before keeping the last values. Default 3,000 ms. */
  collectTimeoutMs?: number;
  /** Monotonic milliseconds clock, for the cache; injectable for tests. */
  now?: () => number;
}

/** The mirror's metrics and the registry that holds them. */
export interface Metrics {
  /** The private registry: every metric below, plus Node's default process metrics. */
  readonly registry: Registry;
  /** The Prometheus text exposition of the registry, with its content type. Never rejects on a failing collector. */
  render(): Promise<{ contentType: string; body: string }>;
  /** Records one HTTP call to Tencent (wire to `TimClientOptions.onCall`). */
  observeCall(e: CallEvent): void;
  /** Records one account sync (wire to the pass's per-account callback). */
  observeAccount(o: AccountSyncOutcome): void;
  /** Sets the `ready` gauge (1 or 0), e.g. from the `/readyz` answer. */
  setReady(ready: boolean): void;
  /**
   * Claiming is paused because calls do not get through (`reason`: `lockout`, `refused`,
   * `unreachable`), or resumed (undefined): the `claims_paused` gauge, and `claim_pauses_total`
   * counts each pause once, when it begins.
   */
  setPaused(reason: string | undefined): void;
}

/** 10 ms to 10 s: a friend_get call is ~50–300 ms; 3 s is Tencent's own timeout, 8 s ours. */
const CALL_BUCKETS_SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** An unchanged account is one call; a big changed one is many pages plus a transaction. */
const ACCOUNT_BUCKETS_SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
/** An apply is one transaction of a few statements, or a share of a batched COPY; waits for a slot count. */
const APPLY_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Every `result` of `account_syncs_total`, exported from the start so `increase()` sees a 0, not nothing. */
const ACCOUNT_RESULTS = ['unchanged', 'changed', 'missing', 'failed'] as const;

/**
 * Creates the metrics on a new private registry.
 *
 * @example
 * const metrics = createMetrics({
 *   collectAccounts: () => accountsSummary(db),
 *   limiterQueue: () => limiter.queued(),
 * });
 * const client = new TimClient({ ...opts, onCall: (e) => metrics.observeCall(e) });
 * const { contentType, body } = await metrics.render();
 */
export function createMetrics(opts: MetricsOptions = {}): Metrics {
  const prefix = opts.prefix ?? 'tim_mirror_';
  const now = opts.now ?? (() => performance.now());
  const cacheMs = opts.collectCacheMs ?? 5_000;
  const timeoutMs = opts.collectTimeoutMs ?? 3_000;
  const registry = new Registry();
  const registers = [registry];

  const calls = new Counter({
    name: `${prefix}calls_total`,
    help: 'HTTP calls to Tencent IM, by API and outcome (ok, or the error code); error_code is Tencent ErrorCode when one was returned.',
    labelNames: ['api', 'outcome', 'error_code'] as const,
    registers,
  });
  const callDuration = new Histogram({
    name: `${prefix}call_duration_seconds`,
    help: 'Duration of HTTP calls to Tencent IM, retries counted separately.',
    labelNames: ['api'] as const,
    buckets: CALL_BUCKETS_SECONDS,
    registers,
  });
  const accountSyncs = new Counter({
    name: `${prefix}account_syncs_total`,
    help: 'Account syncs, by result (unchanged, changed, missing, failed).',
    labelNames: ['result'] as const,
    registers,
  });
  const accountSyncDuration = new Histogram({
    name: `${prefix}account_sync_duration_seconds`,
    help: 'Duration of one account sync: pull and apply, rate-limit waits included.',
    buckets: ACCOUNT_BUCKETS_SECONDS,
    registers,
  });
  for (const result of ACCOUNT_RESULTS) accountSyncs.inc({ result }, 0);
  const applyDuration = new Histogram({
    name: `${prefix}apply_duration_seconds`,
    help: 'Duration of writing one changed account to Postgres (its transaction, or its share of a batched first-sync COPY), waits for an apply slot included.',
    buckets: APPLY_BUCKETS_SECONDS,
    registers,
  });
  const friendRows = new Counter({
    name: `${prefix}friend_rows_written_total`,
    help: 'Rows of tim.friends inserted, updated or deleted.',
    registers,
  });
  const tagRows = new Counter({
    name: `${prefix}tag_rows_written_total`,
    help: 'Rows of tim.friend_tags inserted, updated or deleted.',
    registers,
  });
  const reconciles = new Counter({
    name: `${prefix}reconciles_total`,
    help: 'Accounts read in full because their reconciliation (SYNC_RECONCILE_INTERVAL) was due, and synced.',
    registers,
  });
  const reconcileDrift = new Counter({
    name: `${prefix}reconcile_drift_total`,
    help: "Full reads that changed rows although Tencent's sequences had not moved: changes the sequences missed, now repaired.",
    registers,
  });
  const rowsRepaired = new Counter({
    name: `${prefix}reconcile_rows_repaired_total`,
    help: 'Rows written by full reads although their sequences had not moved, by table (friends, friend_tags).',
    labelNames: ['table'] as const,
    registers,
  });
  const discovered = new Counter({
    name: `${prefix}discovered_accounts_total`,
    help: 'Accounts added to tim.accounts by discovery (SYNC_DISCOVER).',
    registers,
  });
  const discoveryCapped = new Counter({
    name: `${prefix}discovery_capped_total`,
    help: 'Friend ids discovery left out because tim.accounts reached SYNC_DISCOVER_MAX_ACCOUNTS.',
    registers,
  });
  const ready = new Gauge({
    name: `${prefix}ready`,
    help: '1 when the last readiness check passed, else 0.',
    registers,
  });
  ready.set(0);
  const claimsPaused = new Gauge({
    name: `${prefix}claims_paused`,
    help: '1 while claiming is paused because calls to Tencent do not get through (a probe account tries them with backoff), else 0.',
    registers,
  });
  claimsPaused.set(0);
  const claimPauses = new Counter({
    name: `${prefix}claim_pauses_total`,
    help: 'Pauses of claiming because calls to Tencent did not get through, by reason (lockout: 70050; refused: HTTP 4xx or the app refused in the IM console; unreachable: HTTP 5xx, network errors, timeouts).',
    labelNames: ['reason'] as const,
    registers,
  });
  let pausedFor: string | undefined;

  // A collector that throws would fail the whole scrape, so every collector catches and counts here.
  const collectErrors = new Counter({
    name: `${prefix}metrics_collect_errors_total`,
    help: 'Scrape-time collectors that failed or timed out; their gauges kept their last values.',
    labelNames: ['source'] as const,
    registers,
    // Waits for the accounts refresh so that a failure shows in the same scrape, not the next one.
    collect: () => refreshAccounts(),
  });

  if (opts.limiterQueue) {
    const limiterQueue = opts.limiterQueue;
    collectErrors.inc({ source: 'limiter' }, 0);
    new Gauge({
      name: `${prefix}limiter_queue_depth`,
      help: 'Calls waiting in the rate limiter.',
      registers,
      collect() {
        try {
          this.set(limiterQueue());
        } catch {
          collectErrors.inc({ source: 'limiter' });
        }
      },
    });
  }

  if (opts.rateComplaints) {
    const rateComplaints = opts.rateComplaints;
    new Counter({
      name: `${prefix}rate_complaints_total`,
      help:
        'Bursts of "too frequent" answers (60007 and kin) the limiter counted, by verdict: slip (alone, ' +
        'the rate is kept) or slowdown (one of a run: another client shares the quota, the rate is cut).',
      labelNames: ['verdict'] as const,
      registers,
      collect() {
        // The limiter keeps the counts (in the call thread, when there is one): copy them.
        const c = rateComplaints();
        this.reset();
        this.inc({ verdict: 'slip' }, c.slips);
        this.inc({ verdict: 'slowdown' }, c.slowDowns);
      },
    });
  }

  if (opts.budget) {
    const budget = opts.budget;
    new Gauge({
      name: `${prefix}call_budget_per_second`,
      help: 'TIM_RATE_LIMIT: calls per second allowed for the whole app, shared by every replica.',
      registers,
      collect() {
        this.set(budget().limitPerSecond);
      },
    });
    new Gauge({
      name: `${prefix}call_share_per_second`,
      help: "This replica's share of the call budget; 0 before its first settled decision and while it is fenced (heartbeats failing).",
      registers,
      collect() {
        this.set(budget().sharePerSecond);
      },
    });
    new Gauge({
      name: `${prefix}replicas`,
      help: 'Live replicas sharing the call budget, as this replica last saw them in tim.replicas.',
      registers,
      collect() {
        this.set(budget().replicas);
      },
    });
  }

  if (opts.rowBudget) {
    const rowBudget = opts.rowBudget;
    new Gauge({
      name: `${prefix}row_budget`,
      help: 'SYNC_ROW_BUDGET: friends that pulls in flight and applies waiting may hold in memory at once.',
      registers,
    }).set(rowBudget.limit);
    new Gauge({
      name: `${prefix}rows_held`,
      help:
        'Friends held in memory now by pulls in flight and applies waiting (reserved before a page ' +
        'comes in); above row_budget only by the oldest account in flight.',
      registers,
      collect() {
        this.set(rowBudget.held);
      },
    });
    new Gauge({
      name: `${prefix}pulls_waiting_for_rows`,
      help: 'Pulls waiting for room in the row budget before their next page call.',
      registers,
      collect() {
        this.set(rowBudget.waiting);
      },
    });
  }

  if (opts.syncIntervalSeconds !== undefined) {
    new Gauge({
      name: `${prefix}sync_interval_seconds`,
      help: 'SYNC_INTERVAL: how often an account is re-checked; compare sync_lag_seconds with it.',
      registers,
    }).set(opts.syncIntervalSeconds);
  }

  const collectAccounts = opts.collectAccounts;
  let accounts: Gauge<'status'> | undefined;
  let lag: Gauge | undefined;
  let reconcileBacklog: Gauge | undefined;
  if (collectAccounts) {
    collectErrors.inc({ source: 'accounts' }, 0);
    accounts = new Gauge({
      name: `${prefix}accounts`,
      help: 'Mirrored accounts by status.',
      labelNames: ['status'] as const,
      registers,
      collect: () => refreshAccounts(),
    });
    lag = new Gauge({
      name: `${prefix}sync_lag_seconds`,
      help: 'How long the oldest due account has been waiting (0 when none is due).',
      registers,
      collect: () => refreshAccounts(),
    });
    reconcileBacklog = new Gauge({
      name: `${prefix}reconcile_backlog`,
      help: 'Active accounts whose reconciliation (a full read) is overdue.',
      registers,
      collect: () => refreshAccounts(),
    });
  }

  // Several gauges read the same summary, and Prometheus (or several of them) may scrape often:
  // one query serves every collector of a scrape and every scrape within `cacheMs`. A failure is
  // cached too, so a database that is down is not asked again on every scrape.
  let lastAttemptAt = Number.NEGATIVE_INFINITY;
  let inFlight: Promise<void> | undefined;
  function refreshAccounts(): Promise<void> {
    if (!collectAccounts) return Promise.resolve();
    if (inFlight) return inFlight;
    if (now() - lastAttemptAt < cacheMs) return Promise.resolve();
    const attempt = withTimeout(collectAccounts, timeoutMs).then(
      (summary) => {
        accounts?.reset();
        for (const [status, n] of Object.entries(summary.byStatus)) accounts?.set({ status }, n);
        lag?.set(summary.lagSeconds);
        if (summary.reconcileBacklog !== undefined) reconcileBacklog?.set(summary.reconcileBacklog);
      },
      () => {
        collectErrors.inc({ source: 'accounts' });
      },
    );
    const settled = attempt.finally(() => {
      lastAttemptAt = now();
      if (inFlight === settled) inFlight = undefined;
    });
    inFlight = settled;
    return settled;
  }

  collectDefaultMetrics({ register: registry, prefix });

  return {
    registry,
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
    observeCall(e) {
      calls.inc({
        api: e.api,
        outcome: e.outcome,
        error_code: e.errorCode === undefined ? '' : String(e.errorCode),
      });
      callDuration.observe({ api: e.api }, e.durationMs / 1000);
    },
    observeAccount(o) {
      accountSyncs.inc({ result: o.result });
      accountSyncDuration.observe(o.durationMs / 1000);
      if (o.applyMs !== undefined) applyDuration.observe(o.applyMs / 1000);
      friendRows.inc(o.friendsWritten);
      tagRows.inc(o.tagsWritten);
      if (o.reconciled && (o.result === 'changed' || o.result === 'unchanged')) reconciles.inc();
      if (o.drift) {
        reconcileDrift.inc();
        rowsRepaired.inc({ table: 'friends' }, o.drift.friendRows);
        rowsRepaired.inc({ table: 'friend_tags' }, o.drift.tagRows);
      }
      if (o.discovery) {
        discovered.inc(o.discovery.added);
        discoveryCapped.inc(o.discovery.capped);
      }
    },
    setReady(isReady) {
      ready.set(isReady ? 1 : 0);
    },
    setPaused(reason) {
      if (reason !== undefined && pausedFor === undefined) claimPauses.inc({ reason });
      pausedFor = reason;
      claimsPaused.set(reason === undefined ? 0 : 1);
    },
  };
}

/** Runs `fn`, rejecting after `ms`; a synchronous throw becomes a rejection too. */
async function withTimeout<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([fn(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The command label of {@link CallbackMetrics}: one we act on, `other` (ignored), or `none` (unreadable). */
export type CallbackCommandLabel =
  | 'Sns.CallbackFriendAdd'
  | 'Sns.CallbackFriendDelete'
  | 'Sns.CallbackBlackListAdd'
  | 'other'
  | 'none';

/**
 * What became of one webhook callback: `marked` (accounts marked before the answer), `queued`
 * (answered before the database write finished; it goes on in the background), `dropped` (the
 * mark queue was full), `ignored` (a command we do not act on), or why it was refused.
 */
export type CallbackOutcome =
  | 'marked'
  | 'queued'
  | 'dropped'
  | 'ignored'
  | 'bad_request'
  | 'unauthorized'
  | 'stale'
  | 'wrong_app'
  | 'too_large';

/** The webhook receiver's metrics (issue #6), on the registry of a {@link Metrics}. */
export interface CallbackMetrics {
  /** Counts one callback by command and outcome. */
  observeCallback(command: CallbackCommandLabel, outcome: CallbackOutcome): void;
  /** Records seconds from a callback received to the end of its account's next sync. */
  observeCallbackToSync(seconds: number): void;
  /** Counts a failed write of resync marks (retried). */
  observeMarkFailure(): void;
}

/** Up to the regular re-check interval: webhooks aim at about a second. */
const CALLBACK_TO_SYNC_BUCKETS_SECONDS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600];

/**
 * Adds the webhook receiver's metrics to `metrics.registry`: `callbacks_total{command,outcome}`,
 * `callback_to_sync_seconds`, `callback_mark_failures_total` and, with `pendingMarks`,
 * `callback_pending_marks`. Labels are fixed strings, never ids or anything a caller sent.
 */
export function createCallbackMetrics(
  metrics: Metrics,
  opts: { prefix?: string; pendingMarks?: () => number } = {},
): CallbackMetrics {
  const prefix = opts.prefix ?? 'tim_mirror_';
  const registers = [metrics.registry];
  const callbacks = new Counter({
    name: `${prefix}callbacks_total`,
    help: 'Webhook callbacks received, by command and outcome.',
    labelNames: ['command', 'outcome'] as const,
    registers,
  });
  const toSync = new Histogram({
    name: `${prefix}callback_to_sync_seconds`,
    help: "From a callback received to the end of its account's next sync that started after it (this replica's syncs only).",
    buckets: CALLBACK_TO_SYNC_BUCKETS_SECONDS,
    registers,
  });
  const markFailures = new Counter({
    name: `${prefix}callback_mark_failures_total`,
    help: 'Failed writes of resync marks from callbacks; they are retried with backoff.',
    registers,
  });
  const pendingMarks = opts.pendingMarks;
  if (pendingMarks) {
    new Gauge({
      name: `${prefix}callback_pending_marks`,
      help: 'Accounts named by callbacks and not yet marked for resync in the database.',
      registers,
      collect() {
        this.set(pendingMarks());
      },
    });
  }
  return {
    observeCallback: (command, outcome) => callbacks.inc({ command, outcome }),
    observeCallbackToSync: (seconds) => toSync.observe(seconds),
    observeMarkFailure: () => markFailures.inc(),
  };
}
