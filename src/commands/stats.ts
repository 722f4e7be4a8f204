/**
 * `friend-mirror stats`: the headline numbers of the mirror, read from the analytics views
 * (docs/analytics.md): accounts by status, friends, tags, mutual pairs, top add sources, changes
 * over the last 24 hours and 7 days, and how far behind the sync is. `--json` prints one object.
 */
import { type Kysely, sql } from 'kysely';
import { countByStatus } from '../db/accounts.js';
import type { AccountStatus, Database } from '../db/schema.js';
import { type CommandContext, EXIT } from './context.js';

/** Friends added, removed and changed in a time window (tim.friend_events). */
export interface ChangeCounts {
  added: number;
  removed: number;
  changed: number;
}

/** What `stats` reports; `--json` prints exactly this. */
export interface MirrorStats {
  accounts: { total: number; byStatus: Record<AccountStatus, number> };
  friends: number;
  tags: number;
  mutualPairs: number;
  /** The most common Tag_SNS_IM_AddSource values; `share` is 0..1 of all friends. */
  topAddSources: { addSource: string | null; friends: number; share: number }[];
  changes: { last24h: ChangeCounts; last7d: ChangeCounts };
  sync: {
    /** Active accounts whose next sync time has passed. */
    due: number;
    /** How long the most overdue account has waited, in seconds. */
    lagSeconds: number;
    /** Seconds since the least recently synced account's last success (null: none synced yet). */
    oldestSyncSeconds: number | null;
    /** Accounts whose last attempt failed. */
    failing: number;
  };
}

/**
 * Reads {@link MirrorStats} in a handful of queries. `tim.accounts` answers the friend total; the tag
 * total, the mutual pairs (a self-join of `tim.friends`) and the add sources scan their tables.
 */
export async function readStats(db: Kysely<Database>, topSources = 5): Promise<MirrorStats> {
  const byStatus = await countByStatus(db);
  const totals = await sql<{ friends: number; tags: number; mutual: number }>`
    SELECT (SELECT coalesce(sum(friend_count), 0)::bigint FROM tim.friend_counts) AS friends,
           (SELECT count(*) FROM tim.friend_tags) AS tags,
           (SELECT count(*) FROM tim.mutual_friendships) AS mutual`.execute(db);
  const sources = await sql<{ add_source: string | null; friends: number; share: string }>`
    SELECT add_source, friends, share FROM tim.add_sources
    ORDER BY friends DESC, add_source COLLATE "C" NULLS LAST LIMIT ${topSources}`.execute(db);
  const changes = await sql<{ w: '24h' | '7d'; added: number; removed: number; changed: number }>`
    SELECT w.w, count(*) FILTER (WHERE e.kind = 'added') AS added,
           count(*) FILTER (WHERE e.kind = 'removed') AS removed,
           count(*) FILTER (WHERE e.kind = 'changed') AS changed
    FROM (VALUES ('24h', interval '24 hours'), ('7d', interval '7 days')) AS w(w, span)
    LEFT JOIN tim.friend_events e ON e.observed_at > now() - w.span AND e.kind <> 'baseline'
    GROUP BY w.w`.execute(db);
  const health = await sql<{ due: number; lag: number | null; oldest: number | null; failing: number }>`
    SELECT count(*) FILTER (WHERE next_sync_at <= now() AND status NOT IN ('disabled', 'missing')) AS due,
           extract(epoch FROM max(overdue))::float8 AS lag,
           extract(epoch FROM max(since_last_sync) FILTER (WHERE status NOT IN ('disabled', 'missing')))::float8 AS oldest,
           count(*) FILTER (WHERE status = 'failing') AS failing
    FROM tim.account_sync_health`.execute(db);
  const window = (w: '24h' | '7d'): ChangeCounts => {
    const r = changes.rows.find((x) => x.w === w);
    return {
      added: Number(r?.added ?? 0),
      removed: Number(r?.removed ?? 0),
      changed: Number(r?.changed ?? 0),
    };
  };
  const t = totals.rows[0]!;
  const h = health.rows[0]!;
  return {
    accounts: { total: Object.values(byStatus).reduce((a, b) => a + b, 0), byStatus },
    friends: Number(t.friends),
    tags: Number(t.tags),
    mutualPairs: Number(t.mutual),
    topAddSources: sources.rows.map((r) => ({
      addSource: r.add_source,
      friends: Number(r.friends),
      share: Number(r.share),
    })),
    changes: { last24h: window('24h'), last7d: window('7d') },
    sync: {
      due: Number(h.due),
      lagSeconds: Math.round(Number(h.lag ?? 0)),
      oldestSyncSeconds: h.oldest === null ? null : Math.round(Number(h.oldest)),
      failing: Number(h.failing),
    },
  };
}

function changesLine(c: ChangeCounts): string {
  return `${c.added} added, ${c.removed} removed, ${c.changed} changed`;
}

/** `stats [--json]`. */
export async function statsCommand(
  ctx: CommandContext,
  db: Kysely<Database>,
  opts: { json: boolean },
): Promise<number> {
  const s = await readStats(db);
  if (opts.json) {
    ctx.out(JSON.stringify(s));
    return EXIT.ok;
  }
  ctx.out(
    `accounts: ${s.accounts.total} (${Object.entries(s.accounts.byStatus)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')})`,
  );
  ctx.out(`friends: ${s.friends}; tags: ${s.tags}; mutual pairs: ${s.mutualPairs}`);
  ctx.out(
    `top add sources: ${
      s.topAddSources.length === 0
        ? '(none)'
        : s.topAddSources
            .map((r) => `${r.addSource ?? '(none)'} ${r.friends} (${(r.share * 100).toFixed(1)}%)`)
            .join(', ')
    }`,
  );
  ctx.out(`last 24 h: ${changesLine(s.changes.last24h)}`);
  ctx.out(`last 7 d: ${changesLine(s.changes.last7d)}`);
  ctx.out(
    `sync: ${s.sync.due} due, oldest due for ${s.sync.lagSeconds}s; ` +
      `least recently synced ${s.sync.oldestSyncSeconds === null ? 'never' : `${s.sync.oldestSyncSeconds}s ago`}; ` +
      `${s.sync.failing} failing`,
  );
  return EXIT.ok;
}
