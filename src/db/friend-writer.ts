/**
 * The one way the sync writes an account's pull: a {@link FriendWriter}, made by the caller for its
 * database handle, bounds how many applies run at once and sends each to the path that fits it
 * (src/db/first-sync.ts or src/db/apply.ts). Its state (the apply slots, the first syncs waiting)
 * lives in the instance, so two writers never share it.
 */
import type { Kysely } from 'kysely';
import pLimit, { type LimitFunction } from 'p-limit';
import { applyInTransaction } from './apply.js';
import { FirstSyncBatches, isFirstSync } from './first-sync.js';
import { pgPoolOf } from './pool.js';
import type { Database } from './schema.js';
import type { AccountSnapshot, ApplyResult, NextSync } from './snapshot-types.js';
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
  /** The apply slots, shared by the general apply and the first-sync batches. */
  readonly #gate: LimitFunction;
  /** First syncs by COPY; absent for a handle not made by `createDb` (no pg pool to COPY on). */
  readonly #firstSyncs: FirstSyncBatches | undefined;
  readonly #db: Kysely<Database>;

  constructor(db: Kysely<Database>, opts: FriendWriterOptions = {}) {
    this.#db = db;
    const concurrency = opts.applyConcurrency ?? DEFAULT_APPLY_CONCURRENCY;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError(`applyConcurrency must be a positive integer, got ${concurrency}`);
    }
    this.#gate = pLimit(concurrency);
    const pool = pgPoolOf(db);
    this.#firstSyncs = pool ? new FirstSyncBatches(db, pool, this.#gate, concurrency) : undefined;
  }

  /**
   * Applies a snapshot and stores its sequences in the same transaction, so the stored sequences
   * are never ahead of the data. A first sync goes by COPY; every other apply, or a first sync onto
   * an account that holds rows, goes the general way.
   *
   * @throws SnapshotConflictError when the account's stored sequences differ from the snapshot's base
   *   (someone else synced it meanwhile), custom tags name friends the mirror lacks (drift), or the
   *   account was removed; the transaction is rolled back and nothing is written.
   */
  async apply(snap: AccountSnapshot, schedule: NextSync = DEFAULT_NEXT_SYNC): Promise<ApplyResult> {
    if (this.#firstSyncs && isFirstSync(snap)) {
      const first = await this.#firstSyncs.apply(snap, schedule);
      if (first) return first;
    }
    return this.#gate(() => applyInTransaction(this.#db, snap, schedule));
  }
}
