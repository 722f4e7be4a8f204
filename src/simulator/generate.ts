/**
 * Seeded generation of a realistic app: heavy-tailed friend counts, mostly mutual friendships,
 * a few friends outside the account list, and some account ids that break naive SQL, JSON, URL or
 * shell handling. Same options → same store, byte for byte.
 */
import { SeededRandom } from './prng.js';
import { FriendStore, insertTrusted } from './store.js';
import { makeAddSource, makeAddTime, makeCustomTags, makeStandardTags } from './vocabulary.js';

/** Options of {@link generateApp}. */
export interface GenerateOptions {
  /** Number of accounts. Default 1000. */
  accounts?: number;
  /** Largest friend count (Tencent's cap is 3000). Default 3000. */
  maxFriends?: number;
  /** Mean friend count per account. Default 300. */
  meanFriends?: number;
  /**
   * Smallest friend count: no account has fewer (and none has none). Default 0. Equal to
   * `maxFriends`, every account has exactly that many friends (given enough accounts and outsiders).
   */
  minFriends?: number;
  /** Default 1. */
  seed?: number;
  /** Mix in {@link ODD_ACCOUNT_IDS}. Default true. */
  oddIds?: boolean;
}

/**
 * Valid but awkward UserIDs (each ≤ 32 UTF-8 bytes): quotes, whitespace, a backslash, emoji, CJK,
 * URL metacharacters, an SQL injection attempt and one of exactly 32 bytes.
 */
export const ODD_ACCOUNT_IDS: readonly string[] = [
  "o'brien",
  'say "hi"',
  'two words',
  'tab\there',
  'back\\slash',
  '😀emoji🎉',
  '张伟_用户',
  "'; drop table x; --",
  'a&b=c?d#e%20/f+g',
  'max_len_id_32_bytes_exactly_0032',
  'ÄÖÜ-ß-ñ',
];

/** Share of friend entries whose friend lists the account back. */
const MUTUAL_SHARE = 0.7;
/** Share of accounts with no friends at all. */
const ZERO_SHARE = 0.03;
/** Spread of the log-normal friend counts; 1.1 gives a median near half the mean and a long tail. */
const SIGMA = 1.1;

function checkCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0)
    throw new RangeError(`${name} must be a non-negative integer`);
}

/**
 * Builds a {@link FriendStore} for an app. 1,000 accounts × 300 friends take well under a second.
 *
 * @example
 * const store = generateApp({ accounts: 200, meanFriends: 50, seed: 7 });
 */
