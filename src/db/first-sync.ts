/**
 * A first sync by `COPY`: an account never synced and holding no rows gets its rows in the text
 * format COPY parses directly, which costs Postgres less CPU per row than a `json_to_recordset`
 * insert (src/db/copy.ts says why). A first sync writes the most rows of any apply, and a full sweep
 * is nothing but first syncs, so this is where the server's CPU goes.
 *
 * One transaction per account: lock and check, one COPY per table, then the history's baseline
 * and the sequences in one statement.
 */
import { type Kysely, sql } from 'kysely';
import type pg from 'pg';
import { copyIn, FRIEND_COPY_COLUMNS, TAG_COPY_COLUMNS } from './copy.js';
import { baselineEvent } from './history.js';
import type { Database } from './schema.js';
import {
  type ApplyResult,
  type CopyRows,
  type NextSync,
  SnapshotConflictError,
  type SnapshotHead,
} from './snapshot-types.js';
import { syncedColumns } from './synced.js';

const COPY_FRIENDS = `COPY tim.friends ${FRIEND_COPY_COLUMNS} FROM STDIN`;
const COPY_TAGS = `COPY tim.friend_tags ${TAG_COPY_COLUMNS} FROM STDIN`;

/**
 * An account never synced, pulled from zero sequences: the COPY path is worth trying. A
 * `resync --full` also pulls from zero sequences, but onto rows the COPY path would refuse after
 * locking and looking, so trying it first would only cost a round trip.
 */
export function isFirstSync(
  snap: Pick<SnapshotHead, 'neverSynced' | 'baseStandardSequence' | 'baseCustomSequence'>,
): boolean {
  return snap.neverSynced === true && snap.baseStandardSequence === null && snap.baseCustomSequence === null;
}

/**
 * Applies `snap` with its `rows` as a first sync, in one transaction on one connection of `pool`: lock the account
 * row and check it was never synced, that its sequences are still the snapshot's base and that it
 * holds no rows; then COPY its friends and its tags, append the history's baseline and store its
 * sequences (one statement), and commit: five round trips. If any statement fails (a bad field, a
 * friend listed twice), the transaction rolls back whole: sequences are never stored without their
 * rows, and only this account fails.
 *
 * The lock makes concurrent applies of one account wait for each other. The EXISTS probes read the
 * statement's snapshot, which misses rows committed while the lock was awaited; but every writer
 * of an account's rows takes this lock and stores new sequences in the same transaction, so such
 * rows always come with moved sequences, which the check (made on the locked, latest row) refuses.
 *
 * @returns undefined when the account was synced before or holds rows (a `resync --full`, say):
 *   nothing was written, and the general path (src/db/apply.ts) must apply it
 * @throws SnapshotConflictError like the general apply, or the server's error; nothing was written
 */
export async function firstSyncByCopy(
  db: Kysely<Database>,
  pool: pg.Pool,
  snap: SnapshotHead,
  rows: CopyRows,
  schedule: NextSync,
): Promise<ApplyResult | undefined> {
  // The rows came encoded (src/db/encoded-rows.ts), so the CPU work of encoding holds no connection.
  const { friendCount, tagCount } = rows;
  const client = await pool.connect();
  let reusable = true;
  try {
    // BEGIN and the lock in one simple-protocol query (one round trip), so the account id is a
    // literal here, escaped by pg.
    const [, locked] = (await client.query(`BEGIN;
      SELECT a.standard_sequence, a.custom_sequence,
             a.last_synced_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM tim.friends f WHERE f.account_id = a.account_id)
               AND NOT EXISTS (SELECT 1 FROM tim.friend_tags t WHERE t.account_id = a.account_id) AS fresh
      FROM tim.accounts a WHERE a.account_id = ${client.escapeLiteral(snap.accountId)}
      FOR UPDATE OF a`)) as unknown as [unknown, { rows: LockedAccount[] }];
    const row = locked.rows[0];
    if (!row)
      throw new SnapshotConflictError('gone', `account ${JSON.stringify(snap.accountId)} was removed`);
    if (row.standard_sequence !== null || row.custom_sequence !== null) {
      throw new SnapshotConflictError('stale', 'stored sequences changed while pulling');
    }
    if (!row.fresh) {
      await client.query('ROLLBACK');
      return undefined;
    }
    if (rows.friends.length > 0) await copyIn(client, COPY_FRIENDS, rows.friends);
    if (rows.tags.length > 0) await copyIn(client, COPY_TAGS, rows.tags);
    const finish = sql`
      WITH e AS (${baselineEvent(snap, friendCount)} RETURNING 1)
      ${db
        .updateTable('tim.accounts')
        .set({
          ...syncedColumns(snap, friendCount, schedule),
          ...(friendCount + tagCount > 0 ? { last_changed_at: sql<Date>`now()` } : {}),
        })
        .where('account_id', '=', snap.accountId)}`.compile(db);
    await client.query(finish.sql, finish.parameters as unknown[]);
    await client.query('COMMIT');
    return {
      friendsUpserted: friendCount,
      friendsDeleted: 0,
      tagsUpserted: tagCount,
      tagsDeleted: 0,
      friendCount,
      events: 1,
    };
  } catch (err) {
    // A refusal or a failed statement left the transaction open or aborted: end it, or the
    // connection goes back to the pool mid-transaction. If even that fails, the connection is
    // broken; the pool drops it.
    await client.query('ROLLBACK').catch(() => {
      reusable = false;
    });
    throw err;
  } finally {
    client.release(!reusable);
  }
}

interface LockedAccount {
  standard_sequence: number | null;
  custom_sequence: number | null;
  fresh: boolean;
}
