/**
 * A budget of friend rows held in memory at once, across every pull in flight and every apply
 * waiting to commit (`SYNC_ROW_BUDGET`). Memory grows with the friends held, not with the accounts
 * in flight, so this is what bounds a process syncing many large accounts at once.
 *
 * Each account sync opens a {@link RowHold}, reserves room before each page call, trues the hold
 * up to the rows it really keeps once the page is in, and releases it when its apply commits or
 * the attempt ends otherwise. A reservation that does not fit waits for room.
 *
 * Deadlock-free by two rules:
 * - Waiters are served oldest hold first (by when the hold was opened), and a younger one never
 *   overtakes an older one that waits: older holds already keep rows, and they give them all back
 *   only once they finish.
 * - The oldest open hold never waits, even over the limit. It is never blocked by the budget, so it
 *   finishes and lets the next one become the oldest; an account larger than the whole budget still
 *   syncs. Every other hold is granted room only while the total stays within the limit, so the
 *   total never exceeds the limit by more than what the oldest hold takes (one account), plus what
 *   pages bring beyond their estimates.
 */
import { onAbort } from '../abort-listeners.js';
import { TimAbortError } from '../tim/errors.js';

interface Waiter {
  hold: RowHold;
  rows: number;
  resolve(): void;
  reject(err: Error): void;
  cancelAbort?: () => void;
}

/** Friends held in memory across pulls, with waiting for room. See the module comment. */
export class RowBudget {
  /** Rows the holds may take together before a reservation waits (the oldest hold excepted). */
  readonly limit: number;
  #held = 0;
  #peak = 0;
  #nextSeq = 0;
  /** Open holds, oldest first (a Set keeps insertion order). */
  readonly #open = new Set<RowHold>();
  /** Waiting reservations, oldest hold first. */
  readonly #waiters: Waiter[] = [];

  /** @param limit rows; at least 1 */
  constructor(limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new RangeError(`a row budget must be a whole number of rows ≥ 1, got ${limit}`);
    }
    this.limit = limit;
  }

  /** Rows held (reserved or kept) by every open hold now. */
  get held(): number {
    return this.#held;
  }

  /** The most rows held at once since this budget was made. */
  get peak(): number {
    return this.#peak;
  }

  /** Reservations waiting for room: pulls held back by the budget. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Open holds (accounts between their first reservation and their release). */
  get holds(): number {
    return this.#open.size;
  }

  /** Opens a hold for one account sync. Release it in a `finally`. */
  open(): RowHold {
    const hold = new RowHold(this, this.#nextSeq++);
    this.#open.add(hold);
    return hold;
  }

  /** @internal Called by {@link RowHold.reserve}. */
  reserve(hold: RowHold, rows: number, signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted) return Promise.reject(new TimAbortError({ cause: signal.reason }));
    const older = this.#waiters[0];
    if (rows === 0 || this.#isOldest(hold) || (this.#fits(rows) && (!older || older.hold.seq > hold.seq))) {
      this.#add(hold, rows);
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { hold, rows, resolve, reject };
      if (signal) {
        waiter.cancelAbort = onAbort(signal, () => {
          const at = this.#waiters.indexOf(waiter);
          if (at < 0) return;
          this.#waiters.splice(at, 1);
          reject(new TimAbortError({ cause: signal.reason }));
          // It may have been the head of the line, holding younger ones back.
          this.#grant();
        });
      }
      let at = this.#waiters.length;
      while (at > 0 && this.#waiters[at - 1]!.hold.seq > hold.seq) at--;
      this.#waiters.splice(at, 0, waiter);
    });
  }

  /** @internal Called by {@link RowHold.set}: rows came in (or went) without waiting. */
  adjust(hold: RowHold, delta: number): void {
    this.#add(hold, delta);
    if (delta < 0) this.#grant();
  }

  /** @internal Called by {@link RowHold.release}. */
  close(hold: RowHold, rows: number): void {
    this.#held -= rows;
    this.#open.delete(hold);
    for (let i = this.#waiters.length - 1; i >= 0; i--) {
      const w = this.#waiters[i]!;
      if (w.hold !== hold) continue;
      this.#waiters.splice(i, 1);
      w.cancelAbort?.();
      w.reject(new Error('row hold released while a reservation waited'));
    }
    // Room came free, and another hold may now be the oldest.
    this.#grant();
  }

  #isOldest(hold: RowHold): boolean {
    return this.#open.values().next().value === hold;
  }

  #fits(rows: number): boolean {
    return this.#held + rows <= this.limit;
  }

  #add(hold: RowHold, rows: number): void {
    hold.rowsHeld += rows;
    this.#held += rows;
    if (this.#held > this.#peak) this.#peak = this.#held;
  }

  /** Serves waiters oldest hold first, while they fit; stops at the first that does not. */
  #grant(): void {
    for (;;) {
      const w = this.#waiters[0];
      if (!w || !(this.#isOldest(w.hold) || this.#fits(w.rows))) return;
      this.#waiters.shift();
      w.cancelAbort?.();
      this.#add(w.hold, w.rows);
      w.resolve();
    }
  }
}

/** One account sync's share of a {@link RowBudget}. */
export class RowHold {
  /** @internal Rows this hold has reserved or keeps; maintained by the budget. */
  rowsHeld = 0;
  #released = false;
  #pending = false;

  /** @internal Use {@link RowBudget.open}. */
  constructor(
    private readonly budget: RowBudget,
    /** Opening order: the lower, the older. */
    readonly seq: number,
  ) {}

  /** Rows this hold counts now. */
  get rows(): number {
    return this.rowsHeld;
  }

  /**
   * Adds `rows` to this hold, waiting until they fit (see the module comment). One reservation at a
   * time per hold.
   *
   * @throws TimAbortError when `signal` aborts first (nothing is added then)
   */
  async reserve(rows: number, signal?: AbortSignal): Promise<void> {
    if (this.#released) throw new Error('row hold used after release');
    if (this.#pending) throw new Error('row hold already has a reservation waiting');
    if (!Number.isSafeInteger(rows) || rows < 0) throw new RangeError(`cannot reserve ${rows} rows`);
    this.#pending = true;
    try {
      await this.budget.reserve(this, rows, signal);
    } finally {
      this.#pending = false;
    }
  }

  /**
   * Trues the hold up to the rows it really keeps now: fewer than reserved gives the rest back (and
   * wakes waiters), more is counted at once, without waiting, since those rows are in memory already.
   */
  set(rows: number): void {
    if (this.#released || rows === this.rowsHeld) return;
    this.budget.adjust(this, rows - this.rowsHeld);
  }

  /** Gives every row back and closes the hold. Safe to call more than once. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    const rows = this.rowsHeld;
    this.rowsHeld = 0;
    this.budget.close(this, rows);
  }
}