export function generateApp(options: GenerateOptions = {}): FriendStore {
  const n = options.accounts ?? 1000;
  const maxFriends = options.maxFriends ?? 3000;
  const minFriends = options.minFriends ?? 0;
  const meanFriends = Math.max(Math.min(options.meanFriends ?? 300, maxFriends), minFriends);
  const seed = options.seed ?? 1;
  checkCount('accounts', n);
  checkCount('maxFriends', maxFriends);
  checkCount('minFriends', minFriends);
  if (minFriends > maxFriends) throw new RangeError('minFriends must be ≤ maxFriends');
  if (!Number.isFinite(meanFriends) || meanFriends < 0) throw new RangeError('meanFriends must be ≥ 0');
  const rng = new SeededRandom(seed);

  const ids = makeAccountIds(rng, n, options.oddIds ?? true);
  const store = new FriendStore();
  for (const id of ids) store.addAccount(id);
  if (n === 0 || maxFriends === 0 || meanFriends === 0) return store;

  const degrees = makeDegrees(rng, n, maxFriends, meanFriends, minFriends);
  // A shared outside pool, so some outsiders are friends of many accounts, like a support bot. With
  // a minimum, large enough for a small app's accounts to reach it (a larger pool only then, so the
  // apps generated without one stay the same).
  const outsideIds = Array.from(
    { length: Math.max(100, n * 3, minFriends > 0 ? 2 * maxFriends : 0) },
    (_, i) => `ext_${String(i).padStart(7, '0')}`,
  );
  const addPair = (a: string, b: string, mutual: boolean): boolean => {
    const own = store.account(a)!;
    if (a === b || own.friends.has(b) || (mutual && store.account(b)!.friends.has(a))) return false;
    const addSource = makeAddSource(rng);
    const addTime = makeAddTime(rng);
    // Freshly made values with valid ids: the unchecked insert is safe and several times faster.
    store[insertTrusted](a, b, {
      standard: makeStandardTags(rng, addSource, addTime),
      custom: makeCustomTags(rng),
    });
    // Both sides of a friendship share when and how it was made; remarks and custom data are per side.
    if (mutual) {
      store[insertTrusted](b, a, {
        standard: makeStandardTags(rng, addSource, addTime),
        custom: makeCustomTags(rng),
      });
    }
    return true;
  };
  const addOutside = (a: string): void => {
    if (store.account(a)!.friends.size >= maxFriends) return;
    for (let tries = 0; tries < 10; tries++) {
      if (addPair(a, rng.pick(outsideIds), false)) return;
    }
  };

  // Mutual friendships: pair up "stubs" at random (a configuration model), which keeps each account's
  // friend count near its heavy-tailed target instead of flattening it.
  const mutualTargets = degrees.map((d) => Math.min(Math.round(d * MUTUAL_SHARE), n - 1));
  let stubs = new Int32Array(mutualTargets.reduce((sum, m) => sum + m, 0));
  let at = 0;
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < mutualTargets[i]!; k++) stubs[at++] = i;
  }
  // A self-pair or a repeat fails; reshuffling the failures a few times rescues most of them.
  for (let round = 0; round < 4 && stubs.length > 1; round++) {
    rng.shuffle(stubs);
    const failed: number[] = [];
    for (let s = 0; s + 1 < stubs.length; s += 2) {
      const a = stubs[s]!;
      const b = stubs[s + 1]!;
      if (!addPair(ids[a]!, ids[b]!, true)) failed.push(a, b);
    }
    if (stubs.length % 2 === 1) failed.push(stubs[stubs.length - 1]!);
    stubs = Int32Array.from(failed);
  }
  // What still failed keeps its account's count on target with outside friends.
  for (const i of stubs) addOutside(ids[i]!);

  // The rest: one-way friends, half within the app and half outside it.
  for (let i = 0; i < n; i++) {
    const a = ids[i]!;
    const rest = degrees[i]! - mutualTargets[i]!;
    for (let k = 0; k < rest; k++) {
      if (rng.chance(0.5) && n > 1 && addPair(a, ids[rng.int(n)]!, false)) continue;
      addOutside(a);
    }
  }
  return store;
}

function makeAccountIds(rng: SeededRandom, n: number, oddIds: boolean): string[] {
  const ids = Array.from({ length: n }, (_, i) => `user_${String(i).padStart(6, '0')}`);
  if (!oddIds || n === 0) return ids;
  // About one in ten ids is odd in a small app, every odd id in a large one.
  const oddCount = Math.min(ODD_ACCOUNT_IDS.length, Math.ceil(n / 10));
  const positions = rng.shuffle(Array.from({ length: n }, (_, i) => i)).slice(0, oddCount);
  positions.forEach((pos, k) => {
    ids[pos] = ODD_ACCOUNT_IDS[k]!;
  });
  return ids;
}

/**
 * Friend-count targets: a few accounts with none, a log-normal body (most accounts small), and the
 * tail clipped into the top tenth below `maxFriends`, so some accounts sit near the cap. The body's
 * scale is solved for so that the clipped counts still average `meanFriends`.
 */
function makeDegrees(
  rng: SeededRandom,
  n: number,
  maxFriends: number,
  meanFriends: number,
  minFriends: number,
): number[] {
  const zero: boolean[] = [];
  const z: number[] = [];
  const nearCap: number[] = [];
  for (let i = 0; i < n; i++) {
    zero.push(rng.chance(ZERO_SHARE));
    z.push(rng.normal());
    nearCap.push(maxFriends - rng.int(Math.max(1, Math.floor(maxFriends / 10))));
  }
  const degreesFor = (mu: number): number[] =>
    z.map((zi, i) => {
      if (zero[i] && minFriends === 0) return 0;
      const d = Math.max(1, minFriends, Math.round(Math.exp(mu + SIGMA * zi)));
      return d > maxFriends ? Math.max(nearCap[i]!, minFriends) : d;
    });
  const meanOf = (ds: number[]): number => ds.reduce((sum, d) => sum + d, 0) / n;
  // Bisection on the log-scale: the mean grows with mu, and 40 halvings are far below one friend.
  let lo = -5;
  let hi = Math.log(maxFriends) + 5;
  for (let step = 0; step < 40; step++) {
    const mid = (lo + hi) / 2;
    if (meanOf(degreesFor(mid)) < meanFriends) lo = mid;
    else hi = mid;
  }
  return degreesFor(hi);
}
