/**
 * What the writers of `tim.friends` and `tim.friend_tags` take and give back: an account's pull as
 * rows (the snapshot), when it is due again, the row counts an apply wrote, and the conflict that
 * makes an apply write nothing.
 */

/** A friend's standard fields, as columns. `addTime` is Unix seconds. */
export interface FriendRow {
  friendId: string;
  remark: string | null;
  groups: string[] | null;
  addSource: string | null;
  addWording: string | null;
  addTime: number | null;
}

/** One tag row; `value` is any JSON value and is stored with its JSON type. */
export interface TagRow {
  friendId: string;
  tag: string;
  value: unknown;
}

/** What every form of a snapshot says about the account and its pull, besides the rows. */
export interface SnapshotHead {
  accountId: string;
  /** The sequences the pull was made with (what the mirror held when it started). */
  baseStandardSequence: number | null;
  baseCustomSequence: number | null;
  /**
   * The account had never been synced when its pull started: the apply tries the COPY first sync,
   * which costs Postgres less CPU per row than the general path (BENCHMARKS.md).
   */
  neverSynced?: boolean;
  /** The sequences the server reported for this pull. */
  standardSequence: number;
  customSequence: number;
}

/**
 * What one complete pull of an account says, as row objects. A category is present only when the
 * server sent it, and then it is the FULL set: anything of that category not in it is gone at the
 * source. An absent category was unchanged and must be left exactly as it is.
 */
export interface AccountSnapshot extends SnapshotHead {
  /** Every friend with its standard fields, and every standard-category tag we keep as a row. */
  standard?: { friends: FriendRow[]; tags: TagRow[] };
  /** Every custom-category tag of every friend. */
  custom?: { tags: TagRow[] };
}

/**
 * A first sync's rows as COPY text (src/db/copy.ts), UTF-8, in pieces that end at row boundaries:
 * the form a pull of a never-synced account holds while it waits for its apply. Bytes off the JS
 * heap cost a fraction of the row objects they came from, and they are what the COPY sends anyway.
 * Both categories are full: a pull that sends no sequences gets everything.
 */
export interface CopyRows {
  format: 'copy';
  /** Columns `FRIEND_COPY_COLUMNS`. */
  friends: Buffer[];
  /** Columns `TAG_COPY_COLUMNS`, both categories. */
  tags: Buffer[];
  friendCount: number;
  tagCount: number;
}

/**
 * Rows as JSON array texts (of {@link FriendRow} and {@link TagRow} objects), what the general apply
 * hands `json_to_recordset`: the form every other pull holds while it waits. A category is present
 * only when the server sent it, as in {@link AccountSnapshot}.
 */
export interface JsonRows {
  format: 'json';
  standard?: { friends: string; friendCount: number; tags: string; tagCount: number };
  custom?: { tags: string; tagCount: number };
}

/** A pull's rows already encoded for the apply path that will write them. */
export interface EncodedSnapshot extends SnapshotHead {
  rows: CopyRows | JsonRows;
}

/** When a synced account is due again. */
export interface NextSync {
  /** `SYNC_INTERVAL` in ms. */
  intervalMs: number;
  /** ± this fraction of random spread, so accounts synced together do not come due together. Default 0.1. */
  jitter?: number;
  /**
   * The replica whose claim started this attempt. Its finish releases the lease and sets when the
   * account is due only while the lease is still that replica's (or no one's): a replica that stalled
   * past its lease must not release the lease of the one that took the account over, which would let
   * a third claim it mid-sync. Absent (an attempt without a claim): the finish always releases.
   */
  leaseOwner?: string;
}

/** Row counts written by one apply. */
export interface ApplyResult {
  friendsUpserted: number;
  friendsDeleted: number;
  tagsUpserted: number;
  tagsDeleted: number;
  friendCount: number;
  /** Rows appended to `tim.friend_events`: one per friend added, removed or changed, or the baseline. */
  events: number;
}

/**
 * The mirror no longer matches what the pull was based on: another writer committed first, or the
 * custom data names friends the mirror does not have. Nothing was written; pull again.
 */
export class SnapshotConflictError extends Error {
  readonly code = 'SNAPSHOT_CONFLICT';
  /** `stale`: the stored sequences moved; `drift`: the custom data names unknown friends; `gone`: the account was removed. */
  readonly reason: 'stale' | 'drift' | 'gone';
  constructor(reason: 'stale' | 'drift' | 'gone', message: string) {
    super(message);
    this.reason = reason;
  }
}
