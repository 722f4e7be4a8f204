/**
 * The limiter's guarantee: at most `limit` call starts in any one-second window, with room for
 * `jitterMs` of arrival jitter, whatever the callers do and however late its timers fire, and a call
 * never starts after its signal aborted. Its answer to "too frequent": a complaint alone keeps the
 * rate, a run of them cuts it, and the rate is back within about 2 s of the last.
 */
import { describe, expect, it, vi } from 'vitest';
import { maxInWindow } from '../src/simulator/index.js';
import { CallLimiter, COMPLAINT_RUN_MS, type RateComplaint } from '../src/sync/limiter.js';
import { limitedCall, USERSIG_LOCKOUT_MS } from '../src/sync/pass.js';
import { isRetryable, withRetries } from '../src/sync/retry.js';
import { TimApiError, TimDecodeError } from '../src/tim/errors.js';

/**
 * Callers that keep `limiter` busy, as a pass's accounts in flight do: `n` loops, each making calls
 * back to back. `starts` are the calls' start times (Date.now: fake timers drive it).
 */
function keepBusy(limiter: CallLimiter, n: number) {
  const starts: number[] = [];
  let stopped = false;
  // Settled from the start: stop() rejects the calls still waiting.
  const loops = Promise.allSettled(
    Array.from({ length: n }, async () => {
      while (!stopped) await limiter.schedule(async () => void starts.push(Date.now()));
    }),
  );
  return {
    starts,
    stop: async () => {
      stopped = true;
      const stopping = limiter.stop();
      if (vi.isFakeTimers()) await vi.advanceTimersByTimeAsync(100);
      await stopping;
      await loops;
    },
  };
}

/** Calls started in [from, to). */
const between = (starts: number[], from: number, to: number) =>
  starts.filter((t) => t >= from && t < to).length;

