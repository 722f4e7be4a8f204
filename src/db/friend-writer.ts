/**
 * The one way the sync writes an account's pull: a {@link FriendWriter}, made by the caller for its
 * database handle, bounds how many applies run at once and sends each to the path that fits it
 * (src/db/first-sync.ts or src/db/apply.ts). Its state (the apply slots) lives in the instance, so
 * two writers never share it.
 */
import type { Kysely } from 'kysely';
import pLimit, { type LimitFunction } from 'p-limit';
import type pg from 'pg';
import { applyInTransaction } from './apply.js';
import { copyRowsOf, jsonRowsOf, type RowFormat } from './encoded-rows.js';
import { firstSyncByCopy, isFirstSync } from './first-sync.js';
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
import { DEFAULT_NEXT_SYNC } from './synced.js';

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

  constructor(db: Kysely<Database>, opts: FriendWriterOptions = {}) {
    const concurrency = opts.applyConcurrency ?? DEFAULT_APPLY_CONCURRENCY;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError(`applyConcurrency must be a positive integer, got ${concurrency}`);
    }
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
   * are never ahead of the data. A first sync goes by COPY; every other apply goes the general way.
   * A snapshot of row objects is encoded here; an encoded one ({@link formatFor}) is written as it is.
   *
   * @throws SnapshotConflictError when the account's stored sequences differ from the snapshot's base
   *   (someone else synced it meanwhile), custom tags name friends the mirror lacks (drift), or the
   *   account was removed; the transaction is rolled back and nothing is written. Also (`stale`) for
   *   COPY rows of an account that turns out to hold rows or to have been synced: the general apply
   *   needs them as JSON, so pull again.
   */
  apply(
    snap: AccountSnapshot | EncodedSnapshot,
    schedule: NextSync = DEFAULT_NEXT_SYNC,
  ): Promise<ApplyResult> {
    return this.#gate(async () => {
      if ('rows' in snap) {
        const { rows, ...head } = snap;
        if (rows.format === 'json') return applyInTransaction(this.#db, head, rows, schedule);
        if (!this.#pool) throw new Error('COPY rows need a database handle made by createDb');
        const first = await firstSyncByCopy(this.#db, this.#pool, head, rows, schedule);
        if (first) return first;
        throw new SnapshotConflictError(
          'stale',
          'the account was synced, or got rows, while its first pull ran',
        );
      }
      // A first sync onto an account that holds rows (a `resync --full`, say) goes the general way.
      if (this.#pool && isFirstSync(snap) && snap.standard) {
        const first = await firstSyncByCopy(this.#db, this.#pool, snap, copyRowsOf(snap), schedule);
        if (first) return first;
      }
      return applyInTransaction(this.#db, snap, jsonRowsOf(snap), schedule);
    });
  }
}
