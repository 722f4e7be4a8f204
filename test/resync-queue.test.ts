/**
 * The mark queue between the webhook receiver and the database, and the callback-to-sync latency
 * tracker: both pure, tested with fakes.
 */
import { describe, expect, it } from 'vitest';
import { CallbackLatency } from '../src/sync/callback-latency.js';
import { ResyncQueue } from '../src/sync/resync-queue.js';

/** A mark function whose calls the test completes (or fails) by hand. */
function manualMark() {
  const calls: { ids: string[]; resolve: () => void; reject: (e: Error) => void }[] = [];
  const mark = (ids: string[]) =>
    new Promise<void>((resolve, reject) => {
      calls.push({ ids: [...ids].sort(), resolve, reject });
    });
  return { calls, mark };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe('ResyncQueue', () => {
  it('coalesces: ids added while a write runs go together in the next one, each once', async () => {
    const { calls, mark } = manualMark();
    const q = new ResyncQueue({ mark });
    const first = q.add(['a', 'b']);
    await tick();
    expect(calls.map((c) => c.ids)).toEqual([['a', 'b']]);
    // A burst for one account while the first write runs: one pending id.
    const burst = Array.from({ length: 50 }, () => q.add(['c', 'a']));
    expect(q.pending).toBe(2);
    calls[0]!.resolve();
    expect(await first.written).toBe(true);
    await tick();
    expect(calls.map((c) => c.ids)).toEqual([
      ['a', 'b'],
      ['a', 'c'],
    ]);
    calls[1]!.resolve();
    expect(await Promise.all(burst.map((b) => b.written))).toEqual(Array(50).fill(true));
    expect(q.pending).toBe(0);
    await q.close();
  });

  it('a failed write keeps its ids and is retried with backoff; waiters resolve after the retry', async () => {
    const { calls, mark } = manualMark();
    const errors: [number, number][] = [];
    const q = new ResyncQueue({
      mark,
      retryBaseMs: 20,
      onError: (_e, pending, retryInMs) => errors.push([pending, retryInMs]),
    });
    const w = q.add(['a']);
    await tick();
    calls[0]!.reject(new Error('db down'));
    await tick();
    q.add(['b']);
    expect(errors).toEqual([[1, 20]]);
    expect(q.pending).toBe(2);
    await new Promise((r) => setTimeout(r, 40));
    expect(calls[1]!.ids).toEqual(['a', 'b']);
    calls[1]!.reject(new Error('still down'));
    await tick();
    expect(errors[1]).toEqual([2, 40]);
    await new Promise((r) => setTimeout(r, 60));
    calls[2]!.resolve();
    expect(await w.written).toBe(true);
    await q.close();
  });

  it('drops ids beyond maxPending and says how many', async () => {
    const { calls, mark } = manualMark();
    const q = new ResyncQueue({ mark, maxPending: 3 });
    q.add(['a']);
    await tick();
    // 'a' is being written; three more fit, the fourth does not.
    expect(q.add(['b', 'c', 'd', 'e']).dropped).toBe(1);
    expect(q.add(['b']).dropped).toBe(0);
    calls[0]!.resolve();
    await tick();
    expect(calls[1]!.ids).toEqual(['b', 'c', 'd']);
    calls[1]!.resolve();
    await q.close();
  });

  it('every add between two writes shares one promise, so a burst costs no memory per callback', () => {
    const { mark } = manualMark();
    const q = new ResyncQueue({ mark });
    q.add(['a']);
    const adds = Array.from({ length: 1_000 }, () => q.add(['a']).written);
    expect(new Set(adds).size).toBe(1);
  });

  it('close(): writes what is pending once more, then takes nothing', async () => {
    const { calls, mark } = manualMark();
    const q = new ResyncQueue({ mark });
    const a = q.add(['a']);
    await tick();
    const b = q.add(['b']);
    const closing = q.close();
    calls[0]!.resolve();
    await tick();
    expect(calls.map((c) => c.ids)).toEqual([['a'], ['b']]);
    calls[1]!.resolve();
    await closing;
    expect(await a.written).toBe(true);
    expect(await b.written).toBe(true);
    expect(q.add(['c'])).toMatchObject({ dropped: 1 });
    expect(calls).toHaveLength(2);
  });

  it('close(): when the last try fails too, its adds get false and nothing is retried', async () => {
    const { calls, mark } = manualMark();
    const q = new ResyncQueue({ mark });
    const a = q.add(['a']);
    const closing = q.close();
    await tick();
    // The write in progress fails; closing tries once more, and that fails too.
    calls[0]!.reject(new Error('database down'));
    await tick();
    calls[1]!.reject(new Error('database down'));
    await closing;
    expect(await a.written).toBe(false);
    await new Promise((r) => setTimeout(r, 400));
    expect(calls).toHaveLength(2);
  });
});

describe('CallbackLatency', () => {
  it('matches a callback with the next sync that started after it, not one already running', () => {
    let now = 0;
    const t = new CallbackLatency({ now: () => now });
    now = 1_000;
    t.received(['a', 'b']);
    // A sync of 'a' that started before the callback does not count.
    expect(t.synced('a', 900, 1_100)).toEqual([]);
    expect(t.synced('a', 1_200, 1_700)).toEqual([0.7]);
    expect(t.synced('a', 2_000, 2_100)).toEqual([]);
    // A burst: every callback before the sync's start is covered; one during it waits for the next.
    now = 3_000;
    t.received(['b']);
    now = 3_500;
    t.received(['b']);
    expect(t.synced('b', 3_200, 3_600)).toEqual([2.6, 0.6]);
    expect(t.synced('b', 3_600, 3_900)).toEqual([0.4]);
    expect(t.tracked).toBe(0);
  });

  it('forgets the oldest accounts beyond maxAccounts and receipts older than maxAgeMs', () => {
    let now = 0;
    const t = new CallbackLatency({ now: () => now, maxAccounts: 2, maxAgeMs: 10_000 });
    t.received(['a']);
    t.received(['b']);
    t.received(['c']);
    expect(t.tracked).toBe(2);
    expect(t.synced('a', 1, 2)).toEqual([]);
    now = 20_000;
    t.received(['d']);
    expect(t.tracked).toBe(1);
  });
});
