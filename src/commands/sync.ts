/**
 * `friend-mirror sync` (one pass) and `friend-mirror run` (passes until stopped).
 */
import { hostname } from 'node:os';
import type { Kysely } from 'kysely';
import { passDepsFrom, timCallsFrom } from '../app.js';
import type { SyncConfig, TimConfig } from '../config.js';
import { type AccountSelection, selectAccounts, unknownAccountIds } from '../db/accounts.js';
import { claimAccount } from '../db/leases.js';
import { heartbeat, leaveReplicas } from '../db/replicas.js';
import type { Database } from '../db/schema.js';
import { ReplicaBudget } from '../sync/budget.js';
import { sleep } from '../sync/limiter.js';
import { createOutcomeReporter, type OutcomeReporterOptions } from '../sync/outcome-report.js';
import { type PassDeps, type PassProgress, type PassSummary, runPass } from '../sync/pass.js';
import { TimError } from '../tim/errors.js';
import { type CommandContext, EXIT } from './context.js';
import { formatEta } from './progress-line.js';

/** One line per pass: what a person running `sync` wants to see. */
export function formatSummary(s: PassSummary): string {
  const secs = s.elapsedMs / 1000;
  return (
    `synced ${s.done}/${s.total} account(s) in ${secs.toFixed(1)}s: ${s.changed} changed, ${s.unchanged} unchanged, ` +
    `${s.missing} missing, ${s.failed} failed${s.skipped ? `, ${s.skipped} not started` : ''}` +
    `${s.busy ? `, ${s.busy} skipped (being synced by a daemon)` : ''}; ` +
    `${s.calls} calls (${(s.calls / Math.max(secs, 0.001)).toFixed(1)}/s), ` +
    `${s.friendsWritten} friend rows and ${s.tagsWritten} tag rows written`
  );
}

/** The terminal's progress line: `sync 120/400 accounts · 183.2 calls/s · 45,120 rows written · ETA 12s`. */
export function progressText(p: PassProgress): string {
  const secs = Math.max(p.elapsedMs / 1000, 0.001);
  const accountsPerSecond = p.done / secs;
  const eta =
    p.done === p.total ? 0 : accountsPerSecond > 0 ? (p.total - p.done) / accountsPerSecond : Number.NaN;
  return (
    `sync ${p.done}/${p.total} accounts · ${(p.calls / secs).toFixed(1)} calls/s · ` +
    `${(p.friendsWritten + p.tagsWritten).toLocaleString('en-US')} rows written · ETA ${formatEta(eta)}` +
    `${p.failed + p.missing > 0 ? ` · ${p.failed} failed, ${p.missing} missing` : ''}`
  );
}

/** Logs progress every `everyMs` while a pass runs; on a terminal, draws the progress line instead. */
export function progressLogger(
  ctx: CommandContext,
  everyMs = 5_000,
  report: OutcomeReporterOptions = {},
): PassDeps['onAccount'] {
  let last = performance.now();
  const reportExtras = createOutcomeReporter(ctx.log, report);
  return (outcome, p) => {
    reportExtras(outcome);
    if (outcome.result === 'failed' || outcome.result === 'missing') {
      ctx.log.warn(
        { account: outcome.accountId, result: outcome.result },
        `account sync ${outcome.result}: ${outcome.error?.message ?? ''}`,
      );
    } else {
      ctx.log.debug(
        { account: outcome.accountId, result: outcome.result, calls: outcome.calls },
        'account synced',
      );
    }
    if (ctx.progress) {
      ctx.progress.update(progressText(p), p.done === p.total);
      return;
    }
    const now = performance.now();
    if (now - last >= everyMs) {
      last = now;
      ctx.log.info(
        {
          done: p.done,
          total: p.total,
          calls: p.calls,
          callsPerSecond: +(p.calls / (p.elapsedMs / 1000)).toFixed(1),
        },
        'sync progress',
      );
    }
  };
}

/** Exit code of a finished pass: 2 when Tencent said the configuration is wrong, 1 on any failure. */
export function exitCodeOf(s: PassSummary): number {
  if (s.stoppedBy instanceof TimError && s.stoppedBy.retryClass === 'fatal-config') return EXIT.usage;
  return s.failed > 0 || s.missing > 0 || s.stoppedBy ? EXIT.failed : EXIT.ok;
}

/** `sync [--all] [<id...>]`. */
export async function syncCommand(
  ctx: CommandContext,
  db: Kysely<Database>,
  cfg: { tim: TimConfig; sync: SyncConfig },
  opts: { all: boolean; ids: string[] },
): Promise<number> {
  const selection: AccountSelection =
    opts.ids.length > 0 ? { kind: 'ids', ids: opts.ids } : opts.all ? { kind: 'all' } : { kind: 'due' };
  if (selection.kind === 'ids') {
    const unknown = await unknownAccountIds(db, opts.ids);
    for (const id of unknown)
      ctx.out(`account ${JSON.stringify(id)} is not mirrored; add it with: accounts add`);
    if (unknown.length === opts.ids.length) return EXIT.failed;
  }
  const accounts = await selectAccounts(db, selection);
  // A one-shot pass takes its share of the budget like a daemon replica, so running `sync` next to
  // daemons never pushes the app over TIM_RATE_LIMIT: it starts at 0 until the budget says more.
  const calls = timCallsFrom(cfg.tim, cfg.sync, ctx.log, { ratePerSecond: 0 });
  const owner = `sync-${hostname()}-${process.pid}`;
  const deps = passDepsFrom(db, calls, cfg.sync, ctx.log);
  const budget = new ReplicaBudget({
    replicaId: owner,
    limit: cfg.tim.rateLimitPerSecond,
    heartbeat: (peers, callsPerSecond) =>
      heartbeat(db, {
        replicaId: owner,
        hostname: hostname(),
        pid: process.pid,
        ttlMs: 5_000,
        peers,
        callsPerSecond,
      }),
    setRate: (rate) => deps.limiter.setRate(rate),
    now: () => performance.now(),
    sleep,
    fastStartWhenAlone: true,
    onChange: (rate, peers) =>
      ctx.log.info({ rate, peers }, `call budget share: ${rate}/s with ${peers} replica(s)`),
  });
  const stopBudget = new AbortController();
  const budgetRun = budget.run(stopBudget.signal);
  try {
    const summary = await runPass(
      {
        ...deps,
        signal: ctx.signal,
        onAccount: progressLogger(ctx, 5_000, { discoverMaxAccounts: cfg.sync.discoverMaxAccounts }),
        claim: (id) =>
          claimAccount(db, id, {
            owner,
            leaseMs: cfg.sync.leaseMs,
            reconcile: { intervalMs: cfg.sync.reconcileIntervalMs },
          }),
      },
      accounts,
    );
    ctx.progress?.done();
    ctx.out(formatSummary(summary));
    if (summary.stoppedBy) ctx.out(`stopped early: ${summary.stoppedBy.message}`);
    return exitCodeOf(summary);
  } finally {
    ctx.progress?.done();
    stopBudget.abort();
    await budgetRun;
    await leaveReplicas(db, owner).catch(() => {});
    await calls.close();
  }
}
