/**
 * The Kysely `Database` interface: the tables as the application sees them.
 * Column meanings are in migrations/ and docs/analytics.md, "Tables".
 */
import type { ColumnType, Generated } from 'kysely';

/** Account states. `pending`: never synced; `missing`: Tencent says it does not exist (30003). */
export type AccountStatus = 'pending' | 'ok' | 'missing' | 'failing' | 'disabled';

/** timestamptz columns read as Date; bigint columns are parsed to number in `db/pool.ts`. */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
/** A timestamp column with a database default. */
type DefaultedTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;

export interface AccountsTable {
  account_id: string;
  standard_sequence: number | null;
  custom_sequence: number | null;
  friend_count: Generated<number>;
  status: Generated<AccountStatus>;
  last_synced_at: Timestamp | null;
  last_error: string | null;
  created_at: DefaultedTimestamp;
  last_attempt_at: Timestamp | null;
  last_changed_at: Timestamp | null;
  failures: Generated<number>;
  next_sync_at: DefaultedTimestamp;
  /** 0 resync requested, 1 never synced, 2 regular. */
  priority: Generated<number>;
  resync_requested_at: Timestamp | null;
  lease_owner: string | null;
  leased_at: Timestamp | null;
  lease_expires_at: Timestamp | null;
  /** Next full read (reconciliation); null until the scheduler first claims the account. */
  reconcile_due_at: Timestamp | null;
  /** The reconcile time a claim proposed; becomes `reconcile_due_at` when that sync succeeds. */
  reconcile_next_at: Timestamp | null;
  /** `listed` by an operator, or `discovered` as a friend of `discovered_from`. */
  source: Generated<'listed' | 'discovered'>;
  discovered_from: string | null;
}

/** One row: how many rows `tim.accounts` has, kept exact by triggers. */
export interface AccountTotalsTable {
  one: Generated<boolean>;
  total: number;
}

export interface ReplicasTable {
  replica_id: string;
  hostname: string;
  pid: number;
  started_at: DefaultedTimestamp;
  heartbeat_at: DefaultedTimestamp;
  expires_at: Timestamp;
  peers: Generated<number>;
  peers_since: DefaultedTimestamp;
  calls_per_second: Generated<number>;
  /**
   * The session-level advisory lock this replica holds while its session lives (a bigint, read as
   * text so no digit is lost); null for a replica of an older version.
   */
  lock_key: string | null;
}

export interface FriendsTable {
  account_id: string;
  friend_id: string;
  remark: string | null;
  groups: string[] | null;
  add_source: string | null;
  add_wording: string | null;
  add_time: Timestamp | null;
  first_seen_at: DefaultedTimestamp;
  updated_at: DefaultedTimestamp;
}

export interface FriendTagsTable {
  account_id: string;
  friend_id: string;
  tag: string;
  value: unknown;
  category: 'standard' | 'custom';
  updated_at: DefaultedTimestamp;
}

/** `tim.friend_events`: append-only change history (docs/analytics.md, "Tables"). */
export interface FriendEventsTable {
  id: Generated<number>;
  account_id: string;
  /** Null for a baseline. */
  friend_id: string | null;
  kind: 'baseline' | 'added' | 'removed' | 'changed';
  /** added/changed: {field: {old?, new?}}; removed: null; baseline: {friend_count}. */
  changed: unknown;
  observed_at: DefaultedTimestamp;
  standard_sequence: number | null;
  custom_sequence: number | null;
}

/** Tables of schema `tim`, addressed as `tim.accounts` etc. */
export interface Database {
  'tim.accounts': AccountsTable;
  'tim.friends': FriendsTable;
  'tim.friend_tags': FriendTagsTable;
  'tim.replicas': ReplicasTable;
  'tim.account_totals': AccountTotalsTable;
  'tim.friend_events': FriendEventsTable;
}
