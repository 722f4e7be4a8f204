/**
 * Turning a pull (Tencent's shape) into a snapshot (the mirror's shape). This is where `tim/` and
 * `db/` meet, so neither has to know the other.
 */
import type { AccountSnapshot, FriendRow, TagRow } from '../db/snapshot-types.js';
import { type FriendItem, STANDARD_TAGS, tagCategory } from '../tim/friend-get.js';
import type { FriendSink, PullResult } from '../tim/friend-pull.js';

const COLUMN_TAGS = new Set<string>(Object.values(STANDARD_TAGS));

/**
 * A pull's friends as the mirror's rows, built page by page: pass it as the pull's `sink`, so each
 * decoded page is converted as it arrives and can be collected young (see `PullOptions.sink`).
 *
 * Standard tags with a column become columns; every other tag becomes a tag row of its category.
 */
export class SnapshotRows implements FriendSink {
  friends: FriendRow[] = [];
  standardTags: TagRow[] = [];
  customTags: TagRow[] = [];

  restart(): void {
    this.friends = [];
    this.standardTags = [];
    this.customTags = [];
  }

  add(items: readonly FriendItem[]): void {
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
            (tagCategory(tag) === 'standard' ? this.standardTags : this.customTags).push({
              friendId: item.friendId,
              tag,
              value,
            });
        }
      }
      this.friends.push(row);
    }
  }
}

/**
 * Builds the snapshot of a complete, changed pull, from `rows` when the pull filled them (its
 * sink), else from the pull's items.
 *
 * A category the server did not send is left out entirely, so the apply leaves it untouched.
 */
export function snapshotFromPull(
  accountId: string,
  base: { standardSequence: number | null; customSequence: number | null; neverSynced?: boolean },
  pull: PullResult,
  rows?: SnapshotRows,
): AccountSnapshot {
  let built = rows;
  if (!built) {
    built = new SnapshotRows();
    built.add(pull.items);
  }
  const snap: AccountSnapshot = {
    accountId,
    baseStandardSequence: base.standardSequence,
    baseCustomSequence: base.customSequence,
    ...(base.neverSynced ? { neverSynced: true } : {}),
    standardSequence: pull.standardSequence,
    customSequence: pull.customSequence,
  };
  if (pull.standardIncluded) snap.standard = { friends: built.friends, tags: built.standardTags };
  if (pull.customIncluded) snap.custom = { tags: built.customTags };
  return snap;
}
