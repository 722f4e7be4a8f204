/**
 * The page loop against scripted servers that misbehave in ways the simulator does not: repeated
 * cursors, endless pages, duplicates without a sequence change.
 */
import { describe, expect, it } from 'vitest';
import { TimPagingError } from '../src/tim/errors.js';
import type { FriendGetPage, FriendGetRequest } from '../src/tim/friend-get.js';
import { pullFriends } from '../src/tim/friend-pull.js';

const page = (p: Partial<FriendGetPage> & { ids?: string[] }): FriendGetPage => ({
  items: (p.ids ?? []).map((friendId) => ({ friendId, values: [] })),
  standardSequence: p.standardSequence ?? 5,
  customSequence: p.customSequence ?? 7,
  friendNum: undefined,
  complete: p.complete ?? false,
  nextStartIndex: p.nextStartIndex ?? 0,
});

/** A server answering from a script, recording what it was asked. */
function scripted(pages: FriendGetPage[] | ((req: FriendGetRequest, n: number) => FriendGetPage)) {
  const requests: FriendGetRequest[] = [];
  const call = async (req: FriendGetRequest) => {
    requests.push(req);
    const n = requests.length - 1;
    const p = typeof pages === 'function' ? pages(req, n) : pages[n];
    if (!p) throw new Error('script ran out');
    return p;
  };
  return { call, requests };
}

describe('pullFriends', () => {
  it('sends the STORED sequences on every page, never the ones a page returned', async () => {
    const s = scripted([
      page({ ids: ['a'], nextStartIndex: 91, standardSequence: 6 }),
      page({ ids: ['b'], complete: true, standardSequence: 6 }),
    ]);
    const r = await pullFriends(s.call, { accountId: 'x', standardSequence: 5, customSequence: 7 });
    expect(s.requests.map((q) => [q.StartIndex, q.StandardSequence, q.CustomSequence])).toEqual([
      [0, 5, 7],
      [91, 5, 7],
    ]);
    expect(r).toMatchObject({ standardIncluded: true, customIncluded: false, unchanged: false, calls: 2 });
  });

  it('stops after one call when both sequences are unchanged, whatever the page says next', async () => {
    const s = scripted([page({ ids: ['a', 'b'], nextStartIndex: 3 })]);
    const r = await pullFriends(s.call, { accountId: 'x', standardSequence: 5, customSequence: 7 });
    expect(r).toMatchObject({ unchanged: true, calls: 1, items: [] });
  });

  it('omits sequences it does not have, and counts both categories as included', async () => {
    const s = scripted([page({ ids: ['a'], complete: true })]);
    const r = await pullFriends(s.call, { accountId: 'x', standardSequence: null, customSequence: null });
    expect(s.requests[0]).toEqual({ From_Account: 'x', StartIndex: 0 });
    expect(r).toMatchObject({ standardIncluded: true, customIncluded: true });
  });

  it('hands a sink each page as it comes, and a fresh start on every restart', async () => {
    // Attempt 1: page 2 moved the sequence, so it is not handed over. Attempt 2 completes.
    const s = scripted([
      page({ ids: ['a', 'b'], nextStartIndex: 9 }),
      page({ ids: ['c'], standardSequence: 6, complete: true }),
      page({ ids: ['a', 'b'], standardSequence: 6, nextStartIndex: 9 }),
      page({ ids: ['c', 'd'], standardSequence: 6, complete: true }),
    ]);
    const log: string[] = [];
    const sink = {
      restart: () => log.push('restart'),
      add: (items: readonly { friendId: string }[]) => log.push(items.map((i) => i.friendId).join(',')),
    };
    const r = await pullFriends(s.call, { accountId: 'x', standardSequence: 1, customSequence: 7, sink });
    expect(log).toEqual(['restart', 'a,b', 'restart', 'a,b', 'c,d']);
    expect(r).toMatchObject({ restarts: 1, calls: 4, items: [], standardSequence: 6 });
  });

  it('restarts when sequences move between pages, then gives up with a reason', async () => {
    const s = scripted((_req, n) =>
      page({ ids: [`f${n}`], nextStartIndex: n + 100, standardSequence: 10 + n }),
    );
    await expect(
      pullFriends(s.call, { accountId: 'x', standardSequence: 1, customSequence: 7, maxRestarts: 2 }),
    ).rejects.toThrow(/gave up after 2 restarts \(sequences changed between pages\)/);
    expect(s.requests.filter((q) => q.StartIndex === 0)).toHaveLength(3);
  });

  it('restarts on a friend listed twice (a shift the sequences did not show), then fails', async () => {
    const s = scripted((req) =>
      req.StartIndex === 0
        ? page({ ids: ['a', 'b'], nextStartIndex: 50 })
        : page({ ids: ['b', 'c'], complete: true }),
    );
    const err = await pullFriends(s.call, { accountId: 'x', standardSequence: 1, customSequence: 1 }).catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(TimPagingError);
    expect(String(err.message)).toContain('a friend appeared twice');
  });

  it('refuses a cursor that repeats, and one that goes back to 0', async () => {
    const loop = scripted((req) =>
      page({ ids: [`f${req.StartIndex}`], nextStartIndex: req.StartIndex === 0 ? 7 : 7 }),
    );
    await expect(
      pullFriends(loop.call, { accountId: 'x', standardSequence: 1, customSequence: 1 }),
    ).rejects.toThrow(/NextStartIndex 7 repeats/);
    const zero = scripted([page({ ids: ['a'], nextStartIndex: 0 })]);
    await expect(
      pullFriends(zero.call, { accountId: 'x', standardSequence: 1, customSequence: 1 }),
    ).rejects.toThrow(TimPagingError);
  });

  it('refuses a pull that never completes', async () => {
    const s = scripted((_req, n) => page({ ids: [`f${n}`], nextStartIndex: n + 1 }));
    await expect(
      pullFriends(s.call, { accountId: 'x', standardSequence: 1, customSequence: 1, maxPages: 12 }),
    ).rejects.toThrow(/no CompleteFlag after 12 pages/);
    expect(s.requests).toHaveLength(12);
  });
});
