/**
 * Waiters on one shared signal cost it one `abort` listener, not one each, and none once they are
 * done: Node warns past 10 listeners on an AbortSignal.
 */
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { onAbort } from '../src/abort-listeners.js';
import { sleep } from '../src/sync/limiter.js';

const listeners = (s: AbortSignal) => getEventListeners(s, 'abort').length;

describe('onAbort', () => {
  it('adds one listener for any number of waiters and removes it when the last one leaves', () => {
    const ac = new AbortController();
    const cancels = Array.from({ length: 50 }, () => onAbort(ac.signal, () => {}));
    expect(listeners(ac.signal)).toBe(1);
    for (const c of cancels.slice(0, 49)) c();
    expect(listeners(ac.signal)).toBe(1);
    cancels[49]!();
    cancels[49]!();
    expect(listeners(ac.signal)).toBe(0);
    // A new waiter after that gets a listener again.
    const fired: number[] = [];
    onAbort(ac.signal, () => fired.push(1));
    onAbort(ac.signal, () => fired.push(2));
    expect(listeners(ac.signal)).toBe(1);
    ac.abort();
    expect(fired).toEqual([1, 2]);
    expect(listeners(ac.signal)).toBe(0);
  });

  it('calls only the waiters still registered when the signal aborts', () => {
    const ac = new AbortController();
    const fired: string[] = [];
    const cb = () => fired.push('shared');
    const a = onAbort(ac.signal, cb);
    onAbort(ac.signal, cb);
    onAbort(ac.signal, () => fired.push('other'));
    a();
    ac.abort();
    expect(fired).toEqual(['shared', 'other']);
  });
});

describe('sleep on a shared signal', () => {
  it('many concurrent sleeps hold one listener; none are left once they end', async () => {
    const ac = new AbortController();
    const sleeps = Array.from({ length: 40 }, (_, i) => sleep(5 + (i % 5), ac.signal));
    expect(listeners(ac.signal)).toBe(1);
    await Promise.all(sleeps);
    expect(listeners(ac.signal)).toBe(0);
  });

  it('an abort rejects every sleep with the reason', async () => {
    const ac = new AbortController();
    const sleeps = Array.from({ length: 20 }, () => sleep(60_000, ac.signal));
    const reason = new Error('stop');
    ac.abort(reason);
    for (const s of sleeps) await expect(s).rejects.toBe(reason);
    expect(listeners(ac.signal)).toBe(0);
  });
});
