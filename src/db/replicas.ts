/**
 * The replica registry (`tim.replicas`): every running daemon (and one-shot `sync`) heartbeats here,
 * so each can see how many share the call budget, and whose leases belong to a live process. See
 * sync/budget.ts for how the shares are decided.
 *
 * A replica is live while its row is unexpired AND its registry session is alive: it holds a
 * session-level advisory lock on a random key stored in its row (`tim.live_replicas` checks
 * `pg_locks`). When a process dies, its OS closes the socket and Postgres drops the backend and the
 * lock within milliseconds, so the others see it gone at once; a host that vanishes without closing
 * its sockets is gone when its row expires.
 */
import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { pgPoolOf } from './pool.js';
import type { Database } from './schema.js';

/** A live replica as another replica sees it. */
export interface ReplicaView {
  replicaId: string;
  /** How many replicas it currently divides the budget by. */
  peers: number;
  /** How long (database clock) it has been dividing by `peers`. */
  settledMs: number;
}

/** What a heartbeat reports about this replica. */
export interface HeartbeatInput {
  replicaId: string;
  hostname: string;
  pid: number;
  /** The row expires this long after the heartbeat unless renewed. */
  ttlMs: number;
  peers: number;
  callsPerSecond: number;
  /** The advisory lock key this replica's session holds (a bigint as text); absent: liveness by ttl only. */
  lockKey?: string;
}

/**
 * Renews this replica's row (re-creating it if the table was emptied) and returns every live
 * replica, itself included, ordered by id. A new lock key (a new session: a restart under the same
 * REPLICA_ID, or a reconnect) makes the row a newcomer's again: `peers_since` restarts, so nobody
 * counts it as settled before it has waited like any replica that joins.
 */
export async function heartbeat(db: Kysely<Database>, me: HeartbeatInput): Promise<ReplicaView[]> {
  const key = me.lockKey ?? null;
  await sql`
    INSERT INTO tim.replicas AS r (replica_id, hostname, pid, expires_at, peers, peers_since, calls_per_second, lock_key)
    VALUES (${me.replicaId}, ${me.hostname}, ${me.pid}, now() + ${me.ttlMs}::float8 * interval '1 millisecond',
            ${me.peers}, now(), ${me.callsPerSecond}, ${key}::bigint)
    ON CONFLICT (replica_id) DO UPDATE SET
      heartbeat_at = now(), expires_at = excluded.expires_at, calls_per_second = excluded.calls_per_second,
      peers = excluded.peers, hostname = excluded.hostname, pid = excluded.pid, lock_key = excluded.lock_key,
      peers_since = CASE WHEN r.peers = excluded.peers AND r.lock_key IS NOT DISTINCT FROM excluded.lock_key
                         THEN r.peers_since ELSE now() END`.execute(db);
  // Rows of replicas gone for a minute are only clutter for `status`.
  await sql`DELETE FROM tim.replicas WHERE expires_at < now() - interval '1 minute'`.execute(db);
  return liveReplicas(db);
}

/** Every live replica (unexpired row, session alive), ordered by id. */
export async function liveReplicas(db: Kysely<Database>): Promise<ReplicaView[]> {
  const res = await sql<{ replica_id: string; peers: number; settled_ms: number }>`
    SELECT replica_id, peers, (extract(epoch FROM now() - peers_since) * 1000)::float8 AS settled_ms
    FROM tim.live_replicas ORDER BY replica_id`.execute(db);
  return res.rows.map((r) => ({ replicaId: r.replica_id, peers: r.peers, settledMs: r.settled_ms }));
}

/** Options of {@link ReplicaSession}. */
export interface ReplicaSessionOptions {
  replicaId: string;
  hostname: string;
  pid: number;
  /** The registry row expires this long after a heartbeat unless renewed. */
  ttlMs: number;
  /**
   * The registry session ended under us (Postgres restarted, the connection was cut): the others
   * count this replica as gone from now on, so it must stop calling at once.
   */
  onLost?: (err: Error) => void;
}

/** A random non-zero 64-bit advisory lock key, as text (it does not fit a JS number). */
function randomLockKey(): string {
  return BigInt.asIntN(64, randomBytes(8).readBigUInt64BE()).toString();
}

/**
 * This replica's registration: one dedicated connection (outside the pool, with its settings) that
 * holds the replica's advisory lock and carries its heartbeats, so a heartbeat that succeeds proves
 * the session the others check is alive. When the connection drops, {@link ReplicaSessionOptions.onLost}
 * fires and the next heartbeat connects again under a new key, as a newcomer.
 */
