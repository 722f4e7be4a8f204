/**
 * The limiter's guarantee: at most `limit` call starts in any one-second window, with room for
 * `jitterMs` of arrival jitter, whatever the callers do, and a call never starts after its signal aborted.
 */
import { describe, expect, it, vi } from 'vitest';
import { maxInWindow } from '../src/simulator/index.js';
import { CallLimiter, SlidingWindow } from '../src/sync/limiter.js';
import { limitedCall, USERSIG_LOCKOUT_MS } from '../src/sync/pass.js';
import { isRetryable, withRetries } from '../src/sync/retry.js';
import { TimApiError, TimDecodeError } from '../src/tim/errors.js';

describe('CallLimiter', () => {
  it('never starts more than the limit in any 1 s + jitter window, with bursts and chains of callers', async () => {
    const limiter = new CallLimiter({ ratePerSecond: 60, jitterMs: 30 });
    const starts: number[] = [];
    const call = () =>
      limiter.schedule(async () => {
        starts.push(performance.now());
        await new Promise((r) => setTimeout(r, Math.random() * 15));
      });
    // A burst of 80 at once, plus 10 callers that each make 6 calls back to back.
    await Promise.all([
      ...Array.from({ length: 80 }, call),
      ...Array.from({ length: 10 }, async () => {
        for (let i = 0; i < 6; i++) await call();
      }),
    ]);
    await limiter.stop();
    expect(starts).toHaveLength(140);
    // The contract: no one-second window of call starts holds more than the limit, even though each
    // start lags its grant by a little (the allowance covers up to 30 ms of such lag).
    expect(maxInWindow(starts, 1000)).toBeLessThanOrEqual(60);
    // And the guard itself: grants (≈ starts, give or take a millisecond) never crowd a 1,029 ms window.
    expect(maxInWindow(starts, 1029)).toBeLessThanOrEqual(60);
  });

  it("a raise applies at once to calls already waiting (a replica taking a gone one's share)", async () => {
    const limiter = new CallLimiter({ ratePerSecond: 66, jitterMs: 20 });
    const starts: number[] = [];
    // A replica's accounts in flight, each waiting for its call: 64 of them, refilled as they go.
    let stop = false;
    const caller = async () => {
      while (!stop) await limiter.schedule(async () => void starts.push(performance.now()));
    };
    // Settled from the start: stop() rejects the calls still waiting, and a caller that rejects
    // before anything handles it is an unhandled rejection.
    const callers = Promise.allSettled(Array.from({ length: 64 }, caller));
    await new Promise((r) => setTimeout(r, 1_500));
    const raisedAt = performance.now();
    limiter.setRate(100);
    await new Promise((r) => setTimeout(r, 1_000));
    stop = true;
    await limiter.stop();
    await callers;
    const inFirstSecond = starts.filter((t) => t >= raisedAt && t < raisedAt + 1_000).length;
    // At the new pace (100 per 1.02 s) from the moment of the raise, not after the old queue drained.
    expect(inFirstSecond).toBeGreaterThanOrEqual(90);
    expect(maxInWindow(starts, 1020)).toBeLessThanOrEqual(100);
  });

  it('does not run a call whose signal aborted while it waited', async () => {
    const limiter = new CallLimiter({ ratePerSecond: 2, jitterMs: 0 });
    const ran: number[] = [];
    const ac = new AbortController();
    const calls = [0, 1, 2, 3].map((i) =>
      limiter.schedule(async () => {
        ran.push(i);
      }, ac.signal),
    );
    setTimeout(() => ac.abort(new Error('stop')), 50);
    const results = await Promise.allSettled(calls);
    await limiter.stop();
    expect(ran.length).toBeLessThan(4);
    expect(results.filter((r) => r.status === 'rejected').length).toBe(4 - ran.length);
  });
});

describe('CallLimiter.queued', () => {
  it('counts every call waiting for its slot, not only those bottleneck has not timed yet', async () => {
    const limiter = new CallLimiter({ ratePerSecond: 20, jitterMs: 0 });
    let ran = 0;
    const calls = Array.from({ length: 10 }, () =>
      limiter.schedule(async () => {
        ran++;
      }),
    );
    await new Promise((r) => setTimeout(r, 20));
    // 20/s is one call per 50 ms: after 20 ms one or two have run and the rest are waiting.
    expect(ran).toBeLessThanOrEqual(2);
    expect(limiter.queued()).toBe(10 - ran);
    limiter.setRate(0);
    await new Promise((r) => setTimeout(r, 20));
    expect(limiter.queued()).toBe(10 - ran);
    limiter.setRate(1000);
    await Promise.all(calls);
    expect(limiter.queued()).toBe(0);
    await limiter.stop();
  });
});

