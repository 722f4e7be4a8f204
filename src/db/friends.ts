/**
 * Applying one account's pull to `tim.friends` and `tim.friend_tags`, in one transaction, together
 * with the account's sequences.
 *
 * Every write is set-based. A first sync sends its rows by `COPY` (src/db/copy.ts says why), in a
 * transaction it shares with the other first syncs waiting to apply;
 * every other apply sends them as one json parameter per table and category (the snapshot's row
 * objects, stringified as they are), expanded server-side by `json_to_recordset` into typed columns.
 * Either way an account costs a handful of statements whatever its friend count. Upserts skip rows
 * whose values are unchanged (`IS DISTINCT FROM`), so an incremental pass rewrites nothing it need
 * not. BENCHMARKS.md has the measurements behind these choices.
 *
 * The same transaction appends the change history, `tim.friend_events`: one row per friend added,
 * removed or changed (its column and tag changes together), derived from the very statements that
 * write the rows, so history and mirror commit or vanish together. An account's first sync records
 * one `baseline` row instead of a row per friend.
 */
import { type Kysely, sql, type Transaction } from 'kysely';
import pLimit, { type LimitFunction } from 'p-limit';
import type pg from 'pg';
import { afterSync } from './accounts.js';
import { copyIn, FRIEND_COPY_COLUMNS, friendCopyText, TAG_COPY_COLUMNS, tagCopyText } from './copy.js';
import { pgPoolOf } from './pool.js';
import type { Database } from './schema.js';

/** A friend's standard fields, as columns. `addTime` is Unix seconds. */
export interface FriendRow {
  friendId: string;
  remark: string | null;
  groups: string[] | null;
  addSource: string | null;
  addWording: string | null;
  addTime: number | null;
}

/** One tag row; `value` is any JSON value and is stored with its JSON type. */
export interface TagRow {
  friendId: string;
  tag: string;
  value: unknown;
}

/**
 * What one complete pull of an account says. A category is present only when the server sent it,
 * and then it is the FULL set: anything of that category not in it is gone at the source.
 * An absent category was unchanged and must be left exactly as it is.
 */
export interface AccountSnapshot {
  accountId: string;
  /** The sequences the pull was made with (what the mirror held when it started). */
  baseStandardSequence: number | null;
  baseCustomSequence: number | null;
  /**
   * The account had never been synced when its pull started: the apply tries the COPY first sync.
   * Without it the general path writes the same rows, at about a third more Postgres CPU per row.
   */
  neverSynced?: boolean;
  /** The sequences the server reported for this pull. */
  standardSequence: number;
  customSequence: number;
  /** Every friend with its standard fields, and every standard-category tag we keep as a row. */
  standard?: { friends: FriendRow[]; tags: TagRow[] };
  /** Every custom-category tag of every friend. */
  custom?: { tags: TagRow[] };
}

/** When a synced account is due again. */
export interface NextSync {
  /** `SYNC_INTERVAL` in ms. */
  intervalMs: number;
  /** ± this fraction of random spread, so accounts synced together do not come due together. Default 0.1. */
  jitter?: number;
}

const DEFAULT_NEXT_SYNC: NextSync = { intervalMs: 3_600_000 };
const DEFAULT_JITTER = 0.1;

function nextSyncAt(s: NextSync) {
  const jitter = s.jitter ?? DEFAULT_JITTER;
  return sql<Date>`now() + ${s.intervalMs}::float8 * (1 - ${jitter}::float8 + random() * 2 * ${jitter}::float8) * interval '1 millisecond'`;
}

/**
 * How many {@link applySnapshot}s run at once per database handle.
 *
 * An apply is a burst of Postgres CPU: inserts and index maintenance. More of them
 * at once than the server has cores to give only adds lock and cache contention; on the 2-core
 * benchmark machine 24 at once cost Postgres about a quarter more CPU per row than 2 to 4, and the
 * full sweep ran 10–20% slower for it (BENCHMARKS.md). Applies over the limit wait here, before
 * taking a connection, so the rest of the pool stays free for claims, bookkeeping and heartbeats.
 */
export const DEFAULT_APPLY_CONCURRENCY = 4;

const applyGates = new WeakMap<Kysely<Database>, LimitFunction>();

function applyGate(db: Kysely<Database>): LimitFunction {
  let gate = applyGates.get(db);
  if (!gate) {
    gate = pLimit(DEFAULT_APPLY_CONCURRENCY);
    applyGates.set(db, gate);
  }
  return gate;
}

