/**
 * A first sync by `COPY`: an account never synced and holding no rows gets its rows in the text
 * format COPY parses directly, which costs Postgres less CPU per row than a `json_to_recordset`
 * insert (src/db/copy.ts says why). A first sync writes the most rows of any apply, and a full sweep
 * is nothing but first syncs, so this is where the server's CPU goes.
 *
 * First syncs that wait for an apply slot together share one transaction when the slot comes (see
 * {@link FirstSyncBatches}): the statements around the rows cost Postgres and this process about as
 * much as a few hundred rows each, and a shared COPY is cheaper per row. An apply slot that finds
 * nobody waiting runs its account alone, so an idle daemon adds no delay.
 */
import { type Kysely, sql } from 'kysely';
import type { LimitFunction } from 'p-limit';
import type pg from 'pg';
import { copyIn, FRIEND_COPY_COLUMNS, friendCopyText, TAG_COPY_COLUMNS, tagCopyText } from './copy.js';
import { baselineEvent } from './history.js';
import type { Database } from './schema.js';
import {
  type AccountSnapshot,
  type ApplyResult,
  type NextSync,
  SnapshotConflictError,
} from './snapshot-types.js';
import { sameSchedule, syncedColumns, syncedStatus } from './synced.js';

/**
 * An account never synced, pulled from zero sequences: the COPY path is worth trying. A
 * `resync --full` also pulls from zero sequences, but onto rows the COPY path would refuse after
 * locking and looking, so trying it first would only cost a round trip.
 */
export function isFirstSync(snap: AccountSnapshot): boolean {
  return (
    snap.neverSynced === true &&
    snap.baseStandardSequence === null &&
    snap.baseCustomSequence === null &&
    !!snap.standard
  );
}

/** A first sync waiting for its batch. */
interface FirstSyncJob {
  snap: AccountSnapshot;
  schedule: NextSync;
  rows: number;
  /** undefined: not this path (the account holds rows); the caller applies it in general. */
  resolve: (result: ApplyResult | undefined) => void;
  reject: (err: unknown) => void;
}

/**
 * At most this many first syncs share one transaction, and past this many rows no further account
 * joins it. More accounts per transaction cost Postgres and this process less per row, up to about
 * what one bulk COPY costs; the row cap keeps the buffers a transaction holds small
 * (bench/notes.md, 2026-12-02, has the measurements).
 */
const FIRST_SYNC_BATCH_ACCOUNTS = 32;
const FIRST_SYNC_BATCH_ROWS = 10_000;

const COPY_FRIENDS = `COPY tim.friends ${FRIEND_COPY_COLUMNS} FROM STDIN`;
const COPY_TAGS = `COPY tim.friend_tags ${TAG_COPY_COLUMNS} FROM STDIN`;

/**
 * The first syncs of one writer waiting for an apply slot. Made by a FriendWriter
 * (src/db/friend-writer.ts), which owns the slots (`gate`, `slots` of them) it shares with the
 * general apply.
 */
export class FirstSyncBatches {
  readonly #queue: FirstSyncJob[] = [];
  readonly #db: Kysely<Database>;
  readonly #pool: pg.Pool;
  readonly #gate: LimitFunction;
  readonly #slots: number;

  constructor(db: Kysely<Database>, pool: pg.Pool, gate: LimitFunction, slots: number) {
    this.#db = db;
    this.#pool = pool;
    this.#gate = gate;
    this.#slots = slots;
  }

  /**
   * Queues `snap` for the next free apply slot, and settles when its batch committed or refused it.
   *
   * Returns undefined when the account was synced before or holds rows (a `resync --full`, say), for
   * the general path.
   *
   * @throws SnapshotConflictError like the general apply
   */
  apply(snap: AccountSnapshot, schedule: NextSync): Promise<ApplyResult | undefined> {
    const rows =
      (snap.standard?.friends.length ?? 0) +
      (snap.standard?.tags.length ?? 0) +
      (snap.custom?.tags.length ?? 0);
    const done = new Promise<ApplyResult | undefined>((resolve, reject) => {
      this.#queue.push({ snap, schedule, rows, resolve, reject });
    });
    this.#requestSlot();
    return done;
  }

