/**
 * The one way the sync writes an account's pull: a {@link FriendWriter}, made by the caller for its
 * database handle, bounds how many applies run at once and sends each to the path that fits it
 * (src/db/first-sync.ts or src/db/apply.ts). First syncs that wait for a slot together share its
 * transaction. Its state (the apply slots, the first syncs waiting) lives in the instance, so two
 * writers never share it.
 */
import type { Kysely } from 'kysely';
import pLimit, { type LimitFunction } from 'p-limit';
import type pg from 'pg';
import { applyInTransaction } from './apply.js';
import { copyRowsOf, jsonRowsOf, type RowFormat } from './encoded-rows.js';
import { type FirstSync, type FirstSyncOutcome, firstSyncsByCopy, isFirstSync } from './first-sync.js';
import { pgPoolOf } from './pool.js';
import type { Database } from './schema.js';
import {
  type AccountSnapshot,
  type ApplyResult,
  type EncodedSnapshot,
  type NextSync,
  SnapshotConflictError,
  type SnapshotHead,
} from './snapshot-types.js';
import { DEFAULT_NEXT_SYNC, sameSchedule } from './synced.js';

/**
 * Applies at once by default (`SYNC_APPLY_CONCURRENCY`). An apply is a burst of Postgres CPU
 * (inserts and index maintenance); more of them at once than the server has cores to give only adds
 * lock and cache contention (BENCHMARKS.md).
 */
export const DEFAULT_APPLY_CONCURRENCY = 4;

/** Options of a {@link FriendWriter}. */
export interface FriendWriterOptions {
  /**
   * How many applies run at once; the others wait before taking a connection, so the rest of the
   * pool stays free for claims, bookkeeping and heartbeats. Default {@link DEFAULT_APPLY_CONCURRENCY}.
   */
  applyConcurrency?: number;
  /**
   * At most this many first syncs share one transaction (1: each its own). Default
   * {@link DEFAULT_FIRST_SYNC_BATCH}.
   */
  firstSyncBatch?: number;
}

/**
 * First syncs that wait for an apply slot together share its transaction, up to this many accounts
 * and {@link FIRST_SYNC_BATCH_ROWS} rows (src/db/first-sync.ts says why).
 */
export const DEFAULT_FIRST_SYNC_BATCH = 32;
/** Keeps the bytes one transaction sends small. */
const FIRST_SYNC_BATCH_ROWS = 10_000;

/** A first sync waiting for an apply slot. */
interface FirstSyncJob extends FirstSync {
  schedule: NextSync;
  settle: (outcome: FirstSyncOutcome) => void;
  fail: (err: unknown) => void;
}

/**
 * Writes accounts' pulls to one database, at most `applyConcurrency` at once.
 *
 * @example
 * const writer = new FriendWriter(db, { applyConcurrency: cfg.sync.applyConcurrency });
 * const result = await writer.apply(snapshot, { intervalMs: cfg.sync.intervalMs });
 */
export class FriendWriter {
  readonly #db: Kysely<Database>;
  /** The apply slots. */
  readonly #gate: LimitFunction;
  /** For COPY; absent for a handle not made by `createDb`, whose first syncs go the general way. */
  readonly #pool: pg.Pool | undefined;
  readonly #concurrency: number;
  readonly #batch: number;
  /** First syncs waiting for an apply slot, oldest first. */
  readonly #firstSyncs: FirstSyncJob[] = [];

