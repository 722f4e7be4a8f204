/**
 * The simulated app's friend data: accounts, their insertion-ordered friends, each friend's tags,
 * and the two sequences Tencent keeps per account.
 *
 * Every mutation bumps the sequence of each category it changed, by exactly 1, and a mutation that
 * changes nothing bumps nothing, so tests can check both "the client noticed" and "the client did not
 * refetch for nothing".
 */
import type { JsonValue } from '../tim/friend-get.js';
import { STANDARD_TAG_PREFIX, STANDARD_TAGS } from '../tim/friend-get.js';
import { cloneJson, cloneRecord, hasKeys, jsonEqual } from './json.js';
import { mutateRandomly } from './mutate.js';

/** Tag name → value. */
export type TagRecord = Record<string, JsonValue>;

/**
 * One friend of an account. `standard` holds the `Tag_SNS_IM_*` tags; `custom` holds
 * `Tag_SNS_Custom_*` tags and any other tag. The simulator covers those other tags with the custom
 * sequence, as `tagCategory` in src/tim/friend-get.ts assumes (Tencent does not document it).
 * Only tags that are set are present.
 */
export interface SimFriend {
  standard: TagRecord;
  custom: TagRecord;
}

/** Read-only view of one account, as the server pages it. */
export interface SimAccount {
  readonly standardSequence: number;
  readonly customSequence: number;
  /** Friends in insertion order, which is the order friend_get pages walk. */
  readonly friends: ReadonlyMap<string, Readonly<SimFriend>>;
}

/** A friend as {@link FriendStore.truth} reports it. */
export interface FriendTruth {
  friendId: string;
  standard: TagRecord;
  custom: TagRecord;
}

/** The canonical current state of one account, for comparing a mirror against. */
export interface AccountTruth {
  standardSequence: number;
  customSequence: number;
  /** Sorted by friendId in UTF-16 code-unit order (JavaScript's default string order). */
  friends: FriendTruth[];
}

/** `[friendId, friend]`, as the pager slices them. */
export type FriendEntry = readonly [friendId: string, friend: Readonly<SimFriend>];

/** Which categories a pager will return; used to list only the friends that have something to send. */
export interface CategoryFilter {
  standard: boolean;
  custom: boolean;
}

/** Options of {@link FriendStore.mutateRandom}. */
export interface MutateRandomOptions {
  /** Share of accounts to change, 0..1; at least one account when > 0. */
  fraction: number;
  /** Same seed and same store state → same changes. */
  seed: number;
}

/** A friendship that started or ended in one direction, as {@link FriendStore.onFriendship} reports it. */
export interface FriendshipChange {
  op: 'add' | 'delete';
  account: string;
  friendId: string;
}

/**
 * Key of the generator's unchecked insert. A symbol keeps it out of the store's public API and
 * autocompletion; it skips the copies and checks, which dominate generating 300,000 friends.
 * @internal
 */
export const insertTrusted = Symbol('insertTrusted');

/** UserIDs are at most 32 bytes (tim-api.md). */
export const MAX_USER_ID_BYTES = 32;

interface AccountRecord {
  standardSequence: number;
  customSequence: number;
  friends: Map<string, SimFriend>;
  /** Bumped on every change, so cached page lists know when they are stale. */
  version: number;
  /** Friend lists for the pager, valid while `cachedVersion === version`; index = filter mask. */
  cache: (FriendEntry[] | undefined)[];
  /** Other values derived from the account's data (see {@link FriendStore.derived}), valid as `cache` is. */
  derived: Map<string, unknown>;
  cachedVersion: number;
}

function checkUserId(id: string, what: string): void {
  if (typeof id !== 'string' || id.length === 0) throw new RangeError(`${what} must be a non-empty string`);
  if (Buffer.byteLength(id, 'utf8') > MAX_USER_ID_BYTES) {
    throw new RangeError(`${what} is longer than ${MAX_USER_ID_BYTES} UTF-8 bytes`);
  }
}