describe('SlidingWindow', () => {
  it('spaces grants on a schedule and waits for the oldest to leave the window (fake timers)', async () => {
    vi.useFakeTimers();
    try {
      const t0 = Date.now();
      const w = new SlidingWindow(3, 900, () => Date.now());
      const grantedAt: number[] = [];
      const all = Promise.all(
        [1, 2, 3, 4].map(() => w.acquire().then(() => grantedAt.push(Date.now() - t0))),
      );
      await vi.advanceTimersByTimeAsync(2_000);
      await all;
      // One slot of catch-up is allowed (so late timers cost no rate), then 900/3 = 300 ms apart;
      // the fourth waits until the first has left the 900 ms window.
      expect(grantedAt).toEqual([0, 0, 300, 900]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('holds every grant while the limit is 0 and releases them when it is raised', async () => {
    const w = new SlidingWindow(0, 1000, () => performance.now());
    let granted = 0;
    const all = Promise.all([w.acquire(), w.acquire()]).then(() => {
      granted = 2;
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(granted).toBe(0);
    w.setLimit(100);
    await all;
    expect(granted).toBe(2);
  });
});

describe('withRetries', () => {
  it('retries transient errors with backoff, and not the others', async () => {
    let n = 0;
    const delays: number[] = [];
    const result = await withRetries(
      async () => {
        if (++n < 3) throw new TimApiError(30006, 'internal');
        return 'ok';
      },
      { baseDelayMs: 1, maxDelayMs: 4, random: () => 0.99, onRetry: (_e, _a, d) => delays.push(d) },
    );
    expect(result).toBe('ok');
    expect(delays).toEqual([0, 1]);

    let m = 0;
    await expect(
      withRetries(
        async () => {
          m++;
          throw new TimApiError(30004, 'not admin');
        },
        { baseDelayMs: 1 },
      ),
    ).rejects.toMatchObject({ errorCode: 30004 });
    expect(m).toBe(1);
    expect(isRetryable(new TimDecodeError('x'))).toBe(true);
    expect(isRetryable(new Error('x'))).toBe(false);
  });

  it('gives up after the configured attempts', async () => {
    let n = 0;
    await expect(
      withRetries(
        async () => {
          n++;
          throw new TimApiError(70169, 'timeout');
        },
        { attempts: 3, baseDelayMs: 1 },
      ),
    ).rejects.toBeInstanceOf(TimApiError);
    expect(n).toBe(3);
  });
});

describe('CallLimiter reactions', () => {
  it('halves its rate when Tencent says "too frequent", once per burst, down to a quarter, and recovers', async () => {
    vi.useFakeTimers();
    try {
      const limiter = new CallLimiter({ ratePerSecond: 100, now: () => Date.now() });
      // The calls in flight hear it together: one complaint.
      for (let i = 0; i < 5; i++) limiter.slowDown(10_000);
      expect(limiter.rate).toBe(50);
      await vi.advanceTimersByTimeAsync(1_100);
      limiter.slowDown(10_000);
      expect(limiter.rate).toBe(25);
      await vi.advanceTimersByTimeAsync(1_100);
      limiter.slowDown(10_000);
      expect(limiter.rate).toBe(25);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(limiter.rate).toBe(50);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(limiter.rate).toBe(100);
      await limiter.stop();
    } finally {
      vi.useRealTimers();
    }
  });

  it('a small share slowed down keeps 1 call a second rather than stopping', async () => {
    vi.useFakeTimers();
    try {
      const limiter = new CallLimiter({ ratePerSecond: 3, now: () => Date.now() });
      limiter.slowDown(10_000);
      await vi.advanceTimersByTimeAsync(1_100);
      limiter.slowDown(10_000);
      expect(limiter.rate).toBe(1);
      limiter.setRate(0);
      expect(limiter.rate).toBe(0);
      await limiter.stop();
    } finally {
      vi.useRealTimers();
    }
  });

  it('pauses every call for the lockout period', async () => {
    vi.useFakeTimers();
    try {
      const limiter = new CallLimiter({ ratePerSecond: 100, now: () => Date.now() });
      limiter.pause(60_000);
      let ran = false;
      const call = limiter.schedule(async () => {
        ran = true;
      });
      await vi.advanceTimersByTimeAsync(59_000);
      expect(ran).toBe(false);
      expect(limiter.rate).toBe(0);
      await vi.advanceTimersByTimeAsync(2_000);
      await call;
      expect(ran).toBe(true);
      await limiter.stop();
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('limitedCall', () => {
  it('slows the whole limiter on 60007 and pauses it on 70050, retrying the call', async () => {
    const limiter = new CallLimiter({ ratePerSecond: 1000 });
    const errors = [new TimApiError(60007, 'too frequent')];
    let calls = 0;
    const client = {
      friendGet: async () => {
        calls++;
        const e = errors.shift();
        if (e) throw e;
        return {
          items: [],
          standardSequence: 1,
          customSequence: 1,
          friendNum: 0,
          complete: true,
          nextStartIndex: 0,
        };
      },
    };
    const call = limitedCall(
      { client, limiter, retry: { baseDelayMs: 1, maxDelayMs: 2 } },
      new AbortController().signal,
    );
    const page = await call({ From_Account: 'a', StartIndex: 0 });
    expect(page.complete).toBe(true);
    expect(calls).toBe(2);
    expect(limiter.slowdownFactor).toBe(0.5);

    const paused: number[] = [];
    const spy = vi.spyOn(limiter, 'pause').mockImplementation((ms) => {
      paused.push(ms);
    });
    errors.push(new TimApiError(70050, 'too many failed checks'));
    await call({ From_Account: 'a', StartIndex: 0 });
    expect(paused).toEqual([USERSIG_LOCKOUT_MS]);
    expect(USERSIG_LOCKOUT_MS).toBeGreaterThanOrEqual(60_000);
    spy.mockRestore();
    await limiter.stop();
  });
});
