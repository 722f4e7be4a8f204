/**
 * A first sync by `COPY`: an account never synced and holding no rows gets its rows in the text
 * format COPY parses directly, which costs Postgres less CPU per row than a `json_to_recordset`
 * insert (src/db/copy.ts says why). A first sync writes the most rows of any apply, and a full sweep
 * is nothing but first syncs, so this is where the server's CPU goes.
 *
 * Several accounts share a transaction when their first syncs wait for an apply slot together (the
 * FriendWriter batches them): the statements around the rows cost Postgres about as much as a few
 * hundred rows each, and sharing them is worth a clear share of the quota in a full sweep (the A/B
 * pairs in bench/ab-pairs.md). Lock and check, one COPY per table, then the history's baselines and
 * the sequences in one statement.
 */
import { type Kysely, sql } from 'kysely';
import type pg from 'pg';
import { copyIn, FRIEND_COPY_COLUMNS, TAG_COPY_COLUMNS } from './copy.js';
import type { Database } from './schema.js';
import {
  type ApplyResult,
  type CopyRows,
  type NextSync,
  SnapshotConflictError,
  type SnapshotHead,
} from './snapshot-types.js';
import { syncedStatus } from './synced.js';

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

/** One account's first sync: its pull's head and rows. */
export interface FirstSync {
  head: SnapshotHead;
  rows: CopyRows;
}

/**
 * What a first sync by COPY made of one account: written; refused with a conflict (nothing
 * written); `occupied`: the account was synced before or holds rows (a `resync --full`, say),
 * nothing was written, and the general path (src/db/apply.ts) must apply it; or `failed`: it passed
 * the checks, but a statement of its transaction failed (`error`, the server's), so nothing was
 * written for it or for any account that shared the transaction.
 */
export type FirstSyncOutcome =
  | { kind: 'applied'; result: ApplyResult }
  | { kind: 'refused'; error: SnapshotConflictError }
  | { kind: 'occupied' }
  | { kind: 'failed'; error: unknown };

/**
 * Applies `syncs` as first syncs, in one transaction on one connection of `pool`: lock the account
 * rows (in id order, so two such transactions cannot deadlock) and check that each was never
 * synced, that its sequences are still the snapshot's base and that it holds no rows; then COPY the
 * friends and the tags of the accounts that passed, append one baseline row each to the history
 * and store their sequences (one statement), and commit: five round trips, however many accounts.
 * If any statement fails (a bad field, a friend listed twice), the transaction rolls back whole:
 * sequences are never stored without their rows.
 *
 * The lock makes concurrent applies of one account wait for each other. The EXISTS probes read the
 * statement's snapshot, which misses rows committed while the lock was awaited; but every writer
 * of an account's rows takes this lock and stores new sequences in the same transaction, so such
 * rows always come with moved sequences, which the check (made on the locked, latest row) refuses.
 *
 * @returns each account's outcome, in the order of `syncs`
 * @throws the server's or the connection's error before the checks; nothing was written
 */
