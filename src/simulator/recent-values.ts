/**
 * Remembers the last N values seen, to count reuse of the `random` query parameter. Tencent asks for a
 * fresh random number on every call; a client that reuses one may see its calls deduplicated.
 */
export class RecentValues {
  readonly #capacity: number;
  readonly #ring: (string | undefined)[];
  #next = 0;
  /** How many times each value sits in the ring. */
  readonly #counts = new Map<string, number>();

  /** @param capacity how many of the latest values to remember. */
  constructor(capacity: number) {
    this.#capacity = capacity;
    this.#ring = new Array<string | undefined>(capacity);
  }

  /** Records `value` and returns true when it was among the last `capacity` values recorded. */
  record(value: string): boolean {
    const seen = this.#counts.has(value);
    const evicted = this.#ring[this.#next];
    if (evicted !== undefined) {
      const c = this.#counts.get(evicted)!;
      if (c <= 1) this.#counts.delete(evicted);
      else this.#counts.set(evicted, c - 1);
    }
    this.#ring[this.#next] = value;
    this.#counts.set(value, (this.#counts.get(value) ?? 0) + 1);
    this.#next = (this.#next + 1) % this.#capacity;
    return seen;
  }
}
