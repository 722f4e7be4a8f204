/**
 * The simulator's record of calls to `friend_get`, kept so tests and benchmarks can check what a client
 * actually did: how fast it called, whether it retried, what it sent.
 */

/** One logged call. Fields the request did not get far enough to carry are absent. */
export interface CallRecord {
  /** `Date.now()` when the request arrived, in ms. */
  at: number;
  /** `From_Account`, once the body parsed. */
  account?: string;
  /** `StartIndex` as sent. */
  startIndex?: number;
  standardSequence?: number;
  customSequence?: number;
  /**
   * The TIM `ErrorCode` answered (0 = success), or -1 when the answer was not a TIM JSON body:
   * a 404/405, an injected network fault, or no answer (yet).
   */
  errorCode: number;
  /** HTTP status sent; 0 when none was (reset, timeout, or still in flight). */
  httpStatus: number;
  /** The injected fault, e.g. `timeout` or `error:30006`. */
  fault?: string;
  /** Number of `UserDataItem` entries answered. */
  items: number;
  /** The `random` query parameter as sent. */
  random?: string;
}

/**
 * A capped, append-only list of {@link CallRecord}s. When full, the oldest tenth is dropped at once,
 * which keeps appends amortised O(1).
 */
export class CallLog {
  readonly #limit: number;
  #records: CallRecord[] = [];
  #dropped = 0;

  /** @param limit most records kept. */
  constructor(limit: number) {
    this.#limit = Math.max(1, limit);
  }

  /** Appends a record; the log keeps the object, so later updates to it show. */
  push(record: CallRecord): void {
    if (this.#records.length >= this.#limit) {
      const drop = Math.max(1, Math.floor(this.#limit / 10));
      this.#records.splice(0, drop);
      this.#dropped += drop;
    }
    this.#records.push(record);
  }

  /** Copies of the kept records, oldest first. */
  all(): CallRecord[] {
    return this.#records.map((r) => ({ ...r }));
  }

  /** Copies of the last `n` records. */
  last(n: number): CallRecord[] {
    return this.#records.slice(Math.max(0, this.#records.length - n)).map((r) => ({ ...r }));
  }

  /** Number of records kept. */
  get length(): number {
    return this.#records.length;
  }

  /** Number of records dropped because the log was full. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Arrival times of the kept records. */
  times(): Float64Array {
    const out = new Float64Array(this.#records.length);
    this.#records.forEach((r, i) => {
      out[i] = r.at;
    });
    return out;
  }

  /** Empties the log. */
  clear(): void {
    this.#records = [];
    this.#dropped = 0;
  }
}

/**
 * The largest number of times in any half-open window `[t, t + windowMs)`. Sorts a copy, then walks it
 * with two pointers: O(n log n). The busiest window always starts at some event, so only those are tried.
 */
export function maxInWindow(times: ArrayLike<number>, windowMs: number): number {
  const sorted = Float64Array.from(times).sort();
  let best = 0;
  let end = 0;
  for (let start = 0; start < sorted.length; start++) {
    const limit = sorted[start]! + windowMs;
    if (end < start) end = start;
    while (end < sorted.length && sorted[end]! < limit) end++;
    best = Math.max(best, end - start);
  }
  return best;
}
