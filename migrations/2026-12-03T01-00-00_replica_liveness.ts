/**
 * A replica is live while its Postgres session is (issue #17): each replica holds a session-level
 * advisory lock on a random key stored in its registry row, and `tim.live_replicas` lists the rows
 * that are unexpired and whose lock is still held. A SIGKILLed process's connection closes, Postgres
 * ends its backend and drops the lock within milliseconds, so its leases are free at once instead
 * of when they run out. `pg_locks` is readable by every role. A row without a key (a replica of an
 * older version, during a rolling upgrade) is live until its row expires, as before.
 *
 * The partial index keeps finding the leases of dead replicas cheap with millions of accounts: only
 * leased rows are in it. Frozen in time: imports nothing from src/.
 */
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE tim.replicas ADD COLUMN lock_key bigint`.execute(db);
  await sql`CREATE INDEX accounts_lease_owner_idx ON tim.accounts (lease_owner) WHERE lease_owner IS NOT NULL`.execute(
    db,
  );
  await sql`
    CREATE VIEW tim.live_replicas AS
    SELECT r.replica_id, r.hostname, r.pid, r.started_at, r.heartbeat_at, r.expires_at, r.peers,
           r.peers_since, r.calls_per_second, r.lock_key
    FROM tim.replicas r
    WHERE r.expires_at > now()
      AND (r.lock_key IS NULL OR EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
          AND ((l.classid::bigint << 32) | l.objid::bigint) = r.lock_key))`.execute(db);
  await sql`COMMENT ON VIEW tim.live_replicas IS 'Replicas whose registry row is unexpired and whose session (advisory lock lock_key) is alive'`.execute(
    db,
  );
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP VIEW IF EXISTS tim.live_replicas`.execute(db);
  await sql`DROP INDEX IF EXISTS tim.accounts_lease_owner_idx`.execute(db);
  await sql`ALTER TABLE tim.replicas DROP COLUMN IF EXISTS lock_key`.execute(db);
}