export class ReplicaSession {
  readonly #db: Kysely<Database>;
  readonly #opts: ReplicaSessionOptions;
  #client: pg.Client | undefined;
  #connecting: Promise<pg.Client> | undefined;
  #key: string | undefined;
  #registered = false;
  #closed = false;
  #waiters: Array<() => void> = [];
  readonly #sessionDbs = new WeakMap<pg.Client, Kysely<Database>>();

  constructor(db: Kysely<Database>, opts: ReplicaSessionOptions) {
    this.#db = db;
    this.#opts = opts;
  }

  /** True once a heartbeat has succeeded on the current session (and until it is lost). */
  get registered(): boolean {
    return this.#registered;
  }

  /** Resolves once registered (at once if it is), or when `signal` aborts. */
  whenRegistered(signal?: AbortSignal): Promise<void> {
    if (this.#registered || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        signal?.removeEventListener('abort', done);
        resolve();
      };
      this.#waiters.push(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  /** Renews the registration (connecting and locking first if needed) and lists the live replicas. */
  async heartbeat(peers: number, callsPerSecond: number): Promise<ReplicaView[]> {
    const client = await this.#connect();
    const live = await this.#run(client, (db) =>
      heartbeat(db, {
        replicaId: this.#opts.replicaId,
        hostname: this.#opts.hostname,
        pid: this.#opts.pid,
        ttlMs: this.#opts.ttlMs,
        peers,
        callsPerSecond,
        lockKey: this.#key!,
      }),
    );
    if (client === this.#client && !this.#registered) {
      this.#registered = true;
      for (const w of this.#waiters.splice(0)) w();
    }
    return live;
  }

  /** Lists the live replicas over the registry session, without renewing anything (cheap, for watching). */
  async live(): Promise<ReplicaView[]> {
    const client = this.#client;
    if (!client || !this.#registered) throw new Error('not registered');
    return this.#run(client, (db) => liveReplicas(db));
  }

  /** Leaves the registry and closes the session (clean shutdown). */
  async close(): Promise<void> {
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) w();
    const client = this.#client ?? (await this.#connecting?.catch(() => undefined));
    this.#client = undefined;
    this.#registered = false;
    if (!client) return;
    await client
      .query('DELETE FROM tim.replicas WHERE replica_id = $1', [this.#opts.replicaId])
      .catch(() => {});
    await client.end().catch(() => {});
  }

  /** Runs registry statements (written once, with Kysely) on the session's own connection. */
  #run<T>(client: pg.Client, fn: (db: Kysely<Database>) => Promise<T>): Promise<T> {
    let single = this.#sessionDbs.get(client);
    if (!single) {
      single = new Kysely<Database>({
        dialect: new PostgresDialect({
          pool: {
            connect: async () => ({
              query: client.query.bind(client) as never,
              release: () => {},
            }),
            end: async () => {},
          },
        }),
      });
      this.#sessionDbs.set(client, single);
    }
    return fn(single);
  }

  #connect(): Promise<pg.Client> {
    if (this.#closed) return Promise.reject(new Error('replica session closed'));
    if (this.#client) return Promise.resolve(this.#client);
    this.#connecting ??= this.#open().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #open(): Promise<pg.Client> {
    const poolOptions = pgPoolOf(this.#db)?.options ?? {};
    const client = new pg.Client({ ...poolOptions, application_name: 'tim-friend-mirror registry' });
    let lost = false;
    const onGone = (err?: Error) => {
      if (lost) return;
      lost = true;
      if (this.#client !== client) return;
      this.#client = undefined;
      this.#registered = false;
      if (!this.#closed) this.#opts.onLost?.(err ?? new Error('registry connection closed'));
    };
    client.on('error', (err) => onGone(err));
    client.on('end', () => onGone());
    try {
      await client.connect();
      // A key another session holds (vanishingly unlikely) is simply not ours: draw again.
      for (;;) {
        const key = randomLockKey();
        const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [key]);
        if (r.rows[0]?.ok) {
          this.#key = key;
          break;
        }
      }
    } catch (err) {
      lost = true;
      await client.end().catch(() => {});
      throw err;
    }
    if (this.#closed) {
      await client.end().catch(() => {});
      throw new Error('replica session closed');
    }
    this.#client = client;
    return client;
  }
}