/** Row counts written by one apply. */
export interface ApplyResult {
  friendsUpserted: number;
  friendsDeleted: number;
  tagsUpserted: number;
  tagsDeleted: number;
  friendCount: number;
  /** Rows appended to `tim.friend_events`: one per friend added, removed or changed, or the baseline. */
  events: number;
}

/**
 * The mirror no longer matches what the pull was based on: another writer committed first, or the
 * custom data names friends the mirror does not have. Nothing was written; pull again.
 */
export class SnapshotConflictError extends Error {
  readonly code = 'SNAPSHOT_CONFLICT';
  /** `stale`: the stored sequences moved; `drift`: the custom data names unknown friends. */
  readonly reason: 'stale' | 'drift' | 'gone';
  constructor(reason: 'stale' | 'drift' | 'gone', message: string) {
    super(message);
    this.reason = reason;
  }
}

/**
 * Applies a snapshot and stores its sequences in the same transaction, so the stored sequences
 * are never ahead of the data.
 *
 * @throws SnapshotConflictError when the account's stored sequences differ from the snapshot's base
 *   (someone else synced it meanwhile) or custom tags name friends the mirror lacks (drift);
 *   the transaction is rolled back and nothing is written.
 */
export async function applySnapshot(
  db: Kysely<Database>,
  snap: AccountSnapshot,
  schedule: NextSync = DEFAULT_NEXT_SYNC,
): Promise<ApplyResult> {
  if (isFirstSync(snap) && pgPoolOf(db)) {
    const first = await firstSyncByCopy(db, snap, schedule);
    if (first) return first;
  }
  return applyGate(db)(() => applyInTransaction(db, snap, schedule));
}

/** The columns of `tim.accounts` every successful apply writes, besides the data's own. */
function syncedColumns(snap: AccountSnapshot, friendCount: number, schedule: NextSync) {
  return {
    standard_sequence: snap.standardSequence,
    custom_sequence: snap.customSequence,
    friend_count: friendCount,
    ...syncedStatus(schedule),
  };
}

/** What every successful apply sets on its account, whatever the data. */
function syncedStatus(schedule: NextSync) {
  return {
    status: 'ok' as const,
    last_error: null,
    failures: 0,
    last_synced_at: sql<Date>`now()`,
    last_attempt_at: sql<Date>`now()`,
    ...afterSync(nextSyncAt(schedule)),
  };
}

/**
 * An account never synced, pulled from zero sequences: the COPY path is worth trying. A
 * `resync --full` also pulls from zero sequences, but onto rows the COPY path would refuse after
 * locking and looking, so trying it first would only cost a round trip.
 */
function isFirstSync(snap: AccountSnapshot): boolean {
  return (
    snap.neverSynced === true &&
    snap.baseStandardSequence === null &&
    snap.baseCustomSequence === null &&
    !!snap.standard
  );
}

/** A first sync waiting for {@link runFirstSyncs}. */
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
 * joins it. Measured on the 2-core machine (bench/notes.md, 2026-12-02): 600 first syncs one per
 * transaction cost Postgres 12.0 µs per row and the client 1.5–1.6 s; 8 per transaction 8.5–10.7 µs
 * and 0.6–0.75 s; 32 per transaction 7.3–8.1 µs and 0.6–0.7 s, close to one bulk COPY (8.3 µs).
 */
const FIRST_SYNC_BATCH_ACCOUNTS = 32;
/** Keeps the buffers a transaction holds small (peak RSS: one full-bench run at 20,000 read 252 MB). */
const FIRST_SYNC_BATCH_ROWS = 10_000;

const firstSyncQueues = new WeakMap<Kysely<Database>, FirstSyncJob[]>();

/**
 * A first sync by `COPY`: the account's rows go to Postgres in the text format COPY parses
 * directly, which costs the server about a quarter less CPU per row than a `json_to_recordset`
 * insert (see src/db/copy.ts). A first sync writes the most rows of any apply, and a full sweep is
 * nothing but first syncs, so this is where the server's CPU goes.
 *
 * First syncs that wait for an apply slot together share one transaction when the slot comes (see
 * {@link runFirstSyncs}): the statements around the rows cost Postgres and this process about as
 * much as a few hundred rows each, and a shared COPY is cheaper per row. An apply slot that finds
 * nobody waiting runs its account alone, so an idle daemon adds no delay.
 *
 * Returns undefined when the account was synced before or holds rows (a `resync --full`, say), for
 * the general path.
 *
 * @throws SnapshotConflictError like {@link applySnapshot}
 */
