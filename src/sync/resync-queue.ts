/**
 * A coalescing queue of "resync these accounts" marks, between the webhook receiver (which must
 * answer Tencent within 2 s, whatever the database does) and the database (where a mark is one
 * `requestResync` statement).
 *
 * Ids wait in a set, so a burst of callbacks for one account becomes one pending id and one
 * database write; every flush writes all pending ids in one call. While a flush runs, new ids wait
 * for the next one. A failed flush puts its ids back and is retried with backoff until the queue
 * is closed, so a database outage delays marks instead of losing them. Closing tries one last
 * write; what that cannot write (the database is down as the process stops) is left to the
 * scheduled pulls (`SYNC_INTERVAL`), which still catch the change.
 */

/** Options of {@link ResyncQueue}. */
export interface ResyncQueueOptions {
  /** Writes the marks (e.g. `requestResync`). Throwing means nothing was written; the ids are retried. */
  mark: (ids: string[]) => Promise<void>;
  /** Most ids waiting at once; ids beyond that are dropped (and counted) rather than grow memory. Default 100,000. */
  maxPending?: number;
  /** First retry delay after a failed flush; doubles up to `retryCapMs`. Defaults 250 ms and 30 s. */
  retryBaseMs?: number;
  retryCapMs?: number;
  /** Told about each failed flush, with how many ids wait and how long until the retry. */
  onError?: (err: unknown, pending: number, retryInMs: number) => void;
}

/** What {@link ResyncQueue.add} did. */
export interface Enqueued {
  /** Ids not taken because the queue was full. */
  dropped: number;
  /** Resolves true once a flush holding every taken id has been written, false if the queue closed first. */
  written: Promise<boolean>;
}

/** The promise every add between two flushes shares: one per flush, however many callbacks came. */
interface NextFlush {
  written: Promise<boolean>;
  resolve: (written: boolean) => void;
}

function nextFlush(): NextFlush {
  let resolve: (written: boolean) => void = () => {};
  const written = new Promise<boolean>((r) => {
    resolve = r;
  });
  return { written, resolve };
}

/** See the module comment. */
export class ResyncQueue {
  readonly #o: Required<Omit<ResyncQueueOptions, 'onError'>> & Pick<ResyncQueueOptions, 'onError'>;
  #pending = new Set<string>();
  /** Settles when the ids now pending are written; the next flush takes it with them. */
  #next: NextFlush | undefined;
  #flushing: Promise<void> | undefined;
  #failures = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(opts: ResyncQueueOptions) {
    this.#o = { maxPending: 100_000, retryBaseMs: 250, retryCapMs: 30_000, ...opts };
  }

  /** Ids waiting to be written (including those of a flush in progress). */
  get pending(): number {
    return this.#pending.size;
  }

  /** Queues ids and starts a flush unless one is running or waiting to retry. */
  add(ids: readonly string[]): Enqueued {
    if (this.#closed) return { dropped: ids.length, written: Promise.resolve(false) };
    let dropped = 0;
    for (const id of ids) {
      if (this.#pending.has(id)) continue;
      if (this.#pending.size >= this.#o.maxPending) dropped++;
      else this.#pending.add(id);
    }
    this.#next ??= nextFlush();
    const { written } = this.#next;
    this.#kick();
    return { dropped, written };
  }

  /**
   * Stops: no new flush or retry starts; waits for a flush in progress, then tries once to write
   * what is still pending. Adds that this could not write get `false`.
   */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    await this.#flushing;
    if (this.#pending.size > 0) await this.#flush();
    this.#next?.resolve(false);
    this.#next = undefined;
  }

  #kick(): void {
    if (this.#flushing || this.#retryTimer || this.#closed || this.#pending.size === 0) return;
    this.#flushing = this.#flush().finally(() => {
      this.#flushing = undefined;
      this.#kick();
    });
  }

  async #flush(): Promise<void> {
    const ids = [...this.#pending];
    const done = this.#next;
    // Ids added during the write stay pending for the next flush; these are taken now.
    this.#pending = new Set();
    this.#next = undefined;
    try {
      await this.#o.mark(ids);
    } catch (err) {
      // Put them back, keeping anything added meanwhile; the cap may drop some when full.
      for (const id of ids) if (this.#pending.size < this.#o.maxPending) this.#pending.add(id);
      // Their adds now wait for the next flush, together with the adds made meanwhile.
      if (done) {
        // (Adds during the write may have started a new one; TypeScript cannot see them.)
        const later = this.#next as NextFlush | undefined;
        if (later) void later.written.then(done.resolve);
        else this.#next = done;
      }
      this.#failures++;
      const delay = Math.min(this.#o.retryCapMs, this.#o.retryBaseMs * 2 ** Math.min(this.#failures - 1, 16));
      this.#o.onError?.(err, this.#pending.size, delay);
      if (!this.#closed) {
        this.#retryTimer = setTimeout(() => {
          this.#retryTimer = undefined;
          this.#kick();
        }, delay);
        this.#retryTimer.unref();
      }
      return;
    }
    this.#failures = 0;
    done?.resolve(true);
  }
}
