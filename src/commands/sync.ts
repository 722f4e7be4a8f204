/**
 * `friend-mirror sync` (one pass) and `friend-mirror run` (passes until stopped).
 */
import type { Kysely } from 'kysely';
import { passDepsFrom, timClientFrom } from '../app.js';
import type { SyncConfig, TimConfig } from '../config.js';
import { type AccountSelection, selectAccounts, unknownAccountIds } from '../db/accounts.js';
import type { Database } from '../db/schema.js';
import { sleep } from '../sync/limiter.js';
import { type PassDeps, type PassSummary, runPass } from '../sync/pass.js';
import { TimError } from '../tim/errors.js';
import { type CommandContext, EXIT } from './context.js';

/** One line per pass: what a person running `sync` wants to see. */
export function formatSummary(s: PassSummary): string {
  const secs = s.elapsedMs / 1000;
  return (
    `synced ${s.done}/${s.total} account(s) in ${secs.toFixed(1)}s: ${s.changed} changed, ${s.unchanged} unchanged, ` +
    `${s.missing} missing, ${s.failed} failed${s.skipped ? `, ${s.skipped} not started` : ''}; ` +
    `${s.calls} calls (${(s.calls / Math.max(secs, 0.001)).toFixed(1)}/s), ` +
    `${s.friendsWritten} friend rows and ${s.tagsWritten} tag rows written`
  );
}

/** Logs progress every `everyMs` while a pass runs. */
export function progressLogger(ctx: CommandContext, everyMs = 5_000): PassDeps['onAccount'] {
  let last = performance.now();
  return (outcome, p) => {
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
  const client = timClientFrom(cfg.tim, cfg.sync);
  try {
    const deps = passDepsFrom(db, client, cfg.tim, cfg.sync, ctx.log);
    const summary = await runPass({ ...deps, signal: ctx.signal, onAccount: progressLogger(ctx) }, accounts);
    await deps.limiter.stop();
    ctx.out(formatSummary(summary));
    if (summary.stoppedBy) ctx.out(`stopped early: ${summary.stoppedBy.message}`);
    return exitCodeOf(summary);
  } finally {
    await client.close();
  }
}

/**
 * `run`: syncs due accounts pass after pass until SIGTERM/SIGINT. Between passes it waits for the
 * next account to come due (at most `idleMs`). A pass stopped by a configuration error ends the
 * daemon with exit 2, so a supervisor shows the failure instead of a silent loop.
 */
export async function runCommand(
  ctx: CommandContext,
  db: Kysely<Database>,
  cfg: { tim: TimConfig; sync: SyncConfig },
  idleMs = 1_000,
): Promise<number> {
  const client = timClientFrom(cfg.tim, cfg.sync);
  const deps = passDepsFrom(db, client, cfg.tim, cfg.sync, ctx.log);
  ctx.log.info(
    { rateLimit: cfg.tim.rateLimitPerSecond, concurrency: cfg.sync.concurrency },
    'daemon started',
  );
  try {
    while (!ctx.signal.aborted) {
      let accounts: Awaited<ReturnType<typeof selectAccounts>>;
      try {
        accounts = await selectAccounts(db, { kind: 'due' });
      } catch (err) {
        ctx.log.error(
          { err: { message: (err as Error).message } },
          'cannot read due accounts; retrying in 5 s',
        );
        await sleep(5_000, ctx.signal).catch(() => {});
        continue;
      }
      if (accounts.length === 0) {
        await sleep(idleMs, ctx.signal).catch(() => {});
        continue;
      }
      const summary = await runPass(
        { ...deps, signal: ctx.signal, onAccount: progressLogger(ctx) },
        accounts,
      );
      ctx.log.info({ ...summary, stoppedBy: summary.stoppedBy?.message }, formatSummary(summary));
      if (summary.stoppedBy instanceof TimError && summary.stoppedBy.retryClass === 'fatal-config') {
        ctx.log.fatal(`stopping: ${summary.stoppedBy.message}`);
        return EXIT.usage;
      }
    }
    ctx.log.info('daemon stopped');
    return EXIT.ok;
  } finally {
    await deps.limiter.stop();
    await client.close();
  }
}