  constructor(db: Kysely<Database>, opts: FriendWriterOptions = {}) {
    const concurrency = opts.applyConcurrency ?? DEFAULT_APPLY_CONCURRENCY;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError(`applyConcurrency must be a positive integer, got ${concurrency}`);
    }
    const batch = opts.firstSyncBatch ?? DEFAULT_FIRST_SYNC_BATCH;
    if (!Number.isInteger(batch) || batch < 1) {
      throw new RangeError(`firstSyncBatch must be a positive integer, got ${batch}`);
    }
    this.#concurrency = concurrency;
    this.#batch = batch;
    this.#db = db;
    this.#gate = pLimit(concurrency);
    this.#pool = pgPoolOf(db);
  }

  /**
   * The encoding a pull with this head should hold its rows in until {@link apply}: COPY text for a
   * first sync this writer can COPY, JSON for the general apply.
   */
  formatFor(
    head: Pick<SnapshotHead, 'neverSynced' | 'baseStandardSequence' | 'baseCustomSequence'>,
  ): RowFormat {
    return this.#pool && isFirstSync(head) ? 'copy' : 'json';
  }

  /**
   * Applies a snapshot and stores its sequences in the same transaction, so the stored sequences
   * are never ahead of the data. A first sync goes by COPY, in one transaction with the first syncs
   * waiting for a slot beside it; every other apply goes the general way. A snapshot of row objects
   * is encoded here; an encoded one ({@link formatFor}) is written as it is.
   *
   * @throws SnapshotConflictError when the account's stored sequences differ from the snapshot's base
   *   (someone else synced it meanwhile), custom tags name friends the mirror lacks (drift), or the
   *   account was removed; the transaction is rolled back and nothing is written. Also (`stale`) for
   *   COPY rows of an account that turns out to hold rows or to have been synced: the general apply
   *   needs them as JSON, so pull again.
   */
  async apply(
    snap: AccountSnapshot | EncodedSnapshot,
    schedule: NextSync = DEFAULT_NEXT_SYNC,
  ): Promise<ApplyResult> {
    if ('rows' in snap) {
      const { rows, ...head } = snap;
      if (rows.format === 'json') return this.#gate(() => applyInTransaction(this.#db, head, rows, schedule));
      const first = await this.#firstSync({ head, rows }, schedule);
      if (first.kind === 'applied') return first.result;
      if (first.kind === 'refused') throw first.error;
      throw new SnapshotConflictError(
        'stale',
        'the account was synced, or got rows, while its first pull ran',
      );
    }
    // A first sync onto an account that holds rows (a `resync --full`, say) goes the general way.
    if (this.#pool && isFirstSync(snap) && snap.standard) {
      const first = await this.#firstSync({ head: snap, rows: copyRowsOf(snap) }, schedule);
      if (first.kind === 'applied') return first.result;
      if (first.kind === 'refused') throw first.error;
    }
    return this.#gate(() => applyInTransaction(this.#db, snap, jsonRowsOf(snap), schedule));
  }

  /**
   * Queues a first sync for the next apply slot. One slot request per account; a slot takes its
   * share of the accounts waiting by then (see {@link FriendWriter.#runFirstSyncs}), so many
   * requests find their account already applied.
   */
  #firstSync(sync: FirstSync, schedule: NextSync): Promise<FirstSyncOutcome> {
    if (!this.#pool) throw new Error('COPY rows need a database handle made by createDb');
    const done = new Promise<FirstSyncOutcome>((settle, fail) => {
      this.#firstSyncs.push({ ...sync, schedule, settle, fail });
    });
    void this.#gate(() => this.#runFirstSyncs(this.#pool!));
    return done;
  }

  /** Takes the oldest first sync waiting, and those after it that fit beside it, as one transaction. */
  async #runFirstSyncs(pool: pg.Pool): Promise<void> {
    // A fair share of those waiting, not all of them: one transaction runs on one connection and one
    // Postgres backend, so a slot that took everything would leave the other slots (and cores) idle.
    const share = Math.min(this.#batch, Math.ceil(this.#firstSyncs.length / this.#concurrency));
    const first = this.#firstSyncs.shift();
    if (!first) return;
    const batch = [first];
    let rows = first.rows.friendCount + first.rows.tagCount;
    while (batch.length < share && this.#firstSyncs.length > 0) {
      const next = this.#firstSyncs[0]!;
      const more = next.rows.friendCount + next.rows.tagCount;
      if (!sameSchedule(next.schedule, first.schedule) || rows + more > FIRST_SYNC_BATCH_ROWS) break;
      batch.push(this.#firstSyncs.shift()!);
      rows += more;
    }
    let outcomes: FirstSyncOutcome[];
    try {
      outcomes = await firstSyncsByCopy(this.#db, pool, batch, first.schedule);
    } catch (err) {
      outcomes = batch.map(() => ({ kind: 'failed', error: err }));
    }
    for (const [i, job] of batch.entries()) {
      const outcome = outcomes[i]!;
      if (outcome.kind !== 'failed') job.settle(outcome);
      else if (batch.length === 1) job.fail(outcome.error);
      else {
        // A statement of the shared transaction failed (a bad field or a repeated friend in some
        // account's rows) and rolled it back whole: each account that passed the checks goes again
        // alone, so only the account at fault fails.
        const [alone] = await firstSyncsByCopy(this.#db, pool, [job], job.schedule).catch((err: unknown) => [
          { kind: 'failed' as const, error: err },
        ]);
        if (alone!.kind === 'failed') job.fail(alone!.error);
        else job.settle(alone!);
      }
    }
  }
}
