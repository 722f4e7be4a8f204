/**
 * Opaque `NextStartIndex` cursors. Tencent documents `NextStartIndex` only as "the starting point of
 * the next page"; the simulator hands out random numbers instead of offsets so that a client which
 * computes the next StartIndex itself, or assumes it equals the item count, fails loudly (30001).
 */
import type { SeededRandom } from './prng.js';

interface CursorEntry {
  accountId: string;
  offset: number;
  expiresAt: number;
}

/** Options of {@link CursorTable}. */
export interface CursorTableOptions {
  /** Most cursors remembered; the oldest are forgotten first. Default 200,000 (over 15 min at 200/s). */
  capacity?: number;
  /** How long a cursor stays valid, in ms. Default 10 minutes. */
  ttlMs?: number;
}

/** Maps issued cursors to `{account, offset}`, bounded in size and age. */
export class CursorTable {
  readonly #rng: SeededRandom;
  readonly #capacity: number;
  readonly #ttlMs: number;
  /** Insertion order is issue order, which with a fixed TTL is also expiry order. */
  readonly #entries = new Map<number, CursorEntry>();

  constructor(rng: SeededRandom, options: CursorTableOptions = {}) {
    this.#rng = rng;
    this.#capacity = options.capacity ?? 200_000;
    this.#ttlMs = options.ttlMs ?? 10 * 60_000;
  }

  /** Issues a new cursor (a positive 31-bit integer, never equal to `offset`) for the page at `offset`. */
  issue(accountId: string, offset: number, now: number): number {
    this.#evict(now);
    let cursor: number;
    do {
      cursor = 1 + this.#rng.int(0x7fff_ffff);
    } while (cursor === offset || this.#entries.has(cursor));
    this.#entries.set(cursor, { accountId, offset, expiresAt: now + this.#ttlMs });
    return cursor;
  }

  /**
   * The offset a cursor stands for, or undefined when it was never issued, was issued for another
   * account, or expired. Cursors stay valid until they expire, so a client may retry a page.
   */
  resolve(accountId: string, cursor: number, now: number): number | undefined {
    const entry = this.#entries.get(cursor);
    if (!entry || entry.accountId !== accountId || entry.expiresAt <= now) return undefined;
    return entry.offset;
  }

  /** Number of live entries (expired ones may linger until the next issue). */
  get size(): number {
    return this.#entries.size;
  }

  #evict(now: number): void {
    for (const [cursor, entry] of this.#entries) {
      if (entry.expiresAt > now && this.#entries.size < this.#capacity) break;
      this.#entries.delete(cursor);
    }
  }
}
