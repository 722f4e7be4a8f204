/**
 * `friend-mirror demo`: the whole path on the built-in simulator, with embedded PostgreSQL when
 * DATABASE_URL is unset. Generates an app, mirrors it, changes ~5% of it, mirrors again, proves the
 * mirror equals the source and answers four analytics questions from the analytics views.
 */
import { fileURLToPath } from 'node:url';
import { type Kysely, sql } from 'kysely';
import { passDepsFrom, type TimCalls, timCallsFrom } from '../app.js';
import { loadSyncConfig, loadTimConfig } from '../config.js';
import { addAccounts, selectAccounts } from '../db/accounts.js';
import { migrateToLatest } from '../db/migrate.js';
import { createDb } from '../db/pool.js';
import type { Database } from '../db/schema.js';
import type { AccountTruth } from '../simulator/index.js';
import { controlRequest, type SimulatorProcess, spawnSimulator } from '../simulator/process.js';
import { type PassSummary, runPass } from '../sync/pass.js';
import { diffAccount } from '../verify.js';
import { type CommandContext, EXIT } from './context.js';
import { formatSummary } from './sync.js';

const DEMO_APP_ID = 1400000000;
const DEMO_SECRET = 'demo-secret-key';

/** Runs the demo; returns 0 when both passes succeeded and the mirror equals the source. */
export async function demoCommand(ctx: CommandContext): Promise<number> {
  const { out } = ctx;
  const accounts = Number(ctx.env.DEMO_ACCOUNTS ?? 1000);
  let embedded: { url: string; stop(): Promise<void> } | undefined;
  let url = ctx.env.DATABASE_URL;
  if (!url) {
    out('» starting embedded PostgreSQL (DATABASE_URL is unset) …');
    const { startEmbeddedPostgres } = await import('../db/embedded.js');
    embedded = await startEmbeddedPostgres();
    url = embedded.url;
  } else {
    out('» using DATABASE_URL (the demo adds simulated accounts to its tim schema)');
  }
  out(`» starting the simulator (friend-mirror simulate) with ${accounts} accounts, 0–3,000 friends each …`);
  const sim = await startSimulatorProcess(ctx, accounts);
  const baseUrl = sim.baseUrl;
  out(`» simulator listening at ${baseUrl} (its own process; page size 500, 200 calls/s, 10–30 ms latency)`);

  const env: Record<string, string | undefined> = {
    ...ctx.env,
    TIM_SDKAPPID: String(DEMO_APP_ID),
    TIM_SECRET_KEY: DEMO_SECRET,
    TIM_BASE_URL: baseUrl,
  };
  delete env.TIM_USERSIG;
  const tim = loadTimConfig(env);
  const sync = loadSyncConfig(env);
  const db = createDb(url, { maxConnections: 16 });
  // One client and limiter for both passes, like a real process: the second pass's first second
  // knows the calls the first pass made in its last.
  const calls = timCallsFrom(tim, sync, ctx.log);
  try {
    const ids = (await controlRequest<{ accounts: string[] }>(baseUrl, 'GET', '/__sim/accounts')).accounts;
    await migrateToLatest(db);
    await addAccounts(db, ids);
    out(`» migrations applied; ${ids.length} accounts added`);

    const first = await pass(ctx, db, calls, sync, 'first pass (full)');
    const { changed } = await controlRequest<{ changed: string[] }>(baseUrl, 'POST', '/__sim/mutate', {
      random: { fraction: 0.05, seed: 7 },
    });
    out(
      `» changed ${changed.length} accounts at the source (friends added/removed, remarks, groups, custom tags)`,
    );
    const second = await pass(ctx, db, calls, sync, 'second pass (incremental)');
    out('');
    out('pass         accounts  changed  unchanged  calls  friend rows  tag rows  seconds');
    for (const [name, s] of [
      ['full', first],
      ['incremental', second],
    ] as const) {
      out(
        `${name.padEnd(12)} ${String(s.done).padStart(8)} ${String(s.changed).padStart(8)} ${String(s.unchanged).padStart(10)} ` +
          `${String(s.calls).padStart(6)} ${String(s.friendsWritten).padStart(12)} ${String(s.tagsWritten).padStart(9)} ` +
          `${(s.elapsedMs / 1000).toFixed(1).padStart(8)}`,
      );
    }

    out('');
    out('» checking the mirror against the simulator, friend by friend …');
    let equal = 0;
    const problems: string[] = [];
    for (const id of ids) {
      const truth = await controlRequest<AccountTruth>(
        baseUrl,
        'GET',
        `/__sim/truth?account=${encodeURIComponent(id)}`,
      );
      const diffs = await diffAccount(db, id, truth.friends, 3);
      if (diffs.length === 0) equal++;
      else problems.push(...diffs);
    }
    out(`  mirror equals the source for ${equal}/${ids.length} accounts`);
    for (const p of problems.slice(0, 10)) out(`  ${p}`);

    await analytics(ctx, db);
    const ok = first.failed === 0 && second.failed === 0 && problems.length === 0;
    out('');
    out(
      ok
        ? '✓ demo finished: try the queries in docs/analytics.md against your own mirror'
        : '✗ demo found problems (above)',
    );
    return ok ? EXIT.ok : EXIT.failed;
  } finally {
    await calls.close();
    await db.destroy();
    sim.child.kill('SIGTERM');
    await embedded?.stop();
  }
}

