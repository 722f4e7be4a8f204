/**
 * Pulling all pages of one account's friend list, consistently.
 *
 * One pull sends the sequences stored from the last COMMITTED pull on every page; sending the
 * sequence an earlier page returned would make later pages skip data. If the server's sequences
 * move between pages, or a friend appears twice, the pages no longer describe one moment, so the
 * pull starts over (a bounded number of times).
 */
import { TimPagingError } from './errors.js';
import type { FriendGetPage, FriendGetRequest, FriendItem } from './friend-get.js';

/** Makes one friend_get call; the caller adds rate limiting and retries. */
export type FriendGetCall = (req: FriendGetRequest) => Promise<FriendGetPage>;

/** Options of {@link pullFriends}. */
export interface PullOptions {
  accountId: string;
  /** Stored sequences; null asks for everything (first sync, or a full resync). */
  standardSequence: number | null;
  customSequence: number | null;
  /** An account has at most 3,000 friends, so a pull needing more pages than this is broken. Default 100. */
  maxPages?: number;
  /** Restarts allowed when sequences move mid-pull. Default 3. */
  maxRestarts?: number;
  /**
   * Takes each page's friends as it arrives, instead of {@link PullResult.items}. A caller that
   * keeps friends in a smaller form of its own converts each page at once, and the decoded page
   * becomes garbage while it is still young: holding every page's decoded objects until the last
   * page made them survive garbage collections, which cost the main thread more than decoding.
   */
  sink?: FriendSink;
}

/** Receives a pull's friends page by page (see {@link PullOptions.sink}). */
export interface FriendSink {
  /** A new attempt of the pull starts from the first page: forget every friend added so far. */
  restart(): void;
  /** One page's friends, in order. No friend repeats within the attempt. */
  add(items: readonly FriendItem[]): void;
}

/** The outcome of a complete pull. */
export interface PullResult {
  standardSequence: number;
  customSequence: number;
  /** The server sent standard data, for every friend. */
  standardIncluded: boolean;
  /** The server sent custom data, for every friend that has any. */
  customIncluded: boolean;
  /** Both sequences matched the stored ones: nothing changed and nothing else was read. */
  unchanged: boolean;
  /** Every friend of the pull, in page order; empty when they went to {@link PullOptions.sink}. */
  items: FriendItem[];
  calls: number;
  restarts: number;
}

class Restart {
  constructor(readonly reason: string) {}
}

/**
 * Pulls every page of `accountId`.
 *
 * When both stored sequences match the server's, the first page proves the account unchanged and
 * the pull stops after one call, whatever the page holds.
 *
 * @throws TimPagingError when the cursor repeats, the pages never end, or sequences keep moving
 */
export async function pullFriends(call: FriendGetCall, opts: PullOptions): Promise<PullResult> {
  const maxPages = opts.maxPages ?? 100;
  const maxRestarts = opts.maxRestarts ?? 3;
  let calls = 0;
  let lastReason = '';
  for (let restarts = 0; restarts <= maxRestarts; restarts++) {
    try {
      const result = await pullOnce(opts, maxPages, async (req) => {
        calls++;
        return call(req);
      });
      return { ...result, calls, restarts };
    } catch (err) {
      if (!(err instanceof Restart)) throw err;
      lastReason = err.reason;
    }
  }
  throw new TimPagingError(
    `account ${JSON.stringify(opts.accountId)}: gave up after ${maxRestarts} restarts (${lastReason})`,
  );
}

async function pullOnce(
  opts: PullOptions,
  maxPages: number,
  call: FriendGetCall,
): Promise<Omit<PullResult, 'calls' | 'restarts'>> {
  const base: FriendGetRequest = { From_Account: opts.accountId, StartIndex: 0 };
  if (opts.standardSequence !== null) base.StandardSequence = opts.standardSequence;
  if (opts.customSequence !== null) base.CustomSequence = opts.customSequence;

  const items: FriendItem[] = [];
  opts.sink?.restart();
  const seenIds = new Set<string>();
  const seenCursors = new Set<number>([0]);
  // Only the first page's sequences: keeping the page would keep its decoded friends alive for the
  // whole pull, long enough to be promoted to the old generation of every pull in flight.
  let first: { standardSequence: number; customSequence: number } | undefined;
  let startIndex = 0;
  for (let pages = 1; ; pages++) {
    const page = await call({ ...base, StartIndex: startIndex });
    if (!first) {
      first = { standardSequence: page.standardSequence, customSequence: page.customSequence };
      if (page.standardSequence === opts.standardSequence && page.customSequence === opts.customSequence) {
        return {
          standardSequence: page.standardSequence,
          customSequence: page.customSequence,
          standardIncluded: false,
          customIncluded: false,
          unchanged: true,
          items: [],
        };
      }
    } else if (
      page.standardSequence !== first.standardSequence ||
      page.customSequence !== first.customSequence
    ) {
      throw new Restart('sequences changed between pages');
    }
    for (const item of page.items) {
      if (seenIds.has(item.friendId)) throw new Restart('a friend appeared twice');
      seenIds.add(item.friendId);
    }
    if (opts.sink) opts.sink.add(page.items);
    else for (const item of page.items) items.push(item);
    if (page.complete) break;
    if (pages >= maxPages) {
      throw new TimPagingError(
        `account ${JSON.stringify(opts.accountId)}: no CompleteFlag after ${maxPages} pages`,
      );
    }
    if (seenCursors.has(page.nextStartIndex)) {
      throw new TimPagingError(
        `account ${JSON.stringify(opts.accountId)}: NextStartIndex ${page.nextStartIndex} repeats, the pages would loop`,
      );
    }
    seenCursors.add(page.nextStartIndex);
    startIndex = page.nextStartIndex;
  }
  return {
    standardSequence: first.standardSequence,
    customSequence: first.customSequence,
    // A category is included when we did not send its sequence, or sent one the server no longer has.
    standardIncluded: opts.standardSequence !== first.standardSequence,
    customIncluded: opts.customSequence !== first.customSequence,
    unchanged: false,
    items,
  };
}