/** A fixed pseudo-random sequence in [0, 1), so a failure can be replayed. */
function seeded(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 48_271) % 2_147_483_647;
    return x / 2_147_483_647;
  };
}

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
    // And the pacing itself: grants (≈ starts, give or take a millisecond) never crowd a 1,029 ms window.
    expect(maxInWindow(starts, 1029)).toBeLessThanOrEqual(60);
  });

  it("a raise applies at once to calls already waiting (a replica taking a gone one's share; fake timers)", async () => {
    vi.useFakeTimers();
    try {
      const limiter = new CallLimiter({ ratePerSecond: 66, jitterMs: 20 });
      // A replica's accounts in flight, each waiting for its call: 64 of them, refilled as they go.
      const busy = keepBusy(limiter, 64);
      await vi.advanceTimersByTimeAsync(1_500);
      const raisedAt = Date.now();
      limiter.setRate(100);
      await vi.advanceTimersByTimeAsync(1_000);
      await busy.stop();
      // At the new pace from the moment of the raise, not after the calls waiting have gone at the old one.
      expect(between(busy.starts, raisedAt, raisedAt + 1_000)).toBeGreaterThanOrEqual(90);
      expect(maxInWindow(busy.starts, 1020)).toBeLessThanOrEqual(100);
    } finally {
      vi.useRealTimers();
    }
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

describe('CallLimiter under late timers (fake timers)', () => {
  // 20/s: bottleneck times one slot ahead; 100/s: two (see the module comment).
  it.each([20, 100])(
    'never lets L+1 starts into one second when timers fire late: late slots followed by on-time ones (%i/s)',
    async (rate) => {
      vi.useFakeTimers();
      try {
        const limiter = new CallLimiter({ ratePerSecond: rate, jitterMs: 0 });
        const busy = keepBusy(limiter, 8);
        const random = seeded(7);
        for (let t = 0; t < 30_000; t += 10) {
          await vi.advanceTimersByTimeAsync(10);
          // Now and then the event loop is blocked for up to three slots: the clock moves on and the
          // timers due meanwhile fire late (fake timers keep them due at the same distance).
          if (random() < 0.03) vi.setSystemTime(Date.now() + random() * 150);
        }
        await busy.stop();
        expect(busy.starts.length).toBeGreaterThan(rate * 20);
        expect(maxInWindow(busy.starts, 1000)).toBeLessThanOrEqual(rate);
      } finally {
        vi.useRealTimers();
      }
    },
  );
});

describe('CallLimiter reactions', () => {
  it('takes one "too frequent" alone for a timing slip: the rate stays full (the 0.55 pass)', async () => {
    vi.useFakeTimers();
    try {
      const limiter = new CallLimiter({ ratePerSecond: 200, jitterMs: 20 });
      const busy = keepBusy(limiter, 64);
      await vi.advanceTimersByTimeAsync(3_000);
      const at = Date.now();
      // The calls in flight hear it together: one complaint.
      for (let i = 0; i < 5; i++) limiter.slowDown();
      expect(limiter.rate).toBe(200);
      await vi.advanceTimersByTimeAsync(2_000);
      const before = between(busy.starts, at - 2_000, at);
      const after = between(busy.starts, at, at + 2_000);
      await busy.stop();
      // It cost at most a few calls over the two seconds after it (it once cost half the rate
      // until the end of the pass).
      expect(before).toBeGreaterThan(370);
      expect(after).toBeGreaterThanOrEqual(before - 4);
      expect(limiter.complaints).toEqual({ slips: 1, slowDowns: 0 });
    } finally {
      vi.useRealTimers();
    }
  });

  it('cuts the rate for a run of complaints, down to a quarter, and is back in full within about 2 s of the last', async () => {
    vi.useFakeTimers();
    try {
      const complaints: RateComplaint[] = [];
      const limiter = new CallLimiter({
        ratePerSecond: 200,
        jitterMs: 20,
        onComplaint: (c) => complaints.push(c),
      });
      const busy = keepBusy(limiter, 64);
      await vi.advanceTimersByTimeAsync(1_000);
      limiter.slowDown(); // a slip
      expect(limiter.rate).toBe(200);
      await vi.advanceTimersByTimeAsync(1_500);
      limiter.slowDown(); // another one soon after: a run
      expect(limiter.rate).toBe(100);
      await vi.advanceTimersByTimeAsync(1_100);
      // Refused still, more than a window after the cut: it was not enough.
      limiter.slowDown();
      expect(limiter.rate).toBe(50);
      await vi.advanceTimersByTimeAsync(1_100);
      limiter.slowDown();
      expect(limiter.rate).toBe(50);
      const last = Date.now();
      // At the cut rate until the refusals of the calls made before it are over...
      expect(between(busy.starts, last - 1_000, last)).toBeLessThanOrEqual(52);
      await vi.advanceTimersByTimeAsync(2_100);
      // ...then back in full, and pacing at it.
      expect(limiter.rate).toBe(200);
      expect(limiter.slowdownFactor).toBe(1);
      await vi.advanceTimersByTimeAsync(1_000);
      expect(between(busy.starts, last + 2_100, last + 3_100)).toBeGreaterThan(185);
      await busy.stop();
      expect(limiter.complaints).toEqual({ slips: 1, slowDowns: 3 });
      expect(complaints.map((c) => [c.verdict, c.rate])).toEqual([
        ['slip', 200],
        ['slowdown', 100],
        ['slowdown', 50],
        ['slowdown', 50],
      ]);
      // Long after, a complaint alone is a slip again.
      await vi.advanceTimersByTimeAsync(COMPLAINT_RUN_MS);
      limiter.slowDown();
      expect(limiter.complaints).toEqual({ slips: 2, slowDowns: 3 });
    } finally {
      vi.useRealTimers();
    }
  });

  it('a small share slowed down keeps 1 call a second rather than stopping', async () => {
    vi.useFakeTimers();
    try {
      const limiter = new CallLimiter({ ratePerSecond: 3 });
      limiter.slowDown();
      await vi.advanceTimersByTimeAsync(1_100);
      limiter.slowDown();
      expect(limiter.rate).toBe(1);
      limiter.setRate(0);
      expect(limiter.rate).toBe(0);
      await limiter.stop();
    } finally {
      vi.useRealTimers();
    }
  });

  it('holds the calls waiting at rate 0, and a raise paces them at the new rate at once (fake timers)', async () => {
    vi.useFakeTimers();
    try {
      const limiter = new CallLimiter({ ratePerSecond: 2, jitterMs: 0 });
      const busy = keepBusy(limiter, 16);
      await vi.advanceTimersByTimeAsync(3_000);
      limiter.setRate(0);
      const held = Date.now();
      await vi.advanceTimersByTimeAsync(5_000);
      // A slot timed before rate 0 is put back, not used.
      expect(between(busy.starts, held + 1, held + 5_000)).toBe(0);
      expect(limiter.queued()).toBe(16);
      limiter.setRate(100);
      const raised = Date.now();
      await vi.advanceTimersByTimeAsync(1_000);
      expect(between(busy.starts, raised, raised + 1_000)).toBeGreaterThan(90);
      await busy.stop();
      expect(maxInWindow(busy.starts, 1000)).toBeLessThanOrEqual(100);
    } finally {
      vi.useRealTimers();
    }
  });

  it('pauses every call for the lockout period', async () => {
    vi.useFakeTimers();
    try {
      const limiter = new CallLimiter({ ratePerSecond: 100 });
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
  it('tells the whole limiter about 60007 and pauses it on 70050, retrying the call', async () => {
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
    // One 60007 alone: a slip, counted, the rate kept.
    expect(limiter.complaints).toEqual({ slips: 1, slowDowns: 0 });
    expect(limiter.slowdownFactor).toBe(1);

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