function firstSyncByCopy(
  db: Kysely<Database>,
  snap: AccountSnapshot,
  schedule: NextSync,
): Promise<ApplyResult | undefined> {
  const queue = firstSyncQueue(db);
  const rows =
    (snap.standard?.friends.length ?? 0) +
    (snap.standard?.tags.length ?? 0) +
    (snap.custom?.tags.length ?? 0);
  const done = new Promise<ApplyResult | undefined>((resolve, reject) => {
    queue.push({ snap, schedule, rows, resolve, reject });
  });
  requestFirstSyncSlot(db, queue);
  return done;
}

function firstSyncQueue(db: Kysely<Database>): FirstSyncJob[] {
  let queue = firstSyncQueues.get(db);
  if (!queue) {
    queue = [];
    firstSyncQueues.set(db, queue);
  }
  return queue;
}

/**
 * One slot request per account; a slot takes its share of the accounts waiting by then, so many
 * requests find their account already applied. Made here, not where the account is queued: a
 * request's closure lives until its slot comes, and must hold nothing of the account (closures in
 * `firstSyncByCopy` kept every applied snapshot alive until then: 70 MB more live heap by the end
 * of a full sweep).
 */
function requestFirstSyncSlot(db: Kysely<Database>, queue: FirstSyncJob[]): void {
  void applyGate(db)(() => runFirstSyncs(db, queue));
}

/** Takes the next batch off `queue`: the oldest job, and the ones after it that fit beside it. */
async function runFirstSyncs(db: Kysely<Database>, queue: FirstSyncJob[]): Promise<void> {
  // A fair share of those waiting, not all of them: one transaction runs on one connection and one
  // Postgres backend, so a slot that took everything would leave the other slots (and cores) idle.
  // With the ceiling scenario's 4 callers at once, taking all made its 1,000 accounts take 7.0 s
  // instead of 5.0 s (one run).
  const share = Math.min(FIRST_SYNC_BATCH_ACCOUNTS, Math.ceil(queue.length / DEFAULT_APPLY_CONCURRENCY));
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
  const again = await copyFirstSyncs(db, batch, batch.length === 1);
  for (const job of again) await copyFirstSyncs(db, [job], true);
}

function sameSchedule(a: NextSync, b: NextSync): boolean {
  return a.intervalMs === b.intervalMs && (a.jitter ?? DEFAULT_JITTER) === (b.jitter ?? DEFAULT_JITTER);
}

/**
 * One transaction on one connection for `jobs`: lock the account rows (in id order, so two such
 * transactions cannot deadlock) and check each was never synced, that its sequences are still the
 * snapshot's base and that it holds no rows; then COPY the friends and the tags of the accounts
 * that passed, append one baseline row each to the history and store their sequences (one
 * statement), and commit: five round trips, however many accounts. If any statement fails, the
 * transaction rolls back whole: sequences are never stored without their rows.
 *
 * The lock and the EXISTS probes follow the reasoning in {@link applyInTransaction}: the probes
 * read the statement's snapshot, and rows committed while the lock was awaited always come with
 * moved sequences, which the check (made on the locked, latest row) refuses.
 *
 * Settles every job it applied or refused. When a statement fails: with `last`, the failure
 * rejects every job not yet settled; without, those jobs are returned, unsettled, to be tried again.
 */
