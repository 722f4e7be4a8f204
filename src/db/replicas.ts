/**
 * The replica registry (`tim.replicas`): every running daemon heartbeats here, so each can see how
 * many share the call budget. See sync/budget.ts for how the shares are decided.
 */
import { type Kysely, sql } from 'kysely';
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
}

/**
 * Renews this replica's row (re-creating it if the table was emptied) and returns every live
 * replica, itself included, ordered by id.
 */
export async function heartbeat(db: Kysely<Database>, me: HeartbeatInput): Promise<ReplicaView[]> {
  await sql`
    INSERT INTO tim.replicas AS r (replica_id, hostname, pid, expires_at, peers, peers_since, calls_per_second)
    VALUES (${me.replicaId}, ${me.hostname}, ${me.pid}, now() + ${me.ttlMs}::float8 * interval '1 millisecond',
            ${me.peers}, now(), ${me.callsPerSecond})
    ON CONFLICT (replica_id) DO UPDATE SET
      heartbeat_at = now(), expires_at = excluded.expires_at, calls_per_second = excluded.calls_per_second,
      peers = excluded.peers,
      peers_since = CASE WHEN r.peers = excluded.peers THEN r.peers_since ELSE now() END`.execute(db);
  // Rows of replicas gone for a minute are only clutter for `status`.
  await sql`DELETE FROM tim.replicas WHERE expires_at < now() - interval '1 minute'`.execute(db);
  const res = await sql<{ replica_id: string; peers: number; settled_ms: number }>`
    SELECT replica_id, peers, (extract(epoch FROM now() - peers_since) * 1000)::float8 AS settled_ms
    FROM tim.replicas WHERE expires_at > now() ORDER BY replica_id`.execute(db);
  return res.rows.map((r) => ({ replicaId: r.replica_id, peers: r.peers, settledMs: r.settled_ms }));
}

/** Removes this replica's row on a clean shutdown, so the others take over its share sooner. */
export async function leaveReplicas(db: Kysely<Database>, replicaId: string): Promise<void> {
  await db.deleteFrom('tim.replicas').where('replica_id', '=', replicaId).execute();
}
