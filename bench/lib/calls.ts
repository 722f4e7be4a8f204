/**
 * What the simulator saw: the rate at which calls arrived, from its call log. Tencent counts calls
 * when they arrive, so this, not the mirror's own count, is what the quota is judged on.
 */
import type { CallRecord } from '../../src/simulator/index.js';
import { maxInWindow } from '../../src/simulator/index.js';

/** Arrival statistics of one pass. */
export interface CallStats {
  /** Calls that reached the simulator. */
  arrived: number;
  /** Answers that were not ErrorCode 0 (60007 included). */
  notOk: number;
  /** Calls refused with 60007 (over the simulator's rate limit). */
  rateLimited: number;
  /** Busiest window [t, t + 1000 ms) of arrivals. */
  maxInAnySecond: number;
  firstAt: number;
  lastAt: number;
  /** Calls per second from the first to the last arrival. */
  arrivalRate: number;
  /**
   * When the last account made its first call. Until then accounts were waiting to start, so work
   * remained for every free slot; after it the pass drains (the last accounts' remaining pages).
   */
  drainAt: number;
  /** Calls per second from the first arrival to `drainAt`: the rate while work remained. */
  sustainedRate: number;
  sustainedSeconds: number;
  /** Calls per whole second after the first call: the shape of the pass. */
  perSecond: number[];
  /**
   * Calls per {@link BUCKET_MS} bucket from the first arrival to `drainAt` (whole buckets only):
   * while work remained, every bucket should hold about quota × 0.25 calls. An empty one is a
   * stall of the pipe (the 0.55 incremental pass had one, then ran at half rate).
   */
  buckets: number[];
  /** Buckets of {@link CallStats.buckets} with no call. */
  emptyBuckets: number;
  /** The fewest calls in one of them; NaN when the pass was too short to have one. */
  minBucket: number;
}

/** Width of the buckets of {@link CallStats.buckets}. */
export const BUCKET_MS = 250;

/** Summarises the calls logged during one pass. */
export function callStats(calls: readonly CallRecord[]): CallStats {
  const times = calls.map((c) => c.at).sort((a, b) => a - b);
  const firstByAccount = new Map<string, number>();
  for (const c of calls) {
    const key = c.account ?? '';
    const seen = firstByAccount.get(key);
    if (seen === undefined || c.at < seen) firstByAccount.set(key, c.at);
  }
  let drainAt = 0;
  for (const t of firstByAccount.values()) drainAt = Math.max(drainAt, t);
  const firstAt = times[0] ?? 0;
  const lastAt = times[times.length - 1] ?? 0;
  const perSecond: number[] = [];
  for (const t of times) {
    const s = Math.floor((t - firstAt) / 1000);
    perSecond[s] = (perSecond[s] ?? 0) + 1;
  }
  for (let i = 0; i < perSecond.length; i++) perSecond[i] ??= 0;
  const sustainedEnd = Math.min(Math.max(drainAt, firstAt), lastAt);
  const sustainedSeconds = (sustainedEnd - firstAt) / 1000;
  const inSustained = times.filter((t) => t <= sustainedEnd).length;
  const buckets = new Array<number>(Math.floor((sustainedEnd - firstAt) / BUCKET_MS)).fill(0);
  for (const t of times) {
    const b = Math.floor((t - firstAt) / BUCKET_MS);
    if (b < buckets.length) buckets[b]! += 1;
  }
  return {
    arrived: times.length,
    notOk: calls.filter((c) => c.errorCode !== 0).length,
    rateLimited: calls.filter((c) => c.errorCode === 60007).length,
    maxInAnySecond: maxInWindow(times, 1000),
    firstAt,
    lastAt,
    drainAt,
    arrivalRate: times.length > 1 ? (times.length - 1) / ((lastAt - firstAt) / 1000) : 0,
    // Calls strictly after the first, over the time since the first: the rate, not a fencepost count.
    sustainedRate: sustainedSeconds > 0.5 ? (inSustained - 1) / sustainedSeconds : Number.NaN,
    sustainedSeconds,
    perSecond,
    buckets,
    emptyBuckets: buckets.filter((n) => n === 0).length,
    minBucket: buckets.length > 0 ? Math.min(...buckets) : Number.NaN,
  };
}