function checkTagName(tag: string): void {
  if (typeof tag !== 'string' || tag.length === 0) throw new RangeError('tag must be a non-empty string');
  // A plain object would treat this key as its prototype; no real tag is named so.
  if (tag === '__proto__') throw new RangeError('tag must not be __proto__');
}

function checkTags(record: TagRecord, standard: boolean): void {
  for (const tag of Object.keys(record)) {
    checkTagName(tag);
    if (tag.startsWith(STANDARD_TAG_PREFIX) !== standard) {
      throw new RangeError(
        `tag ${JSON.stringify(tag)} belongs in ${standard ? 'custom' : 'standard'}: ` +
          `only ${STANDARD_TAG_PREFIX}* tags are standard`,
      );
    }
    if (record[tag] === undefined) throw new RangeError(`tag ${JSON.stringify(tag)} has no value`);
  }
}

/**
 * The simulated friend data of one app.
 *
 * Stored tag records and values are never modified in place: a change replaces the friend's record.
 * So the generator can share frozen values (an empty custom record, group lists, notes) among friends,
 * and a record someone read earlier keeps showing what it showed.
 */
export class FriendStore {
  readonly #accounts = new Map<string, AccountRecord>();
  /** Sequences of removed accounts, so a re-added account never repeats a sequence a client stored. */
  readonly #retired = new Map<string, { standardSequence: number; customSequence: number }>();
  /**
   * Told after a friend is added to or removed from a list (not when a present friend's tags are
   * replaced, and not for the generator's bulk inserts). The simulator sends webhooks from it.
   */
  onFriendship: ((change: FriendshipChange) => void) | undefined;

  /** Number of accounts. */
  get size(): number {
    return this.#accounts.size;
  }

