/**
 * Creates the Kysely instance over a `pg` pool. The one place that knows how to connect.
 */
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.js';

const INT8_OID = 20;

/**
 * Sequences are bigint in SQL but fit in a JS number (Tencent sends them as JSON numbers), so
 * int8 is parsed to number for this pool only, not globally for every `pg` user in the process.
 */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/** Options for {@link createDb}. */
export interface DbOptions {
  /** Maximum connections in the pool. Match it to the accounts in flight plus a few. */
  maxConnections?: number;
  /** Called when an idle connection fails (e.g. Postgres restarted); the pool replaces it. */
  onIdleError?: (err: Error) => void;
  /** `application_name` shown in pg_stat_activity. */
  applicationName?: string;
}

/**
 * Opens a pool to `url` and wraps it in Kysely.
 *
 * @example
 * const db = createDb(process.env.DATABASE_URL!, { maxConnections: 20 });
 * try { ... } finally { await db.destroy(); }
 */
export function createDb(url: string, opts: DbOptions = {}): Kysely<Database> {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.maxConnections ?? 10,
    types,
    application_name: opts.applicationName ?? 'tim-friend-mirror',
    // A broken connection must not hang a sync forever; Postgres answers in milliseconds when healthy.
    connectionTimeoutMillis: 10_000,
  });
  // Without a listener, an idle client's error (server restart) would crash the process.
  pool.on('error', (err) => opts.onIdleError?.(err));
  // pg-pool listens on a client only while it is idle. A client checked out (e.g. between the
  // statements of a transaction) that receives "terminating connection" from a Postgres shutting
  // down would emit 'error' to nobody, which kills the process. The query in flight still fails,
  // and the pool discards the broken client when it is released.
  pool.on('connect', (client) => {
    client.on('error', (err) => opts.onIdleError?.(err));
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  pools.set(db, pool);
  return db;
}

const pools = new WeakMap<Kysely<Database>, pg.Pool>();

/**
 * The `pg` pool under a Kysely instance made by {@link createDb}, for what Kysely cannot send
 * (`COPY … FROM STDIN`); undefined for one made elsewhere. Its connections are the pool's own, so
 * `DATABASE_POOL_SIZE` bounds both.
 */
export function pgPoolOf(db: Kysely<Database>): pg.Pool | undefined {
  return pools.get(db);
}
