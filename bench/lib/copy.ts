/**
 * `COPY … FROM STDIN` with `pg` alone. pg runs any object with a `submit(connection)` method as a
 * query (its "Submittable" interface, the one pg-copy-streams implements); this one sends the
 * statement with the simple query protocol, answers CopyInResponse with the whole text-format body
 * in 64 KiB CopyData messages, then CopyDone. Enough for the benchmark's ceiling measurement; not a
 * general streaming helper (the body is built in memory first).
 */
import type pg from 'pg';

const CHUNK_BYTES = 64 * 1024;

interface PgConnection {
  query(text: string): void;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
}

class CopyFromText {
  readonly text: string;
  readonly #body: Buffer;
  readonly done: Promise<number>;
  #resolve!: (rows: number) => void;
  #reject!: (err: Error) => void;
  #rows = 0;
  callback: ((err: Error | null) => void) | undefined;

  constructor(text: string, body: Buffer) {
    this.text = text;
    this.#body = body;
    this.done = new Promise<number>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  submit(connection: PgConnection): void {
    connection.query(this.text);
  }

  handleCopyInResponse(connection: PgConnection): void {
    for (let at = 0; at < this.#body.length; at += CHUNK_BYTES) {
      connection.sendCopyFromChunk(this.#body.subarray(at, at + CHUNK_BYTES));
    }
    connection.endCopyFrom();
  }

  handleCommandComplete(msg: { text?: string }): void {
    this.#rows = Number(/COPY (\d+)/.exec(msg.text ?? '')?.[1] ?? 0);
  }

  handleReadyForQuery(): void {
    this.callback?.(null);
    this.#resolve(this.#rows);
  }

  handleError(err: Error): void {
    this.callback?.(err);
    this.#reject(err);
  }

  handleEmptyQuery(): void {}
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handlePortalSuspended(): void {}
  handleCopyData(): void {}
}

/**
 * Runs `COPY <target> FROM STDIN` with `body` (text format, tab-separated, `\N` for null).
 * @returns the rows Postgres reports copied
 */
export async function copyFrom(
  client: pg.Client | pg.PoolClient,
  target: string,
  body: string,
): Promise<number> {
  const q = new CopyFromText(`COPY ${target} FROM STDIN`, Buffer.from(body, 'utf8'));
  (client as unknown as { query(q: unknown): void }).query(q);
  return q.done;
}

/** A value as a COPY text field: `\N` for null, backslash, tab, newline and CR escaped. */
export function copyField(v: string | null): string {
  if (v === null) return '\\N';
  return v.replace(/[\\\t\n\r]/g, (c) =>
    c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r',
  );
}

/** A text[] as a Postgres array literal, every element quoted. */
export function arrayLiteral(items: readonly string[]): string {
  return `{${items.map((s) => `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"`).join(',')}}`;
}