  /** Account ids in insertion order. */
  accountIds(): string[] {
    return [...this.#accounts.keys()];
  }

  /** True when the account exists. */
  hasAccount(accountId: string): boolean {
    return this.#accounts.has(accountId);
  }

  /** A read-only view of an account, or undefined when it does not exist. */
  account(accountId: string): SimAccount | undefined {
    return this.#accounts.get(accountId);
  }

  /** Total friend entries over all accounts (each direction of a mutual friendship counts once). */
  totalFriends(): number {
    let total = 0;
    for (const rec of this.#accounts.values()) total += rec.friends.size;
    return total;
  }

  /**
   * Creates an account with no friends. New accounts start with both sequences at 0, as an account that
   * never had friends; any friend added moves them to ≥ 1. An id that was removed earlier comes back
   * with sequences above its old ones, so a client's stored sequences never falsely match.
   *
   * @returns false when the account already exists (nothing changes)
   * @throws RangeError when the id is empty or longer than 32 UTF-8 bytes
   */
  addAccount(accountId: string): boolean {
    checkUserId(accountId, 'account id');
    if (this.#accounts.has(accountId)) return false;
    const old = this.#retired.get(accountId);
    this.#accounts.set(accountId, {
      standardSequence: old ? old.standardSequence + 1 : 0,
      customSequence: old ? old.customSequence + 1 : 0,
      friends: new Map(),
      version: 0,
      cache: [],
      derived: new Map(),
      cachedVersion: -1,
    });
    return true;
  }

  /**
   * Removes an account and its friend list. Other accounts keep it in their lists, as Tencent keeps
   * friend entries that point at a deleted account.
   *
   * @returns false when the account did not exist
   */
  removeAccount(accountId: string): boolean {
    const rec = this.#accounts.get(accountId);
    if (!rec) return false;
    this.#retired.set(accountId, {
      standardSequence: rec.standardSequence,
      customSequence: rec.customSequence,
    });
    this.#accounts.delete(accountId);
    return true;
  }

  /**
   * Adds `friendId` to the end of the account's list (one direction only; call twice for a mutual
   * friendship). Bumps the standard sequence, and the custom one when the friend has custom tags.
   * When `Tag_SNS_IM_AddTime` is missing it is set to now, because Tencent always records it.
   * Adding a friend that exists replaces its tags in place, bumping only the categories that differ.
   *
   * @returns false when nothing changed
   * @throws Error when the account does not exist; RangeError for a bad id or a misplaced tag
   */
  addFriend(
    accountId: string,
    friendId: string,
    tags: { standard?: TagRecord; custom?: TagRecord } = {},
  ): boolean {
    const rec = this.#require(accountId);
    checkUserId(friendId, 'friend id');
    if (friendId === accountId) throw new RangeError('an account cannot be its own friend');
    const standard = cloneRecord(tags.standard ?? {});
    const custom = cloneRecord(tags.custom ?? {});
    checkTags(standard, true);
    checkTags(custom, false);
    if (standard[STANDARD_TAGS.addTime] === undefined) {
      standard[STANDARD_TAGS.addTime] = Math.floor(Date.now() / 1000);
    }
    const existing = rec.friends.get(friendId);
    if (existing) {
      const standardChanged = !jsonEqual(existing.standard, standard);
      const customChanged = !jsonEqual(existing.custom, custom);
      if (!standardChanged && !customChanged) return false;
      existing.standard = standard;
      existing.custom = custom;
      this.#touch(rec, standardChanged, customChanged);
      return true;
    }
    rec.friends.set(friendId, { standard, custom });
    this.#touch(rec, true, hasKeys(custom));
    this.onFriendship?.({ op: 'add', account: accountId, friendId });
    return true;
  }

  /**
   * Removes a friend from the account's list. Bumps the standard sequence, and the custom one when
   * the friend had custom tags.
   *
   * @returns false when it was not a friend
   * @throws Error when the account does not exist
   */
  removeFriend(accountId: string, friendId: string): boolean {
    const rec = this.#require(accountId);
    const friend = rec.friends.get(friendId);
    if (!friend) return false;
    rec.friends.delete(friendId);
    this.#touch(rec, true, hasKeys(friend.custom));
    this.onFriendship?.({ op: 'delete', account: accountId, friendId });
    return true;
  }

  /**
   * Sets (or, with `undefined`, clears) one `Tag_SNS_IM_*` tag of a friend; bumps the standard sequence.
   *
   * @returns false when the value was already that
   * @throws Error when the account or friend does not exist; RangeError for a non-standard tag
   */
  setStandardTag(accountId: string, friendId: string, tag: string, value: JsonValue | undefined): boolean {
    return this.#setTag(accountId, friendId, tag, value, true);
  }

  /**
   * Sets (or, with `undefined`, clears) one custom or unknown tag of a friend; bumps the custom sequence.
   *
   * @returns false when the value was already that
   * @throws Error when the account or friend does not exist; RangeError for a `Tag_SNS_IM_*` tag
   */
  setCustomTag(accountId: string, friendId: string, tag: string, value: JsonValue | undefined): boolean {
    return this.#setTag(accountId, friendId, tag, value, false);
  }

  /**
   * The canonical current state of an account, deep-copied, friends sorted by id.
   *
   * @throws Error when the account does not exist
   */
  truth(accountId: string): AccountTruth {
    const rec = this.#require(accountId);
    const ids = [...rec.friends.keys()].sort();
    return {
      standardSequence: rec.standardSequence,
      customSequence: rec.customSequence,
      friends: ids.map((friendId) => {
        const f = rec.friends.get(friendId)!;
        return { friendId, standard: cloneRecord(f.standard), custom: cloneRecord(f.custom) };
      }),
    };
  }

  /**
   * The account's friends in page order, or undefined for an unknown account. With a filter, only
   * friends with at least one tag in a selected category (what the 'omit-friend' reading pages over).
   * Cached until the account next changes, so paging costs O(friends) once, then O(page) a page.
   * The returned array and friends must not be modified.
   */
  listFriends(accountId: string, filter?: CategoryFilter): readonly FriendEntry[] | undefined {
    const rec = this.#accounts.get(accountId);
    if (!rec) return undefined;
    this.#fresh(rec);
    const mask = filter ? (filter.standard ? 1 : 0) | (filter.custom ? 2 : 0) : 4;
    let list = rec.cache[mask];
    if (!list) {
      const all = rec.cache[4] ?? [...rec.friends.entries()];
      rec.cache[4] = all;
      list =
        mask === 4
          ? all
          : all.filter(([, f]) => (mask & 1 && hasKeys(f.standard)) || (mask & 2 && hasKeys(f.custom)));
      rec.cache[mask] = list;
    }
    return list;
  }

  /**
   * Appends a new friend without copying or checking, as {@link addFriend} would for a new friend.
   * The caller guarantees the account exists, `friendId` is valid, new, and not the account itself,
   * tags are in the right record, and AddTime is set; the store takes ownership of `friend`.
   * @internal
   */
  [insertTrusted](accountId: string, friendId: string, friend: SimFriend): void {
    const rec = this.#accounts.get(accountId)!;
    rec.friends.set(friendId, friend);
    this.#touch(rec, true, hasKeys(friend.custom));
  }

  /**
   * Changes about `fraction` of the accounts the way users do: add or remove a friend (both directions
   * for most friendships between accounts), edit a remark or groups (standard only), set or clear
   * a custom tag (custom only). Deterministic for a seed and a store state.
   *
   * @returns the ids of every account that changed, each once, in the order they were first changed
   */
  mutateRandom(options: MutateRandomOptions): string[] {
    return mutateRandomly(this, options);
  }

  /**
   * A value derived from the account's current data: `compute()` the first time, then the same
   * value until the account next changes. Undefined for an unknown account. The pager keeps its
   * serialized items here.
   */
  derived<T>(accountId: string, key: string, compute: () => T): T | undefined {
    const rec = this.#accounts.get(accountId);
    if (!rec) return undefined;
    this.#fresh(rec);
    if (rec.derived.has(key)) return rec.derived.get(key) as T;
    const value = compute();
    rec.derived.set(key, value);
    return value;
  }

  /** Drops cached lists and derived values when the account changed since they were made. */
  #fresh(rec: AccountRecord): void {
    if (rec.cachedVersion !== rec.version) {
      rec.cache = [];
      rec.derived = new Map();
      rec.cachedVersion = rec.version;
    }
  }

  #require(accountId: string): AccountRecord {
    const rec = this.#accounts.get(accountId);
    if (!rec) throw new Error(`unknown account ${JSON.stringify(accountId)}`);
    return rec;
  }

  #touch(rec: AccountRecord, standard: boolean, custom: boolean): void {
    if (standard) rec.standardSequence += 1;
    if (custom) rec.customSequence += 1;
    rec.version += 1;
  }

  #setTag(accountId: string, friendId: string, tag: string, value: JsonValue | undefined, standard: boolean) {
    const rec = this.#require(accountId);
    const friend = rec.friends.get(friendId);
    if (!friend)
      throw new Error(`${JSON.stringify(friendId)} is not a friend of ${JSON.stringify(accountId)}`);
    checkTagName(tag);
    if (tag.startsWith(STANDARD_TAG_PREFIX) !== standard) {
      throw new RangeError(`tag ${JSON.stringify(tag)} is not a ${standard ? 'standard' : 'custom'} tag`);
    }
    const record = standard ? friend.standard : friend.custom;
    const present = Object.hasOwn(record, tag);
    if (value === undefined ? !present : present && jsonEqual(record[tag], value)) return false;
    // Copy on write: stored records may be shared and frozen (see the class comment).
    const next: TagRecord = {};
    for (const key of Object.keys(record)) if (key !== tag) next[key] = record[key] as JsonValue;
    if (value !== undefined) next[tag] = cloneJson(value);
    if (standard) friend.standard = next;
    else friend.custom = next;
    this.#touch(rec, standard, !standard);
    return true;
  }
}
