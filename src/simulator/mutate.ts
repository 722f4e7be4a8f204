/**
 * Random but realistic changes to a {@link FriendStore}, for tests and load tests that need "some
 * accounts changed since the last pull". The mix covers every sequence case a mirror must handle:
 * standard-only edits (remark, groups), custom-only edits (set or clear a custom or unknown tag), and
 * friend adds and removes, which move the standard sequence and, when the friend has custom tags,
 * the custom one too.
 */
import { STANDARD_TAGS } from '../tim/friend-get.js';
import { SeededRandom } from './prng.js';
import type { FriendStore, MutateRandomOptions } from './store.js';
import {
  CUSTOM_TAGS,
  makeAddSource,
  makeBetaFlag,
  makeCustomTags,
  makeGroups,
  makeLevel,
  makeNote,
  makeRemark,
  makeStandardTags,
  UNKNOWN_TAG,
} from './vocabulary.js';

type MutationKind = 'add' | 'remove' | 'remark' | 'groups' | 'level' | 'note-or-flag';

/** Weights of each kind; edits outnumber adds and removes, as in a real app. */
const KINDS: readonly [MutationKind, number][] = [
  ['add', 25],
  ['remove', 15],
  ['remark', 15],
  ['groups', 10],
  ['level', 15],
  ['note-or-flag', 20],
];
const TOTAL_WEIGHT = KINDS.reduce((sum, [, w]) => sum + w, 0);

/** Share of friendships between two accounts that are added and removed in both directions. */
const MUTUAL_SHARE = 0.7;

/** Tries per account before giving up: a draw can be a no-op, e.g. a new remark equal to the old one. */
const ATTEMPTS = 8;

/** Implements {@link FriendStore.mutateRandom}. */
export function mutateRandomly(store: FriendStore, options: MutateRandomOptions): string[] {
  const { fraction, seed } = options;
  if (!Number.isFinite(fraction) || fraction < 0 || fraction > 1) {
    throw new RangeError('fraction must be between 0 and 1');
  }
  if (!Number.isFinite(seed)) throw new RangeError('seed must be a number');
  const rng = new SeededRandom(seed);
  const ids = store.accountIds();
  const n = ids.length;
  let k = Math.round(fraction * n);
  if (fraction > 0 && k === 0 && n > 0) k = 1;
  // A partial Fisher–Yates picks k distinct accounts without shuffling all of them.
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(n - i);
    const tmp = ids[i]!;
    ids[i] = ids[j]!;
    ids[j] = tmp;
  }
  const changed = new Set<string>();
  for (let i = 0; i < k; i++) {
    const accountId = ids[i]!;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (mutateOne(store, rng, accountId, ids, changed)) break;
    }
  }
  return [...changed];
}

function pickKind(rng: SeededRandom): MutationKind {
  let r = rng.next() * TOTAL_WEIGHT;
  for (const [kind, weight] of KINDS) {
    r -= weight;
    if (r < 0) return kind;
  }
  return 'add';
}

function mutateOne(
  store: FriendStore,
  rng: SeededRandom,
  accountId: string,
  pool: readonly string[],
  changed: Set<string>,
): boolean {
  const friends = store.listFriends(accountId) ?? [];
  const kind = friends.length === 0 ? 'add' : pickKind(rng);
  const mark = (did: boolean, id = accountId): boolean => {
    if (did) changed.add(id);
    return did;
  };
  if (kind === 'add') return addFriend(store, rng, accountId, pool, mark);

  const [friendId, friend] = rng.pick(friends);
  switch (kind) {
    case 'remove': {
      const removed = mark(store.removeFriend(accountId, friendId));
      if (removed && store.account(friendId)?.friends.has(accountId) && rng.chance(MUTUAL_SHARE)) {
        mark(store.removeFriend(friendId, accountId), friendId);
      }
      return removed;
    }
    case 'remark': {
      const clear = friend.standard[STANDARD_TAGS.remark] !== undefined && rng.chance(0.25);
      const value = clear ? undefined : makeRemark(rng);
      return mark(store.setStandardTag(accountId, friendId, STANDARD_TAGS.remark, value));
    }
    case 'groups': {
      const groups = makeGroups(rng);
      const value = groups.length > 0 ? [...groups] : undefined;
      return mark(store.setStandardTag(accountId, friendId, STANDARD_TAGS.group, value));
    }
    case 'level': {
      const value = rng.chance(0.2) ? undefined : makeLevel(rng);
      return mark(store.setCustomTag(accountId, friendId, CUSTOM_TAGS.level, value));
    }
    case 'note-or-flag': {
      const tag = rng.chance(0.8) ? CUSTOM_TAGS.note : UNKNOWN_TAG;
      const clear = friend.custom[tag] !== undefined && rng.chance(0.5);
      const value = clear ? undefined : tag === UNKNOWN_TAG ? makeBetaFlag(rng) : makeNote(rng);
      return mark(store.setCustomTag(accountId, friendId, tag, value));
    }
  }
}

function addFriend(
  store: FriendStore,
  rng: SeededRandom,
  accountId: string,
  pool: readonly string[],
  mark: (did: boolean, id?: string) => boolean,
): boolean {
  const own = store.account(accountId)!;
  let friendId: string | undefined;
  if (pool.length > 1 && rng.chance(0.8)) {
    for (let tries = 0; tries < 5 && friendId === undefined; tries++) {
      const candidate = rng.pick(pool);
      if (candidate !== accountId && !own.friends.has(candidate)) friendId = candidate;
    }
  }
  friendId ??= `ext_${rng.int(2 ** 31).toString(36)}`;
  if (own.friends.has(friendId)) return false;
  // Late 2025, fixed so that replays do not depend on the clock.
  const addTime = 1_760_000_000 + rng.int(5_000_000);
  const addSource = makeAddSource(rng);
  const added = mark(
    store.addFriend(accountId, friendId, {
      standard: makeStandardTags(rng, addSource, addTime),
      custom: makeCustomTags(rng),
    }),
  );
  const other = store.account(friendId);
  if (added && other && !other.friends.has(accountId) && rng.chance(MUTUAL_SHARE)) {
    mark(
      store.addFriend(friendId, accountId, {
        standard: makeStandardTags(rng, addSource, addTime),
        custom: makeCustomTags(rng),
      }),
      friendId,
    );
  }
  return added;
}
