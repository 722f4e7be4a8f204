/**
 * Scheduling for the daemon: priorities, account leases for several replicas, and the replica
 * registry that shares the call budget. Frozen in time: imports nothing from src/.
 */
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  // 0 = resync requested, 1 = never synced, 2 = regular. The scheduler claims in (priority, next_sync_at) order.
  await sql`ALTER TABLE tim.accounts
    ADD COLUMN priority smallint NOT NULL DEFAULT 1,
    ADD COLUMN resync_requested_at timestamptz,
    ADD COLUMN lease_owner text,
    ADD COLUMN leased_at timestamptz,
    ADD COLUMN lease_expires_at timestamptz`.execute(db);
  await sql`UPDATE tim.accounts SET priority = 2 WHERE last_synced_at IS NOT NULL`.execute(db);
  await sql`DROP INDEX tim.accounts_due_idx`.execute(db);
  // Claiming is "the first N due accounts in priority order": an index range scan, whatever the
  // table size. Inactive accounts are left out of the index entirely.
  await sql`CREATE INDEX accounts_claim_idx ON tim.accounts (priority, next_sync_at)
            WHERE status NOT IN ('disabled', 'missing')`.execute(db);
  await sql`COMMENT ON COLUMN tim.accounts.priority IS '0 resync requested, 1 never synced, 2 regular'`.execute(
    db,
  );
  await sql`COMMENT ON COLUMN tim.accounts.lease_owner IS 'replica syncing this account now; the lease ends at lease_expires_at even if the replica dies'`.execute(
    db,
  );

  await sql`
    CREATE TABLE tim.replicas (
      replica_id  text PRIMARY KEY,
      hostname    text NOT NULL,
      pid         integer NOT NULL,
      started_at  timestamptz NOT NULL DEFAULT now(),
      heartbeat_at timestamptz NOT NULL DEFAULT now(),
      expires_at  timestamptz NOT NULL,
      peers       integer NOT NULL DEFAULT 0,
      peers_since timestamptz NOT NULL DEFAULT now(),
      calls_per_second integer NOT NULL DEFAULT 0
    )`.execute(db);
  await sql`COMMENT ON TABLE tim.replicas IS 'Running daemons; each paces its calls at its share of TIM_RATE_LIMIT'`.execute(
    db,
  );
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS tim.replicas`.execute(db);
  await sql`DROP INDEX IF EXISTS tim.accounts_claim_idx`.execute(db);
  await sql`ALTER TABLE tim.accounts DROP COLUMN priority, DROP COLUMN resync_requested_at,
            DROP COLUMN lease_owner, DROP COLUMN leased_at, DROP COLUMN lease_expires_at`.execute(db);
  await sql`CREATE INDEX accounts_due_idx ON tim.accounts (next_sync_at) WHERE status <> 'disabled'`.execute(
    db,
  );
}