/**
 * Runs the simulator as its own process, as Tencent would be: the mirror's numbers then show the
 * mirror's own cost, not the simulator's CPU competing with it on the same event loop.
 */
async function startSimulatorProcess(ctx: CommandContext, accounts: number): Promise<SimulatorProcess> {
  const sim = await spawnSimulator(fileURLToPath(new URL('../cli.js', import.meta.url)), {
    SIM_PORT: '0',
    SIM_ACCOUNTS: String(accounts),
    SIM_SEED: '20261125',
    SIM_LATENCY_MS: '20',
    SIM_RATE_LIMIT: '200',
    TIM_SDKAPPID: String(DEMO_APP_ID),
    TIM_SECRET_KEY: DEMO_SECRET,
    LOG_LEVEL: 'warn',
  });
  ctx.signal.addEventListener('abort', () => sim.child.kill('SIGTERM'), { once: true });
  return sim;
}

async function pass(
  ctx: CommandContext,
  db: Kysely<Database>,
  calls: TimCalls,
  sync: ReturnType<typeof loadSyncConfig>,
  label: string,
): Promise<PassSummary> {
  ctx.out(`» ${label} …`);
  const deps = passDepsFrom(db, calls, sync, ctx.log);
  let lastPrint = performance.now();
  const summary = await runPass(
    {
      ...deps,
      signal: ctx.signal,
      onAccount: (_o, p) => {
        const now = performance.now();
        if (now - lastPrint < 1000) return;
        lastPrint = now;
        ctx.out(
          `  ${p.done}/${p.total} accounts, ${p.calls} calls (${(p.calls / (p.elapsedMs / 1000)).toFixed(0)}/s), ` +
            `${p.friendsWritten} friend rows written`,
        );
      },
    },
    await selectAccounts(db, { kind: 'all' }),
  );
  ctx.out(`  ${formatSummary(summary)}`);
  return summary;
}

/** A few questions analysts ask, answered from the analytics views (docs/analytics.md). */
async function analytics(ctx: CommandContext, db: Kysely<Database>): Promise<void> {
  ctx.out('');
  ctx.out('» analytics: the five accounts with the most friends (tim.friend_counts)');
  const top = await sql<{ account_id: string; friend_count: number }>`
    SELECT account_id, friend_count FROM tim.friend_counts ORDER BY friend_count DESC, account_id LIMIT 5`.execute(
    db,
  );
  for (const r of top.rows) ctx.out(`  ${JSON.stringify(r.account_id).padEnd(24)} ${r.friend_count}`);

  ctx.out('» analytics: how friendships were added (tim.add_sources, Tag_SNS_IM_AddSource)');
  const sources = await sql<{ add_source: string | null; friends: string; share: string }>`
    SELECT add_source, friends, share FROM tim.add_sources ORDER BY friends DESC LIMIT 6`.execute(db);
  for (const r of sources.rows)
    ctx.out(
      `  ${String(r.add_source).padEnd(28)} ${String(r.friends).padStart(8)}  ${(Number(r.share) * 100).toFixed(1)}%`,
    );

  ctx.out('» analytics: mutual friendships (tim.mutual_friendships, both directions mirrored)');
  const mutual = await sql<{ pairs: string }>`SELECT count(*) AS pairs FROM tim.mutual_friendships`.execute(
    db,
  );
  ctx.out(`  ${mutual.rows[0]?.pairs} mutual pairs`);

  ctx.out('» analytics: changes the second pass observed (tim.daily_friend_changes, from tim.friend_events)');
  const changes = await sql<{ day: string; added: string; removed: string; changed: string }>`
    SELECT day::text AS day, added, removed, changed FROM tim.daily_friend_changes ORDER BY day DESC LIMIT 1`.execute(
    db,
  );
  const c = changes.rows[0];
  ctx.out(c ? `  ${c.day}: ${c.added} added, ${c.removed} removed, ${c.changed} changed` : '  none yet');
}
