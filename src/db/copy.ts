/**
 * `COPY … FROM STDIN` in PostgreSQL's text format: the field encoders, and sending a body.
 *
 * COPY is the cheapest way to hand Postgres many rows: it parses each field with the column's input
 * function and nothing else, where a `json_to_recordset` insert first parses a JSON document, then
 * builds a record per row, then plans and runs an INSERT. The benchmark's "database ceiling"
 * (BENCHMARKS.md) measures what each costs Postgres per row. The first sync (src/db/first-sync.ts)
 * sends its rows this way.
 *
 * The text format: one line per row, fields separated by tabs, `\N` for NULL, and a backslash,
 * tab, newline or carriage return inside a field escaped with a backslash. Nothing else is special,
 * so a field with none of those four characters goes out as it is, which is almost every field.
 */
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { FriendRow, TagRow } from './snapshot-types.js';

/** The NULL field. */
export const COPY_NULL = '\\N';

const SPECIAL = /[\\\t\n\r]/;
const SPECIAL_ALL = /[\\\t\n\r]/g;
const ESCAPED: Readonly<Record<string, string>> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/** A text value as a COPY field: `\N` for null, the four special characters escaped. */
export function copyField(v: string | null): string {
  if (v === null) return COPY_NULL;
  // The test first: a replace with a callback costs far more than a test that finds nothing.
  return SPECIAL.test(v) ? v.replace(SPECIAL_ALL, (c) => ESCAPED[c]!) : v;
}

/**
 * A `text[]` as a COPY field: an array literal with every element quoted (so spaces, commas,
 * braces and the word NULL stay text), `"` and `\` inside elements backslash-escaped, and the
 * literal then escaped as a field.
 */
export function copyTextArray(items: readonly string[] | null): string {
  if (items === null) return COPY_NULL;
  let literal = '{';
  for (let i = 0; i < items.length; i++) {
    const s = items[i]!;
    literal += `${i === 0 ? '' : ','}"${s.includes('"') || s.includes('\\') ? s.replace(/["\\]/g, '\\$&') : s}"`;
  }
  return copyField(`${literal}}`);
}

/**
 * Unix seconds as a `timestamptz` field, `YYYY-MM-DD HH:MM:SS+00`. The decoder has refused values
 * past the year 9999, which Postgres cannot store, and negative ones.
 *
 * Computed with integer arithmetic (the days-to-civil-date algorithm of H. Hinnant's
 * "chrono-compatible low-level date algorithms"), because `new Date(…).toISOString()` was a large
 * part of the cost of encoding a friend row.
 */
export function copyTimestamp(unixSeconds: number | null): string {
  if (unixSeconds === null) return COPY_NULL;
  const days = Math.floor(unixSeconds / 86_400);
  const secs = unixSeconds - days * 86_400;
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor(
    (doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365,
  );
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  const hour = Math.floor(secs / 3600);
  const minute = Math.floor((secs % 3600) / 60);
  return `${String(year).padStart(4, '0')}-${two(month)}-${two(day)} ${two(hour)}:${two(minute)}:${two(secs % 60)}+00`;
}

function two(n: number): string {
  return n < 10 ? `0${n}` : `${n}`;
}

/** Any JSON value as a `jsonb` field. */
export function copyJson(value: unknown): string {
  return copyField(JSON.stringify(value));
}

/**
 * Runs `statement` (a `COPY … FROM STDIN`) on `client` with `body` as the whole text-format input:
 * text, or its UTF-8 bytes in pieces that end at row boundaries (a pull's pages).
 *
 * The pieces are joined into one buffer first. pg-copy-streams sends each written chunk as two
 * socket writes (its CopyData header, then the chunk), and every write wakes the server's backend
 * to read it: a batch of first syncs holds a few pieces per account, and the copy of the bytes
 * costs far less than the writes and wake-ups it saves (bench/ab-pairs.md).
 *
 * @returns the rows Postgres reports copied
 * @throws the server's error (a bad field, a duplicate key) or the connection's
 */
export function copyIn(
  client: pg.ClientBase,
  statement: string,
  body: string | readonly Buffer[],
): Promise<number> {
  return new Promise((resolve, reject) => {
    const stream = client.query(copyFrom(statement));
    // 'finish' comes after CommandComplete and ReadyForQuery: the rows are in and the connection is
    // free. An error (the server's, or the connection's) comes as 'error' instead.
    stream.on('finish', () => resolve(stream.rowCount));
    stream.on('error', reject);
    if (typeof body === 'string') {
      stream.end(Buffer.from(body, 'utf8'));
    } else {
      const bytes = body.length === 1 ? body[0]! : Buffer.concat(body);
      if (bytes.length > 0) stream.write(bytes);
      stream.end();
    }
  });
}

/** The columns {@link friendCopyText} fills, in its order, for `COPY <table> <columns> FROM STDIN`. */
export const FRIEND_COPY_COLUMNS =
  '(account_id, friend_id, remark, groups, add_source, add_wording, add_time)';

/** The columns {@link tagCopyText} fills, in its order. */
export const TAG_COPY_COLUMNS = '(account_id, friend_id, tag, value, category)';

const TAB = 0x09;
const NEWLINE = 0x0a;

/**
 * COPY text written straight into bytes. Building it as a string made a rope of small pieces per
 * row, then a flat copy, then the bytes: about ten times the output in garbage (bench/notes.md).
 * Here each field is written once into a buffer that grows by doubling, and {@link take} copies
 * the rows out at their exact size.
 */
export class CopyTextWriter {
  #buf = Buffer.allocUnsafeSlow(64 * 1024);
  #pos = 0;

  /** Bytes written since the last {@link take}. */
  get length(): number {
    return this.#pos;
  }

  /** An account's friends, columns {@link FRIEND_COPY_COLUMNS}. */
  friends(accountId: string, friends: readonly FriendRow[]): void {
    const account = copyField(accountId);
    for (const f of friends) {
      this.#field(account, TAB);
      this.#field(copyField(f.friendId), TAB);
      this.#field(copyField(f.remark), TAB);
      this.#field(copyTextArray(f.groups), TAB);
      this.#field(copyField(f.addSource), TAB);
      this.#field(copyField(f.addWording), TAB);
      this.#field(copyTimestamp(f.addTime), NEWLINE);
    }
  }

  /** An account's tags of one category, columns {@link TAG_COPY_COLUMNS}. */
  tags(accountId: string, tags: readonly TagRow[], category: 'standard' | 'custom'): void {
    const account = copyField(accountId);
    for (const t of tags) {
      this.#field(account, TAB);
      this.#field(copyField(t.friendId), TAB);
      this.#field(copyField(t.tag), TAB);
      this.#field(copyJson(t.value), TAB);
      this.#field(category, NEWLINE);
    }
  }

  /** The rows written since the last take, in a buffer of their own; the writer starts empty again. */
  take(): Buffer {
    const out = Buffer.allocUnsafeSlow(this.#pos);
    this.#buf.copy(out, 0, 0, this.#pos);
    this.#pos = 0;
    return out;
  }

  /** An encoded field and the byte that ends it. */
  #field(text: string, end: number): void {
    // A UTF-16 code unit takes at most 3 bytes of UTF-8.
    const room = text.length * 3 + 1;
    if (this.#pos + room > this.#buf.length) {
      const next = Buffer.allocUnsafeSlow(Math.max(this.#buf.length * 2, this.#pos + room));
      this.#buf.copy(next, 0, 0, this.#pos);
      this.#buf = next;
    }
    this.#pos += this.#buf.write(text, this.#pos, 'utf8');
    this.#buf[this.#pos++] = end;
  }
}
