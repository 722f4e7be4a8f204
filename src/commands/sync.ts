/**
 * `friend-mirror sync`: one pass over the due, all or named accounts, and its report.
 */
import type { Kysely } from 'kysely';
import type { SyncConfig, TimConfig } from '../config.js';
import { openDaemon } from '../daemon.js';
import { type AccountSelection, selectAccounts, unknownAccountIds } from '../db/accounts.js';
import { claimAccount } from '../db/leases.js';
import type { Database } from '../db/schema.js';
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
    `${s.busy ? `, ${s.busy} NOT synced (still held by a running replica)` : ''}` +
    `${s.waited ? `, ${s.waited} of them after waiting for a running replica to finish` : ''}; ` +
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

/**
 * Exit code of a finished pass: 2 when Tencent said the configuration is wrong, 1 on any failure
 * or any account not synced (0 means every selected account was synced by this command).
 */
export function exitCodeOf(s: PassSummary): number {
  if (s.stoppedBy instanceof TimError && s.stoppedBy.retryClass === 'fatal-config') return EXIT.usage;
  return s.failed > 0 || s.missing > 0 || s.busy > 0 || s.stoppedBy ? EXIT.failed : EXIT.ok;
}

/** Past SYNC_LEASE, how much longer `sync` waits for an account a running replica holds. */
const BUSY_WAIT_MARGIN_MS = 2_000;
/** How long a pass waits to be registered before it claims anyway (a heartbeat keeps trying). */
const REGISTER_WAIT_MS = 10_000;
/** Accounts named in the message about accounts not synced; the rest are counted. */
const BUSY_LISTED = 20;

/** Which accounts were left to a running replica, held by whom, and what to do. */
async function describeBusy(db: Kysely<Database>, ids: readonly string[], waitedMs: number): Promise<string> {
  const rows = await db
    .selectFrom('tim.accounts')
    .select(['account_id', 'lease_owner'])
    .where('account_id', 'in', ids.slice(0, BUSY_LISTED))
    .orderBy('account_id')
    .execute()
    .catch(() => []);
  const listed = rows.map((r) => `${r.account_id} (${r.lease_owner ?? 'released just now'})`).join(', ');
  const more = ids.length > BUSY_LISTED ? ` and ${ids.length - BUSY_LISTED} more` : '';
  return (
    `${ids.length} account(s) not synced: still leased by a running replica after waiting ${(waitedMs / 1000).toFixed(0)}s ` +
    `(SYNC_LEASE plus a margin; a sync that long is stuck): ${listed}${more}. Check that replica's log, or run sync again`
  );
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
  // A one-shot pass takes its share of the budget and registers like a daemon replica: running
  // `sync` next to daemons never pushes the app over TIM_RATE_LIMIT, and if this process dies its
  // leases are free at once.
  const daemon = openDaemon(ctx, db, cfg, { oneShot: true });
  daemon.start();
  try {
    await daemon.waitRegistered(REGISTER_WAIT_MS, ctx.signal);
    const summary = await runPass(
      {
        ...daemon.passDeps,
        signal: ctx.signal,
        // A live replica's lease ends within SYNC_LEASE of its claim, which came before we saw it.
        busyWaitMs: cfg.sync.leaseMs + BUSY_WAIT_MARGIN_MS,
        onAccount: progressLogger(ctx, 5_000, { discoverMaxAccounts: cfg.sync.discoverMaxAccounts }),
        claim: (id) =>
          claimAccount(db, id, {
            owner: daemon.replicaId,
            leaseMs: cfg.sync.leaseMs,
            reconcile: { intervalMs: cfg.sync.reconcileIntervalMs },
          }),
      },
      accounts,
    );
    ctx.progress?.done();
    ctx.out(formatSummary(summary));
    if (daemon.passDeps.rowBudget) {
      const { limit, peak } = daemon.passDeps.rowBudget;
      ctx.log.info(
        { rowBudget: limit, peakRowsHeld: peak },
        `friends held in memory at once: at most ${peak} (SYNC_ROW_BUDGET ${limit})`,
      );
    }
    if (summary.stoppedBy) ctx.out(`stopped early: ${summary.stoppedBy.message}`);
    if (summary.busy > 0)
      ctx.out(await describeBusy(db, summary.busyIds, cfg.sync.leaseMs + BUSY_WAIT_MARGIN_MS));
    return exitCodeOf(summary);
  } finally {
    ctx.progress?.done();
    await daemon.stop();
  }
}
