/**
 * Rows encoded for the apply that will write them ({@link CopyRows} for a first sync, {@link JsonRows}
 * for the general apply), built a page at a time. A pull encodes each page as it arrives, so what it
 * holds until its apply is compact text, and each page's row objects die young; a caller with a
 * whole snapshot of objects encodes it the same way ({@link copyRowsOf}, {@link jsonRowsOf}).
 */
import { CopyTextWriter } from './copy.js';
import type { AccountSnapshot, CopyRows, FriendRow, JsonRows, TagRow } from './snapshot-types.js';

/** Which encoding a pull's rows are held in. */
export type RowFormat = 'copy' | 'json';

/** Builds one account's {@link CopyRows} or {@link JsonRows} page by page. */
export class EncodedRowsBuilder {
  readonly #accountId: string;
  readonly format: RowFormat;
  #friendCount = 0;
  #standardTagCount = 0;
  #customTagCount = 0;
  /** COPY pieces, one per page. */
  #copyFriends: Buffer[] = [];
  #copyTags: Buffer[] = [];
  /** Encodes COPY pages; made on the first one. */
  #writer: CopyTextWriter | undefined;
  /** JSON array bodies (the text between the brackets), one per non-empty page. */
  #jsonFriends: string[] = [];
  #jsonStandardTags: string[] = [];
  #jsonCustomTags: string[] = [];

  constructor(accountId: string, format: RowFormat) {
    this.#accountId = accountId;
    this.format = format;
  }

  /** Friends added so far. */
  get friendCount(): number {
    return this.#friendCount;
  }

  /** Adds one page's rows; a friend's rows must all come in the same call. */
  add(friends: readonly FriendRow[], standardTags: readonly TagRow[], customTags: readonly TagRow[]): void {
    this.#friendCount += friends.length;
    this.#standardTagCount += standardTags.length;
    this.#customTagCount += customTags.length;
    if (this.format === 'copy') {
      // Bytes, not strings: their memory sits outside the JS heap, which the garbage collector
      // need not walk, and it is what the COPY sends.
      this.#writer ??= new CopyTextWriter();
      this.#writer.friends(this.#accountId, friends);
      if (this.#writer.length > 0) this.#copyFriends.push(this.#writer.take());
      this.#writer.tags(this.#accountId, standardTags, 'standard');
      this.#writer.tags(this.#accountId, customTags, 'custom');
      if (this.#writer.length > 0) this.#copyTags.push(this.#writer.take());
      return;
    }
    if (friends.length > 0) this.#jsonFriends.push(arrayBody(friends));
    if (standardTags.length > 0) this.#jsonStandardTags.push(arrayBody(standardTags));
    if (customTags.length > 0) this.#jsonCustomTags.push(arrayBody(customTags));
  }

  /**
   * The rows, with the categories the server sent: {@link copyRows} or {@link jsonRows}, by format.
   *
   * @throws Error for COPY rows without standard data (a caller's mistake, see {@link copyRows})
   */
  build(included: { standard: boolean; custom: boolean }): CopyRows | JsonRows {
    if (this.format === 'copy') {
      if (!included.standard) throw new Error('COPY rows are for a first sync, which reads standard data');
      return this.copyRows();
    }
    return this.jsonRows(included);
  }

  /**
   * The rows as COPY text. They stand for a first sync onto an account without rows, where a
   * category left out holds nothing, as an empty one does.
   */
  copyRows(): CopyRows {
    return {
      format: 'copy',
      friends: this.#copyFriends,
      tags: this.#copyTags,
      friendCount: this.#friendCount,
      tagCount: this.#standardTagCount + this.#customTagCount,
    };
  }

  /** The rows as JSON, with the categories the server sent. */
  jsonRows(included: { standard: boolean; custom: boolean }): JsonRows {
    const rows: JsonRows = { format: 'json' };
    if (included.standard) {
      rows.standard = {
        friends: jsonArray(this.#jsonFriends),
        friendCount: this.#friendCount,
        tags: jsonArray(this.#jsonStandardTags),
        tagCount: this.#standardTagCount,
      };
    }
    if (included.custom) {
      rows.custom = { tags: jsonArray(this.#jsonCustomTags), tagCount: this.#customTagCount };
    }
    return rows;
  }
}

function arrayBody(rows: readonly object[]): string {
  const text = JSON.stringify(rows);
  return text.slice(1, -1);
}

function jsonArray(bodies: readonly string[]): string {
  return `[${bodies.join(',')}]`;
}

function builderOf(snap: AccountSnapshot, format: RowFormat): EncodedRowsBuilder {
  const builder = new EncodedRowsBuilder(snap.accountId, format);
  builder.add(snap.standard?.friends ?? [], snap.standard?.tags ?? [], snap.custom?.tags ?? []);
  return builder;
}

/** An object snapshot's rows as COPY text (see {@link EncodedRowsBuilder.copyRows}). */
export function copyRowsOf(snap: AccountSnapshot): CopyRows {
  return builderOf(snap, 'copy').copyRows();
}

/** An object snapshot's rows as JSON, with the categories it has. */
export function jsonRowsOf(snap: AccountSnapshot): JsonRows {
  return builderOf(snap, 'json').jsonRows({ standard: !!snap.standard, custom: !!snap.custom });
}
