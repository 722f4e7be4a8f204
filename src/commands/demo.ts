/**
 * `friend-mirror demo`: the whole path on the built-in simulator, with embedded PostgreSQL when
 * DATABASE_URL is unset. Generates an app, mirrors it, changes ~5% of it, mirrors again, proves the
 * mirror equals the source and answers three analytics questions.
 */
import { type Kysely, sql } from 'kysely';
import { passDepsFrom, timClientFrom } from '../app.js';
import { loadSyncConfig, loadTimConfig } from '../config.js';
import { addAccounts, selectAccounts } from '../db/accounts.js';
import { migrateToLatest } from '../db/migrate.js';
import { createDb } from '../db/pool.js';
import type { Database } from '../db/schema.js';
import { generateApp, Simulator } from '../simulator/index.js';
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
  out(`» generating a simulated app: ${accounts} accounts, 0–3,000 friends each, standard and custom tags …`);
  const store = generateApp({ accounts, maxFriends: 3000, seed: 20261125 });
  const sim = new Simulator({ store, sdkAppId: DEMO_APP_ID, secretKey: DEMO_SECRET, latencyMs: [5, 40] });
  const baseUrl = await sim.listen();
  out(`» simulator listening at ${baseUrl} (page size 500, rate limit 200 calls/s, 5–40 ms latency)`);

  const env: Record<string, string | undefined> = { ...ctx.env, TIM_SDKAPPID: String(DEMO_APP_ID), TIM_SECRET_KEY: DEMO_SECRET, TIM_BASE_URL: baseUrl };
  delete env.TIM_USERSIG;
  const tim = loadTimConfig(env);
  const sync = loadSyncConfig(env);
  const db = createDb(url, { maxConnections: 16 });
  const client = timClientFrom(tim, sync);
  try {
    await migrateToLatest(db);
    await addAccounts(db, store.accountIds());
    out(`» migrations applied; ${store.size} accounts added`);

    const first = await pass(ctx, db, client, tim, sync, 'first pass (full)');
    const changed = store.mutateRandom({ fraction: 0.05, seed: 7 });
    out(`» changed ${changed.length} accounts at the source (friends added/removed, remarks, groups, custom tags)`);
    const second = await pass(ctx, db, client, tim, sync, 'second pass (incremental)');
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
    for (const id of store.accountIds()) {
      const diffs = await diffAccount(db, id, store.truth(id).friends, 3);
      if (diffs.length === 0) equal++;
      else problems.push(...diffs);
    }
    out(`  mirror equals the source for ${equal}/${store.size} accounts`);
    for (const p of problems.slice(0, 10)) out(`  ${p}`);

    await analytics(ctx, db);
    const ok = first.failed === 0 && second.failed === 0 && problems.length === 0;
    out('');
    out(ok ? '✓ demo finished: try the queries in README.md against your own mirror' : '✗ demo found problems (above)');
    return ok ? EXIT.ok : EXIT.failed;
  } finally {
    await client.close();
    await db.destroy();
    await sim.close();
    await embedded?.stop();
  }
}

async function pass(
  ctx: CommandContext,
  db: Kysely<Database>,
  client: ReturnType<typeof timClientFrom>,
  tim: ReturnType<typeof loadTimConfig>,
  sync: ReturnType<typeof loadSyncConfig>,
  label: string,
): Promise<PassSummary> {
  ctx.out(`» ${label} …`);
  const deps = passDepsFrom(db, client, tim, sync, ctx.log);
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
  await deps.limiter.stop();
  ctx.out(`  ${formatSummary(summary)}`);
  return summary;
}

async function analytics(ctx: CommandContext, db: Kysely<Database>): Promise<void> {
  ctx.out('');
  ctx.out('» analytics: the five accounts with the most friends');
  const top = await sql<{ account_id: string; friend_count: number }>`
    SELECT account_id, friend_count FROM tim.accounts ORDER BY friend_count DESC, account_id LIMIT 5`.execute(db);
  for (const r of top.rows) ctx.out(`  ${JSON.stringify(r.account_id).padEnd(24)} ${r.friend_count}`);

  ctx.out('» analytics: how friendships were added (Tag_SNS_IM_AddSource)');
  const sources = await sql<{ add_source: string | null; n: string; share: string }>`
    SELECT add_source, count(*) AS n, round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS share
    FROM tim.friends GROUP BY add_source ORDER BY count(*) DESC LIMIT 6`.execute(db);
  for (const r of sources.rows) ctx.out(`  ${String(r.add_source).padEnd(28)} ${r.n.padStart(8)}  ${r.share}%`);

  ctx.out('» analytics: mutual friendships (both directions mirrored)');
  const mutual = await sql<{ pairs: string; one_way: string }>`
    SELECT count(*) FILTER (WHERE b.account_id IS NOT NULL) / 2 AS pairs,
           count(*) FILTER (WHERE b.account_id IS NULL AND a.friend_id IN (SELECT account_id FROM tim.accounts)) AS one_way
    FROM tim.friends a
    LEFT JOIN tim.friends b ON b.account_id = a.friend_id AND b.friend_id = a.account_id`.execute(db);
  ctx.out(`  ${mutual.rows[0]?.pairs} mutual pairs; ${mutual.rows[0]?.one_way} one-way friendships between mirrored accounts`);
}
