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
import { firstSyncByCopy, isFirstSync } from './first-sync.js';
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
   * Applies a snapshot and stores its sequences in the same transaction, so the stored sequences
   * are never ahead of the data. A first sync goes by COPY; every other apply, or a first sync onto
   * an account that holds rows, goes the general way.
   *
   * @throws SnapshotConflictError when the account's stored sequences differ from the snapshot's base
   *   (someone else synced it meanwhile), custom tags name friends the mirror lacks (drift), or the
   *   account was removed; the transaction is rolled back and nothing is written.
   */
  apply(snap: AccountSnapshot, schedule: NextSync = DEFAULT_NEXT_SYNC): Promise<ApplyResult> {
    return this.#gate(async () => {
      if (this.#pool && isFirstSync(snap)) {
        const first = await firstSyncByCopy(this.#db, this.#pool, snap, schedule);
        if (first) return first;
      }
      return applyInTransaction(this.#db, snap, schedule);
    });
  }
}