async function copyFirstSyncs(
  db: Kysely<Database>,
  jobs: FirstSyncJob[],
  last: boolean,
): Promise<FirstSyncJob[]> {
  const pool = pgPoolOf(db)!;
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
 * and runs it for less than the unnest form (in the ceiling scenario's 4 accounts at once, where
 * every transaction holds one account, the unnest form cost 0.4–1.0 s more Postgres CPU per 1,000).
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

const COPY_FRIENDS = `COPY tim.friends ${FRIEND_COPY_COLUMNS} FROM STDIN`;
const COPY_TAGS = `COPY tim.friend_tags ${TAG_COPY_COLUMNS} FROM STDIN`;

async function applyInTransaction(
  db: Kysely<Database>,
  snap: AccountSnapshot,
  schedule: NextSync,
): Promise<ApplyResult> {
  return db.transaction().execute(async (trx) => {
    // Lock the account row: concurrent applies of one account serialise here, and the check below
    // refuses a snapshot pulled from sequences that are no longer the stored ones.
    //
    // The same statement asks which tables already hold rows of the account: with none there is
    // nothing to skip, update or delete, so plain INSERTs do (a third cheaper for Postgres than an
    // upsert, and no anti-joins). Every writer of an account's rows takes this lock and stores new
    // sequences in the same transaction, so rows committed while we waited for the lock (which the
    // EXISTS, reading the statement's snapshot, would miss) always come with moved sequences, and
    // the check below refuses the snapshot before the answer is used.
    const locked = await sql<{
      standard_sequence: number | null;
      custom_sequence: number | null;
      friend_count: number;
      has_friends: boolean;
      has_tags: boolean;
      first_sync: boolean;
    }>`
      SELECT a.standard_sequence, a.custom_sequence, a.friend_count, a.last_synced_at IS NULL AS first_sync,
             EXISTS (SELECT 1 FROM tim.friends f WHERE f.account_id = a.account_id) AS has_friends,
             EXISTS (SELECT 1 FROM tim.friend_tags t WHERE t.account_id = a.account_id) AS has_tags
      FROM tim.accounts a WHERE a.account_id = ${snap.accountId}
      FOR UPDATE OF a`.execute(trx);
    const current = locked.rows[0];
    if (!current)
      throw new SnapshotConflictError('gone', `account ${JSON.stringify(snap.accountId)} was removed`);
    if (
      current.standard_sequence !== snap.baseStandardSequence ||
      current.custom_sequence !== snap.baseCustomSequence
    ) {
      throw new SnapshotConflictError('stale', 'stored sequences changed while pulling');
    }
    const hasFriends = current.has_friends;
    const hasTags = current.has_tags;

    const result: ApplyResult = {
      friendsUpserted: 0,
      friendsDeleted: 0,
      tagsUpserted: 0,
      tagsDeleted: 0,
      friendCount: snap.standard ? snap.standard.friends.length : current.friend_count,
      events: 0,
    };
    // History starts with the account's first committed sync (never synced before; `resync --full`
    // keeps last_synced_at, so it is not a first sync): one baseline row, not a row per friend.
    const baseline = current.first_sync;
    if (snap.custom && !snap.standard) await assertFriendsKnown(trx, snap.accountId, snap.custom.tags);
    if (!hasFriends && !hasTags) {
      Object.assign(result, await insertAll(trx, snap, baseline));
    } else {
      // Each statement hands back its changes per friend (a json text, passed on untouched); one
      // statement then appends them, merged per friend, so a friend whose remark and custom tag both
      // changed is one event.
      const changes: string[] = [];
      if (snap.standard) {
        const f = await replaceFriends(trx, snap.accountId, snap.standard.friends, hasFriends);
        result.friendsUpserted = f.friendsUpserted;
        result.friendsDeleted = f.friendsDeleted;
        if (f.events) changes.push(f.events);
        const t = await replaceTags(trx, snap.accountId, 'standard', snap.standard.tags, hasTags);
        result.tagsUpserted += t.upserted;
        result.tagsDeleted += t.deleted;
        if (t.events) changes.push(t.events);
      }
      if (snap.custom) {
        const t = await replaceTags(trx, snap.accountId, 'custom', snap.custom.tags, hasTags);
        result.tagsUpserted += t.upserted;
        result.tagsDeleted += t.deleted;
        if (t.events) changes.push(t.events);
      }
      if (baseline) result.events = await recordBaseline(trx, snap, result.friendCount);
      else if (changes.length > 0) result.events = await recordEvents(trx, snap, changes);
    }

    const changed =
      result.friendsUpserted + result.friendsDeleted + result.tagsUpserted + result.tagsDeleted > 0;
    await trx
      .updateTable('tim.accounts')
      .set({
        ...syncedColumns(snap, result.friendCount, schedule),
        ...(changed ? { last_changed_at: sql`now()` } : {}),
      })
      .where('account_id', '=', snap.accountId)
      .execute();
    return result;
  });
}

/**
 * Records a pull that found both sequences unchanged: bookkeeping only, no data rows touched.
 * Refuses (returns false) if the stored sequences moved meanwhile, like {@link applySnapshot}.
 */
export async function recordUnchanged(
  db: Kysely<Database>,
  accountId: string,
  standardSequence: number,
  customSequence: number,
  schedule: NextSync = DEFAULT_NEXT_SYNC,
): Promise<boolean> {
  const res = await db
    .updateTable('tim.accounts')
    .set({
      status: 'ok',
      last_error: null,
      failures: 0,
      last_synced_at: sql`now()`,
      last_attempt_at: sql`now()`,
      ...afterSync(nextSyncAt(schedule)),
    })
    .where('account_id', '=', accountId)
    .where('standard_sequence', '=', standardSequence)
    .where('custom_sequence', '=', customSequence)
    .executeTakeFirst();
  return Number(res.numUpdatedRows) === 1;
}

/*
 * The rows travel as the snapshot's own objects, JSON-stringified as they are: no per-row mapping
 * on our side, and `json_to_recordset` types the columns on the server (`groups` becomes text[]).
 * A tag's JSON null comes out of it as SQL NULL, so it is turned back into the jsonb null it was.
 */
const FRIEND_RECORD = sql`("friendId" text, remark text, groups text[], "addSource" text, "addWording" text, "addTime" bigint)`;
const FRIEND_VALUES = sql`u.remark, u.groups, u."addSource" AS add_source, u."addWording" AS add_wording,
  to_timestamp(u."addTime") AS add_time`;

function friendRows(friends: readonly FriendRow[]) {
  return sql`SELECT u."friendId" AS friend_id, ${FRIEND_VALUES}
    FROM json_to_recordset(${JSON.stringify(friends)}::json) AS u${FRIEND_RECORD}`;
}

function tagRows(tags: readonly TagRow[]) {
  return sql`SELECT u."friendId" AS friend_id, u.tag, coalesce(u.value, 'null'::jsonb) AS value
    FROM json_to_recordset(${JSON.stringify(tags)}::json) AS u("friendId" text, tag text, value jsonb)`;
}

function counts(rows: { a?: string | number; b?: string | number }[]): [number, number] {
  return [Number(rows[0]?.a ?? 0), Number(rows[0]?.b ?? 0)];
}

/*
 * The history's `changed` column: {field: {"old": v, "new": v}}, a key left out where the field was
 * absent (a NULL column, a tag not set), so a tag whose value is JSON null stays distinct from no
 * tag. Fields are the friend columns (add_time as Unix seconds, as Tencent sends it) and tag names.
 */

/** A friend row's columns as a jsonb object; absent (NULL) columns are left out. */
function friendJson(alias: 'c' | 'i' | 'o' | 'r') {
  const a = sql.raw(alias);
  return sql`jsonb_strip_nulls(jsonb_build_object('remark', ${a}.remark, 'groups', ${a}.groups,
    'add_source', ${a}.add_source, 'add_wording', ${a}.add_wording,
    'add_time', extract(epoch FROM ${a}.add_time)::bigint))`;
}

/** One field's change from jsonb `o` to jsonb `n`, SQL NULL meaning absent. */
function fieldChange(o: ReturnType<typeof sql.raw>, n: ReturnType<typeof sql.raw>) {
  return sql`(CASE WHEN ${o} IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('old', ${o}) END
    || CASE WHEN ${n} IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('new', ${n}) END)`;
}

/** The fields that differ between two {@link friendJson} objects, as {field: change}. */
function friendChanges(oldJson: ReturnType<typeof sql>, newJson: ReturnType<typeof sql>) {
  return sql`(SELECT coalesce(jsonb_object_agg(key, ${fieldChange(sql.raw('o.value'), sql.raw('n.value'))}), '{}'::jsonb)
    FROM jsonb_each(${oldJson}) AS o FULL JOIN jsonb_each(${newJson}) AS n USING (key)
    WHERE o.value IS DISTINCT FROM n.value)`;
}

/**
 * Per-friend tag changes as the json text a replace statement hands back: `x` is a query with
 * columns friend_id, tag, ov and nv (old and new value, jsonb, NULL = not set).
 */
function tagEvents(x: ReturnType<typeof sql>) {
  return sql`(SELECT json_agg(json_build_object('f', friend_id, 'k', 'changed', 'c', c))::text
    FROM (SELECT friend_id, jsonb_object_agg(tag, ${fieldChange(sql.raw('ov'), sql.raw('nv'))}) AS c
          FROM (${x}) AS x GROUP BY friend_id) AS e)`;
}

/** The account's first sync: its history starts with one row holding the friend count. */
async function recordBaseline(
  trx: Transaction<Database>,
  snap: AccountSnapshot,
  friendCount: number,
): Promise<number> {
  await baselineEvent(snap, friendCount).execute(trx);
  return 1;
}

/** The history's baseline row: the account's friend count, with the snapshot's sequences. */
function baselineEvent(snap: AccountSnapshot, friendCount: number) {
  return sql`INSERT INTO tim.friend_events (account_id, kind, changed, standard_sequence, custom_sequence)
    VALUES (${snap.accountId}, 'baseline', jsonb_build_object('friend_count', ${friendCount}::int),
            ${snap.standardSequence}, ${snap.customSequence})`;
}

/**
 * CTEs `fr` and `tg` (the snapshot's friend and tag rows) and `f` and `t` (their INSERTs, each
 * `RETURNING 1`), for {@link insertAll}'s statement. Postgres inlines `fr` and `tg` when they are
 * read once and materialises them when the statement reads them again (the history's `added` rows).
 */
function insertRows(snap: AccountSnapshot) {
  return sql`fr AS (${friendRows(snap.standard?.friends ?? [])}),
    tg AS (
      SELECT r.*, 'standard' AS category FROM (${tagRows(snap.standard?.tags ?? [])}) AS r
      UNION ALL
      SELECT r.*, 'custom' FROM (${tagRows(snap.custom?.tags ?? [])}) AS r
    ), f AS (
      INSERT INTO tim.friends (account_id, friend_id, remark, groups, add_source, add_wording, add_time)
      SELECT ${snap.accountId}, r.* FROM fr AS r
      RETURNING 1
    ), t AS (
      INSERT INTO tim.friend_tags (account_id, friend_id, tag, value, category)
      SELECT ${snap.accountId}, r.friend_id, r.tag, r.value, r.category FROM tg AS r
      RETURNING 1
    )`;
}

/**
 * Appends the changes the replace statements handed back, one row per friend: a friend's column
 * and tag changes merge into one `changed` object; a friend added in this apply stays `added` with
 * its tags in the same object; `removed` carries no fields (its tags went with it).
 */
async function recordEvents(
  trx: Transaction<Database>,
  snap: AccountSnapshot,
  changes: string[],
): Promise<number> {
  const res = await sql`
    INSERT INTO tim.friend_events (account_id, friend_id, kind, changed, standard_sequence, custom_sequence)
    SELECT ${snap.accountId}, g.f, g.kind, CASE WHEN g.kind = 'removed' THEN NULL ELSE coalesce(g.c, '{}'::jsonb) END,
           ${snap.standardSequence}, ${snap.customSequence}
    FROM (
      SELECT e.f,
             CASE WHEN bool_or(e.k = 'removed') THEN 'removed' WHEN bool_or(e.k = 'added') THEN 'added' ELSE 'changed' END AS kind,
             jsonb_object_agg(kv.key, kv.value) FILTER (WHERE kv.key IS NOT NULL) AS c
      FROM unnest(${changes}::text[]) AS j(t)
      CROSS JOIN LATERAL json_to_recordset(j.t::json) AS e(f text, k text, c jsonb)
      LEFT JOIN LATERAL jsonb_each(e.c) AS kv ON true
      GROUP BY e.f
    ) AS g
    ORDER BY g.f COLLATE "C"`.execute(trx);
  return Number(res.numAffectedRows ?? 0);
}

/**
 * The account holds no rows yet (a first sync): there is nothing to skip, update or delete, so
 * every row of the snapshot is inserted, friends and tags in ONE statement. No foreign key checks
 * each row (migration 2026-11-25T05-00-00 says why): the tags belong to friends of the same snapshot.
 *
 * The history gets one row in the same statement: the baseline on a first sync, which keeps a first
 * sync as cheap as before. An account that was synced before and has no rows now (it had no
 * friends) gets an `added` row per friend instead, with all its fields and tags.
 */
async function insertAll(
  trx: Transaction<Database>,
  snap: AccountSnapshot,
  baseline: boolean,
): Promise<Pick<ApplyResult, 'friendsUpserted' | 'tagsUpserted' | 'events'>> {
  const friends = snap.standard?.friends ?? [];
  const events = baseline
    ? baselineEvent(snap, friends.length)
    : sql`INSERT INTO tim.friend_events (account_id, friend_id, kind, changed, standard_sequence, custom_sequence)
      SELECT ${snap.accountId}, r.friend_id, 'added',
             ${friendChanges(sql`'{}'::jsonb`, friendJson('r'))} || coalesce(g.c, '{}'::jsonb),
             ${snap.standardSequence}, ${snap.customSequence}
      FROM fr AS r LEFT JOIN (
        SELECT friend_id, jsonb_object_agg(tag, jsonb_build_object('new', value)) AS c FROM tg GROUP BY friend_id
      ) AS g USING (friend_id)
      ORDER BY r.friend_id COLLATE "C"`;
  const res = await sql<{ a: string; b: string; e: string }>`
    WITH ${insertRows(snap)},
    e AS (${events} RETURNING 1)
    SELECT (SELECT count(*) FROM f) AS a, (SELECT count(*) FROM t) AS b, (SELECT count(*) FROM e) AS e`.execute(
    trx,
  );
  const [friendsUpserted, tagsUpserted] = counts(res.rows);
  return { friendsUpserted, tagsUpserted, events: Number(res.rows[0]?.e ?? 0) };
}

/**
 * Standard data came back in full: upsert every friend, and delete the friends missing from it
 * (they are no longer friends; their tags go with them, by the set-based `friends_delete_cascade`
 * trigger at the end of the statement). One statement.
 *
 * The upsert's join drops unchanged rows first: ON CONFLICT would otherwise lock, and so dirty,
 * every unchanged row even though its WHERE skips the update. The WHERE stays as the rule. The
 * rows that join keeps, with their old values beside them, are also the history's added and
 * changed friends; the deleted rows are its removed ones.
 */
async function replaceFriends(
  trx: Transaction<Database>,
  accountId: string,
  friends: FriendRow[],
  hasFriends: boolean,
): Promise<{ friendsUpserted: number; friendsDeleted: number; events: string | null }> {
  if (!hasFriends) {
    const ins = await sql<{ a: string; e: string | null }>`
      WITH i AS (
        INSERT INTO tim.friends (account_id, friend_id, remark, groups, add_source, add_wording, add_time)
        SELECT ${accountId}, r.* FROM (${friendRows(friends)}) AS r
        RETURNING friend_id, remark, groups, add_source, add_wording, add_time
      )
      SELECT count(*) AS a,
             json_agg(json_build_object('f', i.friend_id, 'k', 'added',
                                        'c', ${friendChanges(sql`'{}'::jsonb`, friendJson('i'))}))::text AS e
      FROM i`.execute(trx);
    return {
      friendsUpserted: Number(ins.rows[0]?.a ?? 0),
      friendsDeleted: 0,
      events: ins.rows[0]?.e ?? null,
    };
  }
  const res = await sql<{ a: string; b: string; e: string | null }>`
    WITH r AS MATERIALIZED (${friendRows(friends)}),
    d AS (
      DELETE FROM tim.friends AS f
      WHERE f.account_id = ${accountId} AND NOT EXISTS (SELECT 1 FROM r WHERE r.friend_id = f.friend_id)
      RETURNING f.friend_id
    ), c AS MATERIALIZED (
      SELECT r.*, o.friend_id IS NULL AS added, ${friendJson('o')} AS prev
      FROM r
      LEFT JOIN tim.friends o ON o.account_id = ${accountId} AND o.friend_id = r.friend_id
      WHERE o.friend_id IS NULL
         OR (o.remark, o.groups, o.add_source, o.add_wording, o.add_time)
            IS DISTINCT FROM (r.remark, r.groups, r.add_source, r.add_wording, r.add_time)
    ), i AS (
      INSERT INTO tim.friends AS f (account_id, friend_id, remark, groups, add_source, add_wording, add_time)
      SELECT ${accountId}, c.friend_id, c.remark, c.groups, c.add_source, c.add_wording, c.add_time FROM c
      ON CONFLICT (account_id, friend_id) DO UPDATE SET
        remark = excluded.remark, groups = excluded.groups, add_source = excluded.add_source,
        add_wording = excluded.add_wording, add_time = excluded.add_time, updated_at = now()
      WHERE (f.remark, f.groups, f.add_source, f.add_wording, f.add_time)
            IS DISTINCT FROM (excluded.remark, excluded.groups, excluded.add_source, excluded.add_wording, excluded.add_time)
      RETURNING 1
    )
    SELECT (SELECT count(*) FROM i) AS a, (SELECT count(*) FROM d) AS b,
           (SELECT json_agg(e)::text FROM (
              SELECT d.friend_id AS f, 'removed' AS k, NULL::jsonb AS c FROM d
              UNION ALL
              SELECT c.friend_id, CASE WHEN c.added THEN 'added' ELSE 'changed' END,
                     ${friendChanges(sql`c.prev`, friendJson('c'))}
              FROM c) AS e) AS e`.execute(trx);
  const [friendsUpserted, friendsDeleted] = counts(res.rows);
  return { friendsUpserted, friendsDeleted, events: res.rows[0]?.e ?? null };
}

/**
 * A category's tags came back in full: upsert them, and delete the category's tags missing from
 * them (cleared at the source). One statement, the same way as {@link replaceFriends}.
 */
async function replaceTags(
  trx: Transaction<Database>,
  accountId: string,
  category: 'standard' | 'custom',
  tags: TagRow[],
  hasTags: boolean,
): Promise<{ upserted: number; deleted: number; events: string | null }> {
  if (!hasTags) {
    if (tags.length === 0) return { upserted: 0, deleted: 0, events: null };
    const ins = await sql<{ a: string; e: string | null }>`
      WITH i AS (
        INSERT INTO tim.friend_tags (account_id, friend_id, tag, value, category)
        SELECT ${accountId}, r.friend_id, r.tag, r.value, ${category} FROM (${tagRows(tags)}) AS r
        RETURNING friend_id, tag, value
      )
      SELECT (SELECT count(*) FROM i) AS a,
             ${tagEvents(sql`SELECT friend_id, tag, NULL::jsonb AS ov, value AS nv FROM i`)} AS e`.execute(
      trx,
    );
    return { upserted: Number(ins.rows[0]?.a ?? 0), deleted: 0, events: ins.rows[0]?.e ?? null };
  }
  const res = await sql<{ a: string; b: string; e: string | null }>`
    WITH r AS MATERIALIZED (${tagRows(tags)}),
    d AS (
      DELETE FROM tim.friend_tags AS t
      WHERE t.account_id = ${accountId} AND t.category = ${category}
        AND NOT EXISTS (SELECT 1 FROM r WHERE r.friend_id = t.friend_id AND r.tag = t.tag)
      RETURNING t.friend_id, t.tag, t.value
    ), c AS MATERIALIZED (
      SELECT r.friend_id, r.tag, r.value, o.value AS ov
      FROM r
      LEFT JOIN tim.friend_tags o ON o.account_id = ${accountId} AND o.friend_id = r.friend_id AND o.tag = r.tag
      WHERE o.tag IS NULL OR (o.value, o.category) IS DISTINCT FROM (r.value, ${category}::text)
    ), i AS (
      INSERT INTO tim.friend_tags AS t (account_id, friend_id, tag, value, category)
      SELECT ${accountId}, c.friend_id, c.tag, c.value, ${category} FROM c
      ON CONFLICT (account_id, friend_id, tag) DO UPDATE SET
        value = excluded.value, category = excluded.category, updated_at = now()
      WHERE (t.value, t.category) IS DISTINCT FROM (excluded.value, excluded.category)
      RETURNING 1
    )
    SELECT (SELECT count(*) FROM i) AS a, (SELECT count(*) FROM d) AS b,
           ${tagEvents(sql`SELECT friend_id, tag, value AS ov, NULL::jsonb AS nv FROM d
                           UNION ALL
                           SELECT friend_id, tag, ov, value FROM c WHERE ov IS DISTINCT FROM value`)} AS e`.execute(
    trx,
  );
  const [upserted, deleted] = counts(res.rows);
  return { upserted, deleted, events: res.rows[0]?.e ?? null };
}

/**
 * With standard data unchanged the friend list is unchanged, so custom tags can only name friends
 * the mirror already has. One that does not means the mirror drifted from the source; refuse, and
 * let the caller pull everything.
 */
async function assertFriendsKnown(
  trx: Transaction<Database>,
  accountId: string,
  tags: TagRow[],
): Promise<void> {
  if (tags.length === 0) return;
  const ids = [...new Set(tags.map((t) => t.friendId))];
  const res = await sql<{ n: string }>`
    SELECT count(*) AS n FROM unnest(${ids}::text[]) AS t(id)
    WHERE NOT EXISTS (SELECT 1 FROM tim.friends f WHERE f.account_id = ${accountId} AND f.friend_id = t.id)`.execute(
    trx,
  );
  const unknown = Number(res.rows[0]?.n ?? 0);
  if (unknown > 0) {
    throw new SnapshotConflictError(
      'drift',
      `custom data names ${unknown} friend(s) the mirror does not have`,
    );
  }
}

/** An account's mirrored friends with all their tag rows, as stored. */
export interface MirroredFriend {
  friendId: string;
  remark: string | null;
  groups: string[] | null;
  addSource: string | null;
  addWording: string | null;
  /** Unix seconds. */
  addTime: number | null;
  tags: { tag: string; value: unknown; category: 'standard' | 'custom' }[];
}

/** Reads an account's mirror, sorted by friend id (code-point order of the ids' UTF-8 bytes). */
export async function readMirror(db: Kysely<Database>, accountId: string): Promise<MirroredFriend[]> {
  const res = await sql<{
    friend_id: string;
    remark: string | null;
    groups: string[] | null;
    add_source: string | null;
    add_wording: string | null;
    add_time: number | null;
    tags: { tag: string; value: unknown; category: 'standard' | 'custom' }[];
  }>`
    SELECT f.friend_id, f.remark, f.groups, f.add_source, f.add_wording,
           extract(epoch FROM f.add_time)::float8 AS add_time,
           coalesce((SELECT jsonb_agg(jsonb_build_object('tag', t.tag, 'value', t.value, 'category', t.category)
                                      ORDER BY t.tag COLLATE "C")
                     FROM tim.friend_tags t
                     WHERE t.account_id = f.account_id AND t.friend_id = f.friend_id), '[]'::jsonb) AS tags
    FROM tim.friends f
    WHERE f.account_id = ${accountId}
    ORDER BY f.friend_id COLLATE "C"`.execute(db);
  return res.rows.map((r) => ({
    friendId: r.friend_id,
    remark: r.remark,
    groups: r.groups,
    addSource: r.add_source,
    addWording: r.add_wording,
    addTime: r.add_time,
    tags: r.tags,
  }));
}
