/**
 * The sequence rule and paging of `friend_get`, separate from HTTP so it can be reasoned about alone.
 *
 * A category (standard or custom) is returned for every friend unless the request's sequence for it
 * equals the account's current one. What happens to a friend with nothing to return is not documented;
 * {@link SequenceReading} picks one of the two readings so clients can be tested against both.
 */
import type { JsonValue } from '../tim/friend-get.js';
import type { FriendEntry, FriendStore, SimFriend } from './store.js';

/**
 * How a friend with nothing to return is answered:
 * - `empty-value-item`: as `{"To_Account": id}` with no `ValueItem` key; every friend appears;
 * - `omit-friend`: not at all; only friends with returned tags appear.
 */
export type SequenceReading = 'empty-value-item' | 'omit-friend';

/** One `{Tag, Value}` of a `ValueItem`. */
export interface WireTagValue {
  Tag: string;
  Value: JsonValue;
}

/** One `UserDataItem` as sent on the wire. */
export interface WireUserDataItem {
  To_Account: string;
  ValueItem?: WireTagValue[];
}

/** What a page request asks for, after the cursor is turned back into an offset. */
export interface PageQuery {
  accountId: string;
  /** Position in the (reading-dependent) friend list. */
  offset: number;
  standardSequence?: number;
  customSequence?: number;
}

/** A page, before the cursor for the next one is issued. */
export interface BuiltPage {
  items: WireUserDataItem[];
  standardSequence: number;
  customSequence: number;
  /** All friends of the account, whatever was returned. */
  friendNum: number;
  /** Offset of the next page, or undefined when this page completes the list. */
  nextOffset: number | undefined;
}

function valueItems(record: Readonly<Record<string, JsonValue>>, into: WireTagValue[] | undefined) {
  let out = into;
  for (const tag in record) {
    out ??= [];
    out.push({ Tag: tag, Value: record[tag] as JsonValue });
  }
  return out;
}

function toItem(friendId: string, friend: Readonly<SimFriend>, standard: boolean, custom: boolean) {
  let values: WireTagValue[] | undefined;
  if (standard) values = valueItems(friend.standard, values);
  if (custom) values = valueItems(friend.custom, values);
  const item: WireUserDataItem = { To_Account: friendId };
  if (values) item.ValueItem = values;
  return item;
}

/** A page slice: which friends a page holds, which categories it returns, and the rest of the page. */
interface PageSlice {
  list: readonly FriendEntry[];
  start: number;
  end: number;
  standard: boolean;
  custom: boolean;
  /** Everything of the page but its items. */
  page: Omit<BuiltPage, 'items'>;
}

function slicePage(
  store: FriendStore,
  query: PageQuery,
  options: { pageSize: number; reading: SequenceReading },
): PageSlice | undefined {
  const account = store.account(query.accountId);
  if (!account) return undefined;
  const standard = query.standardSequence !== account.standardSequence;
  const custom = query.customSequence !== account.customSequence;
  const list =
    options.reading === 'omit-friend'
      ? store.listFriends(query.accountId, { standard, custom })!
      : store.listFriends(query.accountId)!;
  const end = Math.min(list.length, query.offset + options.pageSize);
  return {
    list,
    start: query.offset,
    end,
    standard,
    custom,
    page: {
      standardSequence: account.standardSequence,
      customSequence: account.customSequence,
      friendNum: account.friends.size,
      nextOffset: end < list.length ? end : undefined,
    },
  };
}

/**
 * Builds one page from the account's current data and sequences. Costs O(page size), plus O(friends)
 * the first time an account's list is needed after it changed.
 *
 * @returns undefined when the account does not exist
 */
export function buildPage(
  store: FriendStore,
  query: PageQuery,
  options: { pageSize: number; reading: SequenceReading },
): BuiltPage | undefined {
  const slice = slicePage(store, query, options);
  if (!slice) return undefined;
  const items: WireUserDataItem[] = [];
  for (let i = slice.start; i < slice.end; i++) {
    const [friendId, friend] = slice.list[i]!;
    items.push(toItem(friendId, friend, slice.standard, slice.custom));
  }
  return { items, ...slice.page };
}

/** {@link BuiltPage} with its items already serialized. */
export interface BuiltPageJson extends Omit<BuiltPage, 'items'> {
  /** The items as the inside of the `UserDataItem` JSON array: exactly `JSON.stringify(items)` without its brackets. */
  itemsJson: string;
  /** How many items. */
  count: number;
}

/**
 * Every item of the slice's list, each serialized as `JSON.stringify` writes it, kept by the store
 * until the account changes.
 */
function itemsJson(store: FriendStore, accountId: string, slice: PageSlice, reading: SequenceReading) {
  const key = `items:${reading}:${slice.standard ? 1 : 0}${slice.custom ? 1 : 0}`;
  return store.derived(accountId, key, () =>
    slice.list.map(([friendId, friend]) =>
      JSON.stringify(toItem(friendId, friend, slice.standard, slice.custom)),
    ),
  )!;
}

/**
 * {@link buildPage}, serialized: the same page, byte for byte as `JSON.stringify` writes it, from
 * items serialized once per change of the account. Serializing every page afresh was most of the
 * simulator's CPU per call (bench/notes.md has the measurements); in the benchmark that CPU is taken
 * from the mirror and Postgres on the same machine, while Tencent's own servers take none of ours.
 *
 * @returns undefined when the account does not exist
 */
export function buildPageJson(
  store: FriendStore,
  query: PageQuery,
  options: { pageSize: number; reading: SequenceReading },
): BuiltPageJson | undefined {
  const slice = slicePage(store, query, options);
  if (!slice) return undefined;
  const parts = itemsJson(store, query.accountId, slice, options.reading).slice(slice.start, slice.end);
  return { itemsJson: parts.join(','), count: parts.length, ...slice.page };
}

/**
 * Serializes every account's items ahead of time, as a first read (no sequences) pages them, so a
 * first sweep's pages cost what later ones do. For an app generated in full before it is served
 * (`friend-mirror simulate`).
 */
export function warmPageJson(store: FriendStore, reading: SequenceReading): void {
  for (const accountId of store.accountIds()) {
    const slice = slicePage(store, { accountId, offset: 0 }, { pageSize: 0, reading })!;
    itemsJson(store, accountId, slice, reading);
  }
}