export async function firstSyncsByCopy(
  db: Kysely<Database>,
  pool: pg.Pool,
  syncs: readonly FirstSync[],
  schedule: NextSync,
): Promise<FirstSyncOutcome[]> {
  const client = await pool.connect();
  let reusable = true;
  let outcomes: (FirstSyncOutcome | undefined)[] | undefined;
  try {
    // BEGIN and the lock in one simple-protocol query (one round trip), so the account ids are
    // literals here, escaped by pg.
    const ids = syncs.map((f) => client.escapeLiteral(f.head.accountId)).join(', ');
    const [, locked] = (await client.query(`BEGIN;
      SELECT a.account_id, a.standard_sequence, a.custom_sequence,
             a.last_synced_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM tim.friends f WHERE f.account_id = a.account_id)
               AND NOT EXISTS (SELECT 1 FROM tim.friend_tags t WHERE t.account_id = a.account_id) AS fresh
      FROM tim.accounts a WHERE a.account_id IN (${ids})
      ORDER BY a.account_id COLLATE "C"
      FOR UPDATE OF a`)) as unknown as [unknown, { rows: LockedAccount[] }];
    const byId = new Map(locked.rows.map((r) => [r.account_id, r]));
    const checked = syncs.map((f): FirstSyncOutcome | undefined => {
      const row = byId.get(f.head.accountId);
      if (!row) {
        const gone = `account ${JSON.stringify(f.head.accountId)} was removed`;
        return { kind: 'refused', error: new SnapshotConflictError('gone', gone) };
      }
      if (row.standard_sequence !== null || row.custom_sequence !== null) {
        const stale = 'stored sequences changed while pulling';
        return { kind: 'refused', error: new SnapshotConflictError('stale', stale) };
      }
      return row.fresh ? undefined : { kind: 'occupied' };
    });
    outcomes = checked;
    const passed = syncs.filter((_, i) => checked[i] === undefined);
    if (passed.length === 0) {
      await client.query('ROLLBACK');
      return checked as FirstSyncOutcome[];
    }
    const friends = passed.flatMap((f) => f.rows.friends);
    const tags = passed.flatMap((f) => f.rows.tags);
    if (friends.length > 0) await copyIn(client, COPY_FRIENDS, friends);
    if (tags.length > 0) await copyIn(client, COPY_TAGS, tags);
    const finish = finishStatement(passed, schedule).compile(db);
    await client.query(finish.sql, finish.parameters as unknown[]);
    await client.query('COMMIT');
    return syncs.map(
      (f, i) =>
        checked[i] ?? {
          kind: 'applied',
          result: {
            friendsUpserted: f.rows.friendCount,
            friendsDeleted: 0,
            tagsUpserted: f.rows.tagCount,
            tagsDeleted: 0,
            friendCount: f.rows.friendCount,
            events: 1,
          },
        },
    );
  } catch (err) {
    // A failed statement left the transaction open or aborted: end it, or the connection goes back
    // to the pool mid-transaction. If even that fails, the connection is broken; the pool drops it.
    await client.query('ROLLBACK').catch(() => {
      reusable = false;
    });
    if (!outcomes) throw err;
    // The refusals stand; the accounts that passed the checks wrote nothing.
    return outcomes.map((o) => o ?? { kind: 'failed', error: err });
  } finally {
    client.release(!reusable);
  }
}

/**
 * The history's baseline of each account and its sequences, in one statement whatever the number
 * of accounts: their values as arrays, unnested into rows.
 */
function finishStatement(syncs: readonly FirstSync[], schedule: NextSync) {
  const ids = syncs.map((f) => f.head.accountId);
  const std = syncs.map((f) => f.head.standardSequence);
  const cus = syncs.map((f) => f.head.customSequence);
  const counts = syncs.map((f) => f.rows.friendCount);
  const changed = syncs.map((f) => f.rows.friendCount + f.rows.tagCount > 0);
  const rows = sql`unnest(${ids}::text[], ${std}::bigint[], ${cus}::bigint[], ${counts}::int[], ${changed}::boolean[])
    AS u(account_id, standard_sequence, custom_sequence, friend_count, changed)`;
  const status = Object.entries(syncedStatus(schedule)).map(
    ([column, value]) => sql`${sql.ref(column)} = ${value}`,
  );
  return sql`
    WITH e AS (
      INSERT INTO tim.friend_events (account_id, kind, changed, standard_sequence, custom_sequence)
      SELECT u.account_id, 'baseline', jsonb_build_object('friend_count', u.friend_count),
             u.standard_sequence, u.custom_sequence
      FROM ${rows}
      RETURNING 1)
    UPDATE tim.accounts SET
      standard_sequence = u.standard_sequence, custom_sequence = u.custom_sequence,
      friend_count = u.friend_count,
      last_changed_at = CASE WHEN u.changed THEN now() ELSE tim.accounts.last_changed_at END,
      ${sql.join(status)}
    FROM ${rows}
    WHERE tim.accounts.account_id = u.account_id`;
}

interface LockedAccount {
  account_id: string;
  standard_sequence: number | null;
  custom_sequence: number | null;
  fresh: boolean;
}