  /**
   * One slot request per account; a slot takes its share of the accounts waiting by then, so many
   * requests find their account already applied. Made here, not where the account is queued: a
   * request's closure lives until its slot comes, and must hold nothing of the account (closures
   * that did kept every applied snapshot alive until then).
   */
  #requestSlot(): void {
    void this.#gate(() => this.#runBatch());
  }

  /** Takes the next batch off the queue: the oldest job, and the ones after it that fit beside it. */
  async #runBatch(): Promise<void> {
    const queue = this.#queue;
    // A fair share of those waiting, not all of them: one transaction runs on one connection and one
    // Postgres backend, so a slot that took everything would leave the other slots (and cores) idle.
    const share = Math.min(FIRST_SYNC_BATCH_ACCOUNTS, Math.ceil(queue.length / this.#slots));
    const first = queue.shift();
    if (!first) return;
    const batch = [first];
    let rows = first.rows;
    while (
      batch.length < share &&
      queue.length > 0 &&
      sameSchedule(queue[0]!.schedule, first.schedule) &&
      rows + queue[0]!.rows <= FIRST_SYNC_BATCH_ROWS
    ) {
      const job = queue.shift()!;
      rows += job.rows;
      batch.push(job);
    }
    // When a statement of a shared transaction fails (a bad field or a repeated friend in some
    // account's rows), it is rolled back whole: each account that had passed the check goes again
    // alone, so only the account at fault fails.
    const again = await copyFirstSyncs(this.#db, this.#pool, batch, batch.length === 1);
    for (const job of again) await copyFirstSyncs(this.#db, this.#pool, [job], true);
  }
}

/**
 * One transaction on one connection for `jobs`: lock the account rows (in id order, so two such
 * transactions cannot deadlock) and check each was never synced, that its sequences are still the
 * snapshot's base and that it holds no rows; then COPY the friends and the tags of the accounts
 * that passed, append one baseline row each to the history and store their sequences (one
 * statement), and commit: five round trips, however many accounts. If any statement fails, the
 * transaction rolls back whole: sequences are never stored without their rows.
 *
 * The lock and the EXISTS probes follow the reasoning in `applyInTransaction` (src/db/apply.ts): the probes
 * read the statement's snapshot, and rows committed while the lock was awaited always come with
 * moved sequences, which the check (made on the locked, latest row) refuses.
 *
 * Settles every job it applied or refused. When a statement fails: with `last`, the failure
 * rejects every job not yet settled; without, those jobs are returned, unsettled, to be tried again.
 */
async function copyFirstSyncs(
  db: Kysely<Database>,
  pool: pg.Pool,
  jobs: FirstSyncJob[],
  last: boolean,
): Promise<FirstSyncJob[]> {
  // Encoded before a connection is taken, so the CPU work holds no connection, and kept as UTF-8
  // bytes while the transaction runs: compact, off the JS heap, and not the tree of every field
  // string that a concatenated text is until it is flattened.
  const encoded = new Map(jobs.map((j) => [j, encodeFirstSync(j.snap)]));
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (err) {
    for (const job of jobs) job.reject(err);
    return [];
  }
  let reusable = true;
  let checked = false;
  const passed: FirstSyncJob[] = [];
  try {
    // BEGIN and the lock in one simple-protocol query (one round trip), so the account ids are
    // literals here, escaped by pg.
    const ids = jobs.map((j) => client.escapeLiteral(j.snap.accountId)).join(', ');
    const [, locked] = (await client.query(`BEGIN;
      SELECT a.account_id, a.standard_sequence, a.custom_sequence,
             a.last_synced_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM tim.friends f WHERE f.account_id = a.account_id)
               AND NOT EXISTS (SELECT 1 FROM tim.friend_tags t WHERE t.account_id = a.account_id) AS fresh
      FROM tim.accounts a WHERE a.account_id IN (${ids})
      ORDER BY a.account_id COLLATE "C"
      FOR UPDATE OF a`)) as unknown as [unknown, { rows: LockedFirstSync[] }];
    const byId = new Map(locked.rows.map((r) => [r.account_id, r]));
    checked = true;
    for (const job of jobs) {
      const row = byId.get(job.snap.accountId);
      if (!row) {
        job.reject(
          new SnapshotConflictError('gone', `account ${JSON.stringify(job.snap.accountId)} was removed`),
        );
      } else if (row.standard_sequence !== null || row.custom_sequence !== null) {
        job.reject(new SnapshotConflictError('stale', 'stored sequences changed while pulling'));
      } else if (!row.fresh) {
        job.resolve(undefined);
      } else {
        passed.push(job);
      }
    }
    if (passed.length === 0) {
      await client.query('ROLLBACK');
      return [];
    }
    const friendBytes = passed.map((j) => encoded.get(j)!.friends);
    const tagBytes = passed.map((j) => encoded.get(j)!.tags);
    if (friendBytes.some((b) => b.length > 0)) await copyIn(client, COPY_FRIENDS, friendBytes);
    if (tagBytes.some((b) => b.length > 0)) await copyIn(client, COPY_TAGS, tagBytes);
    const finish = (
      passed.length === 1 ? firstSyncFinishOne(db, passed[0]!) : firstSyncFinish(passed)
    ).compile(db);
    await client.query(finish.sql, finish.parameters as unknown[]);
    await client.query('COMMIT');
    for (const job of passed) {
      const friendCount = job.snap.standard?.friends.length ?? 0;
      job.resolve({
        friendsUpserted: friendCount,
        friendsDeleted: 0,
        tagsUpserted: job.rows - friendCount,
        tagsDeleted: 0,
        friendCount,
        events: 1,
      });
    }
    return [];
  } catch (err) {
    // A failed statement left the transaction aborted: end it, or the connection goes back to the
    // pool mid-transaction. If even that fails, the connection is broken; the pool drops it.
    await client.query('ROLLBACK').catch(() => {
      reusable = false;
    });
    const unsettled = checked ? passed : jobs;
    if (!last) return unsettled;
    for (const job of unsettled) job.reject(err);
    return [];
  } finally {
    client.release(!reusable);
  }
}

/** An account's rows as COPY input, in UTF-8. */
function encodeFirstSync(snap: AccountSnapshot): { friends: Buffer; tags: Buffer } {
  const tags =
    tagCopyText(snap.accountId, snap.standard?.tags ?? [], 'standard') +
    tagCopyText(snap.accountId, snap.custom?.tags ?? [], 'custom');
  return {
    friends: Buffer.from(friendCopyText(snap.accountId, snap.standard?.friends ?? []), 'utf8'),
    tags: Buffer.from(tags, 'utf8'),
  };
}

interface LockedFirstSync {
  account_id: string;
  standard_sequence: number | null;
  custom_sequence: number | null;
  fresh: boolean;
}

/**
 * {@link firstSyncFinish} for one account, with its values as plain parameters: Postgres plans
 * and runs it for less than the unnest form (bench/notes.md), and with few accounts waiting most
 * transactions hold one account.
 */
function firstSyncFinishOne(db: Kysely<Database>, job: FirstSyncJob) {
  const { snap } = job;
  const friendCount = snap.standard?.friends.length ?? 0;
  return sql`
    WITH e AS (${baselineEvent(snap, friendCount)} RETURNING 1)
    ${db
      .updateTable('tim.accounts')
      .set({
        ...syncedColumns(snap, friendCount, job.schedule),
        ...(job.rows > 0 ? { last_changed_at: sql<Date>`now()` } : {}),
      })
      .where('account_id', '=', snap.accountId)}`;
}

/**
 * The history's baseline row for each account of `jobs` and its sequences, in one statement. The
 * accounts' values come as arrays, unnested into rows.
 */
function firstSyncFinish(jobs: readonly FirstSyncJob[]) {
  const ids = jobs.map((j) => j.snap.accountId);
  const std = jobs.map((j) => j.snap.standardSequence);
  const cus = jobs.map((j) => j.snap.customSequence);
  const counts = jobs.map((j) => j.snap.standard?.friends.length ?? 0);
  const changed = jobs.map((j) => j.rows > 0);
  const rows = sql`unnest(${ids}::text[], ${std}::bigint[], ${cus}::bigint[], ${counts}::int[], ${changed}::boolean[])
    AS u(account_id, standard_sequence, custom_sequence, friend_count, changed)`;
  const status = Object.entries(syncedStatus(jobs[0]!.schedule)).map(
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
