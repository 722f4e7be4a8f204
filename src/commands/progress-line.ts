/**
 * A progress line for long one-shot commands (`sync`, `accounts import`) on a terminal: one line
 * at the bottom of stderr, redrawn in place. Log lines still get through: they are written above
 * it (the line is cleared, the log line written, the progress line drawn again), so neither
 * garbles the other. Off a terminal there is no progress line at all, and the commands keep their
 * periodic log lines, which is what a log collector wants.
 */
import { Writable } from 'node:stream';

/** Erase the whole current line and go to its start (VT100; every terminal emulator has it). */
const CLEAR_LINE = '\r\x1b[2K';

/** What {@link ProgressLine} writes to: a terminal, or a test's pseudo-terminal. */
export interface ProgressTerminal {
  write(text: string | Uint8Array): unknown;
  /** Terminal width; lines are cut to it so a redraw never wraps. */
  columns?: number;
}

/** A redrawn-in-place status line. */
export class ProgressLine {
  readonly #term: ProgressTerminal;
  readonly #minIntervalMs: number;
  readonly #now: () => number;
  #text = '';
  #drawnAt = Number.NEGATIVE_INFINITY;
  #shown = false;

  /**
   * @param term where to draw (`process.stderr` when it is a TTY)
   * @param opts.minIntervalMs redraw at most this often (default 200 ms): a sync finishes hundreds
   *   of accounts a second, and a terminal does not need to see each
   */
  constructor(term: ProgressTerminal, opts: { minIntervalMs?: number; now?: () => number } = {}) {
    this.#term = term;
    this.#minIntervalMs = opts.minIntervalMs ?? 200;
    this.#now = opts.now ?? (() => performance.now());
  }

  /** Sets the text; drawn now unless the last draw was under `minIntervalMs` ago (or `force`). */
  update(text: string, force = false): void {
    this.#text = text;
    const now = this.#now();
    if (!force && now - this.#drawnAt < this.#minIntervalMs) return;
    this.#drawnAt = now;
    this.#draw();
  }

  /** Removes the line for good, e.g. before the command prints its summary. */
  done(): void {
    if (this.#shown) this.#term.write(CLEAR_LINE);
    this.#shown = false;
    this.#text = '';
  }

  /**
   * A stream for the logger: each log line is written above the progress line.
   */
  logStream(): Writable {
    return new Writable({
      write: (chunk: Buffer | string, _enc, cb) => {
        if (this.#shown) this.#term.write(CLEAR_LINE);
        this.#term.write(chunk);
        if (this.#text) this.#draw();
        cb();
      },
    });
  }

  #draw(): void {
    const width = this.#term.columns ?? 0;
    const text = width > 1 && this.#text.length >= width ? `${this.#text.slice(0, width - 2)}…` : this.#text;
    this.#term.write(CLEAR_LINE + text);
    this.#shown = true;
  }
}

/** `12s`, `3m05s`, `2h10m`: short enough for a progress line. */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
