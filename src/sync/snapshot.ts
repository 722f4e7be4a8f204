/**
 * Turning a pull (Tencent's shape) into a snapshot (the mirror's shape). This is where `tim/` and
 * `db/` meet, so neither has to know the other.
 */
import { EncodedRowsBuilder, type RowFormat } from '../db/encoded-rows.js';
import type { EncodedSnapshot, FriendRow, SnapshotHead, TagRow } from '../db/snapshot-types.js';
import { type FriendItem, STANDARD_TAGS, tagCategory } from '../tim/friend-get.js';
import type { FriendSink, PullResult } from '../tim/friend-pull.js';

const COLUMN_TAGS = new Set<string>(Object.values(STANDARD_TAGS));

/** One page's friends as the mirror's rows. */
export interface PageRows {
  friends: FriendRow[];
  standardTags: TagRow[];
  customTags: TagRow[];
}

/**
 * Friends as the mirror's rows: standard tags with a column become columns; every other tag
 * becomes a tag row of its category.
 */
export function rowsOf(items: readonly FriendItem[]): PageRows {
  const rows: PageRows = { friends: [], standardTags: [], customTags: [] };
  for (const item of items) {
    const row: FriendRow = {
      friendId: item.friendId,
      remark: null,
      groups: null,
      addSource: null,
      addWording: null,
      addTime: null,
    };
    for (const { tag, value } of item.values ?? []) {
      switch (tag) {
        // The decoder has checked these types.
        case STANDARD_TAGS.remark:
          row.remark = value as string | null;
          break;
        case STANDARD_TAGS.group:
          row.groups = value as string[] | null;
          break;
        case STANDARD_TAGS.addSource:
          row.addSource = value as string | null;
          break;
        case STANDARD_TAGS.addWording:
          row.addWording = value as string | null;
          break;
        case STANDARD_TAGS.addTime:
          row.addTime = value as number | null;
          break;
        default:
          if (COLUMN_TAGS.has(tag)) break;
          (tagCategory(tag) === 'standard' ? rows.standardTags : rows.customTags).push({
            friendId: item.friendId,
            tag,
            value,
          });
      }
    }
    rows.friends.push(row);
  }
  return rows;
}

/**
 * A pull's friends held for its apply, encoded page by page: pass it as the pull's `sink`. Each
 * decoded page becomes rows, then text in the form its apply writes (src/db/encoded-rows.ts), so
 * the page's objects are collected young and a pull waiting for its apply holds a few hundred
 * bytes per friend, not the objects.
 */
export class HeldRows implements FriendSink {
  readonly #accountId: string;
  readonly #format: RowFormat;
  readonly #keepIds: boolean;
  #builder: EncodedRowsBuilder;
  #friendIds: string[] = [];

  /** `keepIds`: also keep the friend ids (for discovery). */
  constructor(accountId: string, format: RowFormat, keepIds = false) {
    this.#accountId = accountId;
    this.#format = format;
    this.#keepIds = keepIds;
    this.#builder = new EncodedRowsBuilder(accountId, format);
  }

  /** Friends held. */
  get friendCount(): number {
    return this.#builder.friendCount;
  }

  /** The friend ids, in page order; empty unless asked for. */
  get friendIds(): readonly string[] {
    return this.#friendIds;
  }

  restart(): void {
    this.#builder = new EncodedRowsBuilder(this.#accountId, this.#format);
    this.#friendIds = [];
  }

  add(items: readonly FriendItem[]): void {
    const rows = rowsOf(items);
    this.#builder.add(rows.friends, rows.standardTags, rows.customTags);
    if (this.#keepIds) for (const item of items) this.#friendIds.push(item.friendId);
  }

  /**
   * The snapshot of a complete, changed pull. A category the server did not send is left out
   * entirely, so the apply leaves it untouched.
   */
  snapshot(
    base: Omit<SnapshotHead, 'standardSequence' | 'customSequence'>,
    pull: PullResult,
  ): EncodedSnapshot {
    return {
      ...base,
      standardSequence: pull.standardSequence,
      customSequence: pull.customSequence,
      rows: this.#builder.build({ standard: pull.standardIncluded, custom: pull.customIncluded }),
    };
  }
}
