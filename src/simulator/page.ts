/**
 * The sequence rule and paging of `friend_get`, separate from HTTP so it can be reasoned about alone.
 *
 * A category (standard or custom) is returned for every friend unless the request's sequence for it
 * equals the account's current one. What happens to a friend with nothing to return is not documented;
 * {@link SequenceReading} picks one of the two readings so clients can be tested against both.
 */
import type { JsonValue } from '../tim/friend-get.js';
import type { FriendStore, SimFriend } from './store.js';

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
  const account = store.account(query.accountId);
  if (!account) return undefined;
  const standard = query.standardSequence !== account.standardSequence;
  const custom = query.customSequence !== account.customSequence;
  const list =
    options.reading === 'omit-friend'
      ? store.listFriends(query.accountId, { standard, custom })!
      : store.listFriends(query.accountId)!;
  const end = Math.min(list.length, query.offset + options.pageSize);
  const items: WireUserDataItem[] = [];
  for (let i = query.offset; i < end; i++) {
    const [friendId, friend] = list[i]!;
    items.push(toItem(friendId, friend, standard, custom));
  }
  return {
    items,
    standardSequence: account.standardSequence,
    customSequence: account.customSequence,
    friendNum: account.friends.size,
    nextOffset: end < list.length ? end : undefined,
  };
}
