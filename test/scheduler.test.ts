/**
 * The scheduler loop and the budget-sharing rules, with fakes: no database, no HTTP.
 */
import { describe, expect, it, vi } from 'vitest';
import type { AccountSyncState } from '../src/db/accounts.js';
import type { ReplicaView } from '../src/db/replicas.js';
import { type AccountSyncOutcome, callTrouble, mustStopPass } from '../src/sync/account-sync.js';
import { decideShare, ReplicaBudget } from '../src/sync/budget.js';
import { sleep } from '../src/sync/limiter.js';
import { type PauseInfo, Scheduler } from '../src/sync/scheduler.js';
import { TimApiError, TimHttpError, TimNetworkError, TimTimeoutError } from '../src/tim/errors.js';

const state = (id: string): AccountSyncState => ({
  accountId: id,
  standardSequence: null,
  customSequence: null,
  status: 'pending',
});
const outcome = (id: string): AccountSyncOutcome => ({
  accountId: id,
  result: 'changed',
  calls: 1,
  friendsWritten: 0,
  tagsWritten: 0,
  durationMs: 1,
});

describe('Scheduler', () => {
  it('keeps at most `concurrency` accounts in flight and syncs every claimed account once', async () => {
    vi.useFakeTimers();
    try {
      const queue = Array.from({ length: 50 }, (_, i) => `a${i}`);
      const synced: string[] = [];
      let inFlight = 0;
      let peak = 0;
      const claims: number[] = [];
      const stop = new AbortController();
      const s = new Scheduler({
        concurrency: 4,
        idleMs: 1_000,
        sleep,
        claim: async (n) => {
          claims.push(n);
          return queue.splice(0, n).map(state);
        },
        syncOne: async (st) => {
          inFlight++;
          peak = Math.max(peak, inFlight);
          await sleep(100, new AbortController().signal);
          inFlight--;
          synced.push(st.accountId);
          if (synced.length === 50) stop.abort();
          return outcome(st.accountId);
        },
      });
      const run = s.run(stop.signal, new AbortController().signal);
      await vi.advanceTimersByTimeAsync(5_000);
      await run;
      expect(peak).toBe(4);
      expect(synced.sort()).toEqual(Array.from({ length: 50 }, (_, i) => `a${i}`).sort());
      expect(Math.max(...claims)).toBeLessThanOrEqual(4);
    } finally {
      vi.useRealTimers();
    }
  });

  it('sleeps idleMs when nothing is due, and wake() ends the sleep at once', async () => {
    vi.useFakeTimers();
    try {
      let claims = 0;
      const stop = new AbortController();
      const s = new Scheduler({
        concurrency: 2,
        idleMs: 10_000,
        sleep,
        claim: async () => {
          claims++;
          return [];
        },
        syncOne: async (st) => outcome(st.accountId),
      });
      const run = s.run(stop.signal, new AbortController().signal);
      await vi.advanceTimersByTimeAsync(25_000);
      expect(claims).toBe(3); // at 0, 10 s and 20 s: no tight polling
      s.wake();
      await vi.advanceTimersByTimeAsync(0);
      expect(claims).toBe(4);
      stop.abort();
      await run;
    } finally {
      vi.useRealTimers();
    }
  });

  it('backs off when claiming fails and recovers', async () => {
    vi.useFakeTimers();
    try {
      let calls = 0;
      const backoffs: number[] = [];
      const stop = new AbortController();
      const s = new Scheduler({
        concurrency: 1,
        idleMs: 1_000,
        sleep,
        claim: async () => {
          calls++;
          if (calls <= 3) throw new Error('connection refused');
          stop.abort();
          return [];
        },
        syncOne: async (st) => outcome(st.accountId),
        onClaimError: (_e, ms) => backoffs.push(ms),
      });
      const run = s.run(stop.signal, new AbortController().signal);
      await vi.advanceTimersByTimeAsync(10_000);
      await run;
      expect(backoffs).toEqual([500, 1_000, 2_000]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('stops claiming after a fatal error, letting accounts in flight finish', async () => {
    vi.useFakeTimers();
    try {
      const queue = ['a', 'b', 'c', 'd', 'e', 'f'];
      const finished: string[] = [];
      const s = new Scheduler({
        concurrency: 2,
        idleMs: 1_000,
        sleep,
        claim: async (n) => queue.splice(0, n).map(state),
        syncOne: async (st) => {
          if (st.accountId === 'a') throw new TimApiError(30004, 'not an admin');
          await sleep(50, new AbortController().signal);
          finished.push(st.accountId);
          return outcome(st.accountId);
        },
        isFatal: (e) => e instanceof TimApiError && e.retryClass === 'fatal-config',
      });
      const run = s.run(new AbortController().signal, new AbortController().signal);
      await vi.advanceTimersByTimeAsync(1_000);
      await run;
      expect(s.fatalError).toBeInstanceOf(TimApiError);
      expect(finished).toEqual(['b']);
      expect(queue).toEqual(['c', 'd', 'e', 'f']);
    } finally {
      vi.useRealTimers();
    }
  });

  it('on stop, finishes the accounts in flight before returning', async () => {
    vi.useFakeTimers();
    try {
      const stop = new AbortController();
      const done: string[] = [];
      const s = new Scheduler({
        concurrency: 3,
        idleMs: 1_000,
        sleep,
        claim: async (n) => Array.from({ length: n }, (_, i) => state(`x${i}`)),
        syncOne: async (st) => {
          await sleep(2_000, new AbortController().signal);
          done.push(st.accountId);
          return outcome(st.accountId);
        },
      });
      const run = s.run(stop.signal, new AbortController().signal);
      await vi.advanceTimersByTimeAsync(10);
      stop.abort();
      let returned = false;
      void run.then(() => {
        returned = true;
      });
      await vi.advanceTimersByTimeAsync(1_000);
      expect(returned).toBe(false);
      await vi.advanceTimersByTimeAsync(1_500);
      expect(returned).toBe(true);
      expect(done).toHaveLength(3);
    } finally {
      vi.useRealTimers();
    }
  });
});

const view = (replicaId: string, peers: number, settledMs: number): ReplicaView => ({
  replicaId,
  peers,
  settledMs,
});

describe('decideShare', () => {
  it('splits the limit, remainder to the first ids, once everyone agrees for settleMs', () => {
    const live = [view('a', 3, 9_000), view('b', 3, 9_000), view('c', 3, 9_000)];
    const shares = ['a', 'b', 'c'].map(
      (me) => decideShare({ me, live, limit: 200, settleMs: 5_000, current: 0 }).rate,
    );
    expect(shares).toEqual([67, 67, 66]);
    expect(shares.reduce((x, y) => x + y)).toBe(200);
  });

  it('a newcomer waits (0) until everyone reports the new count for settleMs; others lower at once', () => {
    const live = [view('a', 2, 60_000), view('b', 2, 60_000), view('c', 3, 0)];
    expect(decideShare({ me: 'c', live, limit: 200, settleMs: 5_000, current: undefined }).rate).toBe(0);
    // a still runs at 100 but sees 3 replicas: lowers to its new share without waiting.
    expect(decideShare({ me: 'a', live, limit: 200, settleMs: 5_000, current: 100 })).toEqual({
      rate: 67,
      peers: 3,
    });
  });

  it('raises only after the count has been agreed for settleMs (a replica died, or the table was emptied)', () => {
    const justNow = [view('a', 2, 100), view('b', 2, 100)];
    expect(decideShare({ me: 'a', live: justNow, limit: 200, settleMs: 5_000, current: 67 }).rate).toBe(67);
    const later = [view('a', 2, 6_000), view('b', 2, 6_000)];
    expect(decideShare({ me: 'a', live: later, limit: 200, settleMs: 5_000, current: 67 }).rate).toBe(100);
    // After a flush, a replica briefly sees only itself: it must not take the whole budget.
    const alone = [view('a', 1, 200)];
    expect(decideShare({ me: 'a', live: alone, limit: 200, settleMs: 5_000, current: 67 }).rate).toBe(67);
  });

  it('in every reachable state the rates in force never add up to more than the limit', () => {
    // Three replicas, a fourth joining, one leaving: simulate the protocol step by step.
    const limit = 200;
    const settle = 3;
    type R = { id: string; peers: number; since: number; rate: number | undefined; alive: boolean };
    const rs: R[] = ['a', 'b', 'c'].map((id) => ({ id, peers: 3, since: -10, rate: 67, alive: true }));
    rs[2]!.rate = 66;
    let maxSum = 0;
    for (let t = 0; t < 40; t++) {
      if (t === 5) rs.push({ id: 'd', peers: 0, since: t, rate: undefined, alive: true });
      if (t === 20) rs[0]!.alive = false; // 'a' dies: it stops calling (fenced) and its row expires
      const live = rs.filter((r) => r.alive);
      const before = new Map(live.map((r) => [r.id, r.rate ?? 0]));
      for (const r of live) {
        const views = live.map((o) => view(o.id, o.peers, (t - o.since) * 1000));
        const next = decideShare({ me: r.id, live: views, limit, settleMs: settle * 1000, current: r.rate });
        if (next.peers !== r.peers) {
          r.peers = next.peers;
          r.since = t;
        }
        r.rate = next.rate;
      }
      // A lowered rate takes a window to take effect: count max(previous, current) for this step.
      const sum = live.reduce((acc, r) => acc + Math.max(before.get(r.id) ?? 0, r.rate ?? 0), 0);
      maxSum = Math.max(maxSum, sum);
    }
    expect(maxSum).toBeLessThanOrEqual(limit);
    const final = rs.filter((r) => r.alive).map((r) => r.rate);
    expect(final.reduce((x, y) => (x ?? 0) + (y ?? 0), 0)).toBe(200);
  });
});

describe('ReplicaBudget', () => {
  it('fences itself (rate 0) when heartbeats keep failing, before the others count it gone', async () => {
    let now = 0;
    let fail = false;
    const rates: number[] = [];
    const b = new ReplicaBudget({
      replicaId: 'a',
      limit: 100,
      heartbeat: async () => {
        if (fail) throw new Error('db down');
        return [view('a', 1, 10_000)];
      },
      setRate: (r) => rates.push(r),
      now: () => now,
      sleep,
      ttlMs: 5_000,
      fenceMarginMs: 1_500,
    });
    await b.tick();
    expect(b.rate).toBe(100);
    fail = true;
    now = 3_000;
    await b.tick();
    expect(b.rate).toBe(100);
    now = 3_600;
    await b.tick();
    expect(b.rate).toBe(0);
    fail = false;
    now = 4_000;
    await b.tick();
    expect(b.rate).toBe(100);
    expect(rates).toEqual([100, 0, 100]);
  });

  it('takes the whole budget at once when alone only with fastStartWhenAlone', async () => {
    const make = (fast: boolean) =>
      new ReplicaBudget({
        replicaId: 'solo',
        limit: 50,
        heartbeat: async () => [view('solo', 0, 0)],
        setRate: () => {},
        now: () => 0,
        sleep,
        fastStartWhenAlone: fast,
      });
    const slow = make(false);
    await slow.tick();
    expect(slow.rate).toBe(0);
    const fast = make(true);
    await fast.tick();
    expect(fast.rate).toBe(50);
  });

  it('keeps the fast start when the first heartbeat is slower than the fence timer', async () => {
    let clock = 0;
    let answer: (() => void) | undefined;
    const rates: number[] = [];
    const budget = new ReplicaBudget({
      replicaId: 'solo',
      limit: 50,
      heartbeat: () =>
        new Promise((resolve) => {
          answer = () => resolve([view('solo', 0, 0)]);
        }),
      setRate: (r) => rates.push(r),
      now: () => clock,
      sleep,
      fastStartWhenAlone: true,
    });
    const first = budget.tick();
    // The fence timer (every 250 ms) fires while the first heartbeat is still out, as on a busy machine.
    clock = 300;
    budget.fenceIfStale();
    expect(rates).toEqual([]);
    answer!();
    await first;
    expect(rates).toEqual([50]);
    // Once a rate is in force, a stale heartbeat still fences.
    clock = 20_000;
    budget.fenceIfStale();
    expect(rates).toEqual([50, 0]);
  });

  it("takes a gone replica's share one grace period after seeing it gone, without the settle wait", async () => {
    let now = 0;
    let live = [view('a', 3, 60_000), view('b', 3, 60_000), view('c', 3, 60_000)];
    const rates: number[] = [];
    const b = new ReplicaBudget({
      replicaId: 'a',
      limit: 200,
      heartbeat: async () => live,
      live: async () => live,
      setRate: (r) => rates.push(r),
      now: () => now,
      sleep,
      settleMs: 5_000,
      dropGraceMs: 1_100,
    });
    await b.tick();
    expect(b.rate).toBe(67);
    // c is gone (its session ended): the survivors' rows still say 3, so the settle rule would hold
    // a at 67 for settleMs after they all report 2.
    live = [view('a', 3, 61_000), view('b', 3, 61_000)];
    now = 1_000;
    await b.watch();
    expect(b.rate).toBe(67); // c's last calls may still be in the window
    now = 2_050;
    await b.watch();
    expect(b.rate).toBe(67);
    now = 2_100;
    await b.watch();
    expect(b.rate).toBe(100);
    // A newcomer: lowered at once; no drop raise until everyone has settled on the new count.
    live = [view('a', 2, 0), view('b', 2, 0), view('d', 3, 0)];
    now = 3_000;
    await b.tick();
    expect(b.rate).toBe(67);
    live = [view('a', 3, 0), view('b', 3, 0)]; // d died at once, before anyone settled
    now = 3_200;
    await b.watch();
    now = 4_400;
    await b.watch();
    expect(b.rate).toBe(100); // d never called (it waits to settle): a may raise after the grace
    expect(rates).toEqual([67, 100, 67, 100]);
  });

  it('does not raise on a drop while at 0 (a newcomer), and the drop raise is cancelled by a join', async () => {
    let now = 0;
    let live = [view('n', 1, 0), view('b', 2, 60_000), view('c', 2, 60_000)];
    const b = new ReplicaBudget({
      replicaId: 'n',
      limit: 200,
      heartbeat: async () => live,
      live: async () => live,
      setRate: () => {},
      now: () => now,
      sleep,
      dropGraceMs: 1_100,
    });
    await b.tick();
    expect(b.rate).toBe(0);
    live = [view('n', 3, 500), view('b', 3, 500)];
    now = 5_000;
    await b.tick();
    expect(b.rate).toBe(0); // a newcomer waits to settle whatever happens meanwhile
    // A replica calling sees one gone, then one new within the grace: no raise.
    let now2 = 0;
    let live2 = [view('a', 3, 60_000), view('b', 3, 60_000), view('c', 3, 60_000)];
    const a = new ReplicaBudget({
      replicaId: 'a',
      limit: 200,
      heartbeat: async () => live2,
      live: async () => live2,
      setRate: () => {},
      now: () => now2,
      sleep,
      dropGraceMs: 1_100,
    });
    await a.tick();
    live2 = [view('a', 3, 60_000), view('b', 3, 60_000)];
    now2 = 500;
    await a.watch();
    live2 = [view('a', 3, 60_000), view('b', 3, 60_000), view('e', 3, 0)];
    now2 = 1_000;
    await a.watch();
    now2 = 3_000;
    await a.watch();
    expect(a.rate).toBe(67);
  });

  it('stops calling at once when its registry session is lost, and rejoins as a newcomer', async () => {
    let now = 0;
    let live = [view('a', 2, 60_000), view('b', 2, 60_000)];
    const b = new ReplicaBudget({
      replicaId: 'a',
      limit: 200,
      heartbeat: async () => live,
      live: async () => live,
      setRate: () => {},
      now: () => now,
      sleep,
      settleMs: 5_000,
    });
    await b.tick();
    expect(b.rate).toBe(100);
    b.lost();
    expect(b.rate).toBe(0);
    // Registered again under a new key: its row's peers_since restarted.
    live = [view('a', 2, 0), view('b', 2, 60_000)];
    now = 1_000;
    await b.tick();
    expect(b.rate).toBe(0);
    live = [view('a', 2, 5_000), view('b', 2, 65_000)];
    now = 6_000;
    await b.tick();
    expect(b.rate).toBe(100);
  });
});

describe('callTrouble: what an error that outlasted the retries means for every call', () => {
  it.each([
    ['a 70050 lockout', new TimApiError(70050, ''), 'lockout', true],
    ["a proxy's 403", new TimHttpError(403), 'refused', true],
    ['the app disabled in the console (60016)', new TimApiError(60016, ''), 'refused', true],
    ['an HTTP 502', new TimHttpError(502), 'unreachable', false],
    ['a network error', new TimNetworkError('ECONNRESET'), 'unreachable', false],
    ['a timeout', new TimTimeoutError(8_000), 'unreachable', false],
    ['a wrong key (70009)', new TimApiError(70009, ''), 'config', true],
    ['an account Tencent does not know', new TimApiError(30003, ''), undefined, false],
    ['a rejected request JSON (60003)', new TimApiError(60003, ''), undefined, false],
  ] as const)('%s → %s (stops a one-shot pass: %s)', (_what, err, trouble, stopsPass) => {
    expect(callTrouble(err)).toBe(trouble);
    expect(mustStopPass(err)).toBe(stopsPass);
  });
});

describe('Scheduler: pausing when calls do not get through', () => {
  const refused = () => new TimHttpError(403);
  const pauseFor = (e: unknown) => {
    const t = callTrouble(e);
    return t === 'lockout' || t === 'refused' || t === 'unreachable' ? t : undefined;
  };

  it('pauses on a refusal, probes with one account at a time with growing capped waits, and resumes on its own', async () => {
    vi.useFakeTimers();
    try {
      const queue = Array.from({ length: 40 }, (_, i) => `a${i}`);
      let down = true;
      const claims: number[] = [];
      const pauses: PauseInfo[] = [];
      const resumes: PauseInfo[] = [];
      let inFlight = 0;
      let peakWhilePaused = 0;
      const synced: string[] = [];
      const stop = new AbortController();
      const s: Scheduler = new Scheduler({
        concurrency: 4,
        idleMs: 1_000,
        sleep,
        random: () => 1,
        pauseBackoff: { baseMs: 1_000, capMs: 4_000 },
        claim: async (n) => {
          claims.push(n);
          return queue.splice(0, n).map(state);
        },
        syncOne: async (st) => {
          inFlight++;
          if (s.paused) peakWhilePaused = Math.max(peakWhilePaused, inFlight);
          try {
            await sleep(10, new AbortController().signal);
            if (down) {
              queue.push(st.accountId); // released, due again
              throw refused();
            }
            synced.push(st.accountId);
            if (synced.length === 40) stop.abort();
            return outcome(st.accountId);
          } finally {
            inFlight--;
          }
        },
        isFatal: () => false,
        pauseFor,
        onPause: (p) => pauses.push(p),
        onResume: (p) => resumes.push(p),
      });
      const run = s.run(stop.signal, new AbortController().signal);
      // 4 accounts fail at once: one pause (not four), then probes after 1, 2, 4, 4 s (capped).
      await vi.advanceTimersByTimeAsync(12_000);
      expect(s.paused?.reason).toBe('refused');
      expect(pauses.map((p) => [p.failedProbes, p.backoffMs])).toEqual([
        [0, 1_000],
        [1, 2_000],
        [2, 4_000],
        [3, 4_000],
        [4, 4_000],
      ]);
      expect(claims).toEqual([4, 1, 1, 1, 1]);
      expect(peakWhilePaused).toBe(1);
      expect(resumes).toEqual([]);
      // Calls go through again: the next probe succeeds and the whole concurrency is used again.
      down = false;
      await vi.advanceTimersByTimeAsync(4_100);
      expect(resumes).toHaveLength(1);
      expect(s.paused).toBeUndefined();
      await vi.advanceTimersByTimeAsync(2_000);
      await run;
      expect(new Set(synced).size).toBe(40);
      expect(claims.slice(5, 7)).toEqual([1, 4]);
      expect(s.fatalError).toBeUndefined();
    } finally {
      vi.useRealTimers();
    }
  });

  it('pauses on an account that failed because Tencent was unreachable, and a straggler from before does not pause it again', async () => {
    vi.useFakeTimers();
    try {
      const queue = ['slow', 'fast', ...Array.from({ length: 10 }, (_, i) => `b${i}`)];
      const pauses: PauseInfo[] = [];
      let resumed = 0;
      const stop = new AbortController();
      const s = new Scheduler({
        concurrency: 2,
        idleMs: 1_000,
        sleep,
        random: () => 0,
        pauseBackoff: { baseMs: 2_000, capMs: 8_000 },
        claim: async (n) => queue.splice(0, n).map(state),
        syncOne: async (st) => {
          if (st.accountId === 'fast') {
            // Recorded on the account (it backs off), returned as a failed outcome.
            return { ...outcome(st.accountId), result: 'failed', error: new TimNetworkError('ECONNREFUSED') };
          }
          if (st.accountId === 'slow') {
            await sleep(5_000, new AbortController().signal);
            throw refused();
          }
          return outcome(st.accountId);
        },
        pauseFor,
        onPause: (p) => pauses.push(p),
        onResume: () => resumed++,
      });
      const run = s.run(stop.signal, new AbortController().signal);
      await vi.advanceTimersByTimeAsync(10);
      expect(s.paused?.reason).toBe('unreachable');
      // Backoff 2 s × 0.5; the probe succeeds; 'slow' fails after the resume: no second pause.
      await vi.advanceTimersByTimeAsync(8_000);
      expect(resumed).toBe(1);
      expect(pauses).toHaveLength(1);
      expect(s.paused).toBeUndefined();
      expect(queue).toEqual([]);
      stop.abort();
      await run;
    } finally {
      vi.useRealTimers();
    }
  });

  it('a configuration error still stops claiming for good, even during a pause', async () => {
    vi.useFakeTimers();
    try {
      let probes = 0;
      const s = new Scheduler({
        concurrency: 2,
        idleMs: 1_000,
        sleep,
        random: () => 1,
        pauseBackoff: { baseMs: 1_000, capMs: 1_000 },
        claim: async (n) => Array.from({ length: n }, (_, i) => state(`c${probes}-${i}`)),
        syncOne: async () => {
          probes++;
          throw probes === 1 ? refused() : new TimApiError(70009, 'bad signature');
        },
        isFatal: (e) => callTrouble(e) === 'config',
        pauseFor,
      });
      const run = s.run(new AbortController().signal, new AbortController().signal);
      await vi.advanceTimersByTimeAsync(5_000);
      await run;
      expect(s.fatalError).toBeInstanceOf(TimApiError);
      expect(probes).toBeLessThanOrEqual(3);
    } finally {
      vi.useRealTimers();
    }
  });
});
