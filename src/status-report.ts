/**
 * The data behind the status page (`GET /status.json`): this replica's budget and call rate, the
 * database overview, webhook outcomes and readiness, in one JSON object.
 */
import type { Kysely } from 'kysely';
import { type Overview, readOverview } from './db/overview.js';
import type { Database } from './db/schema.js';
import type { Metrics } from './metrics.js';
import type { CallBucket, CallHistory } from './sync/call-history.js';

/** What `GET /status.json` answers. */
export interface StatusReport {
  /** ISO time the report was made. */
  generatedAt: string;
  ready: boolean;
  /** `SYNC_INTERVAL` in seconds: a sweep's length. */
  intervalSeconds: number;
  replica: {
    id: string;
    /** `TIM_RATE_LIMIT`: the app's quota, over every replica. */
    rateLimit: number;
    /** This replica's share of it now. */
    share: number;
    peers: number;
    /** Calls this replica made per second over the last minute. */
    callsPerSecond: number;
  };
  calls: { bucketSeconds: number; buckets: CallBucket[] };
  webhooks: { enabled: boolean; outcomes: Record<string, number> };
  /** Null when the database could not be read; `overviewError` says why. */
  overview: Overview | null;
  overviewError?: string;
}

/** Dependencies of {@link createStatusReport}. */
export interface StatusReportDeps {
  db: Kysely<Database>;
  replicaId: string;
  rateLimit: number;
  intervalMs: number;
  /** The budget's decision now. */
  budget: () => { share: number; peers: number };
  calls: CallHistory;
  metrics: Metrics;
  webhooksEnabled: boolean;
  ready: () => Promise<boolean>;
  /** How long a database overview is reused. Default 5,000 ms: a page per tab polls every 5 s. */
  cacheMs?: number;
  /** Monotonic milliseconds; injectable for tests. */
  now?: () => number;
}

/**
 * Returns the function that makes a report. The overview is read at most once per `cacheMs`, so
 * several open pages cost one set of queries, and two reports never read it at once.
 */
export function createStatusReport(deps: StatusReportDeps): () => Promise<StatusReport> {
  const cacheMs = deps.cacheMs ?? 5_000;
  const now = deps.now ?? (() => performance.now());
  let cached: { at: number; value: Promise<Overview> } | undefined;

  const overview = (): Promise<Overview> => {
    if (!cached || now() - cached.at >= cacheMs) {
      cached = { at: now(), value: readOverview(deps.db, { intervalMs: deps.intervalMs }) };
      // A failure is reported once, then read again on the next request.
      cached.value.catch(() => {
        cached = undefined;
      });
    }
    return cached.value;
  };

  return async () => {
    const [ov, ready, outcomes] = await Promise.all([
      overview().then(
        (value) => ({ value }),
        (err: unknown) => ({ error: err instanceof Error ? err.message : String(err) }),
      ),
      deps.ready().catch(() => false),
      callbackOutcomes(deps.metrics),
    ]);
    const { share, peers } = deps.budget();
    return {
      generatedAt: new Date().toISOString(),
      ready,
      intervalSeconds: deps.intervalMs / 1000,
      replica: {
        id: deps.replicaId,
        rateLimit: deps.rateLimit,
        share,
        peers,
        callsPerSecond: deps.calls.ratePerSecond(60_000),
      },
      calls: { bucketSeconds: deps.calls.bucketMs / 1000, buckets: deps.calls.series() },
      webhooks: { enabled: deps.webhooksEnabled, outcomes },
      ...('value' in ov ? { overview: ov.value } : { overview: null, overviewError: ov.error }),
    };
  };
}

/** Callbacks by outcome, summed over commands, from the `callbacks_total` counter. */
async function callbackOutcomes(metrics: Metrics): Promise<Record<string, number>> {
  const metric = metrics.registry.getSingleMetric('tim_mirror_callbacks_total');
  if (!metric) return {};
  const out: Record<string, number> = {};
  for (const v of (await metric.get()).values) {
    const outcome = String(v.labels['outcome'] ?? 'unknown');
    out[outcome] = (out[outcome] ?? 0) + v.value;
  }
  return out;
}
