/**
 * The benchmark's pure parts: call-log statistics and the CI guard's rule (bench/lib). The guard
 * itself runs as `npm run bench:ci`.
 */
import { describe, expect, it } from 'vitest';
import { callStats } from '../bench/lib/calls.js';
import { BREAKDOWN_UTILISATION, evaluateGuard } from '../bench/lib/guard.js';
import type { CallRecord } from '../src/simulator/index.js';

function call(at: number, account: string, errorCode = 0): CallRecord {
  return { at, account, errorCode, httpStatus: 200, items: 0 };
}

describe('callStats', () => {
  it('measures the rate while work remained, up to the last account’s first call', () => {
    // 10 accounts, one call each 10 ms apart, then account a9 pages on for a second.
    const calls = Array.from({ length: 10 }, (_, i) => call(1000 + i * 10, `a${i}`));
    calls.push(call(1500, 'a9'), call(2100, 'a9'));
    const s = callStats(calls);
    expect(s.arrived).toBe(12);
    expect(s.drainAt).toBe(1090);
    expect(s.sustainedSeconds).toBeCloseTo(0.09);
    expect(s.maxInAnySecond).toBe(11);
    expect(s.perSecond).toEqual([11, 1]);
  });

  it('counts refusals', () => {
    const s = callStats([call(0, 'a'), call(1, 'b', 60007), call(2, 'c', 30006)]);
    expect(s.notOk).toBe(2);
    expect(s.rateLimited).toBe(1);
  });
});

describe('evaluateGuard', () => {
  const healthy = { sustainedRate: 190, sustainedSeconds: 5, maxInAnySecond: 197, rateLimited: 0 };

  it('passes a sweep near the quota and never over it', () => {
    expect(evaluateGuard(healthy, 200).ok).toBe(true);
  });

  it('fails below 80% of the quota while work remained', () => {
    const v = evaluateGuard({ ...healthy, sustainedRate: 150 }, 200);
    expect(v.ok).toBe(false);
    expect(v.lines.join('\n')).toMatch(/75\.0% of 200\/s/);
  });

  it('fails on any one-second window over the limit, or any 60007', () => {
    expect(evaluateGuard({ ...healthy, maxInAnySecond: 201 }, 200).ok).toBe(false);
    expect(evaluateGuard({ ...healthy, rateLimited: 1 }, 200).ok).toBe(false);
  });

  it('fails when nothing could be measured', () => {
    expect(evaluateGuard({ ...healthy, sustainedRate: Number.NaN }, 200).ok).toBe(false);
    expect(evaluateGuard({ ...healthy, sustainedRate: Number.NaN }, 200, { foreignCores: 1 }).ok).toBe(false);
  });

  it('calls a slow sweep inconclusive, not failed, when other processes took the CPU', () => {
    const slow = { ...healthy, sustainedRate: 120 };
    expect(evaluateGuard(slow, 200, { foreignCores: 0.1 })).toMatchObject({ ok: false, inconclusive: false });
    expect(evaluateGuard(slow, 200, { foreignCores: 0.9 })).toMatchObject({ ok: true, inconclusive: true });
    // Going over the limit is never excused.
    expect(evaluateGuard({ ...slow, maxInAnySecond: 250 }, 200, { foreignCores: 0.9 }).ok).toBe(false);
  });

  it('fails a breakdown even on a busy machine, and a sweep that lost accounts at any rate', () => {
    expect(evaluateGuard({ ...healthy, sustainedRate: 60 }, 200, { foreignCores: 0.9 })).toMatchObject({
      ok: false,
      inconclusive: false,
    });
    const sweep = { exitCode: 0, failed: 0, friendRows: 100 };
    expect(evaluateGuard(healthy, 200, { sweep }).ok).toBe(true);
    expect(evaluateGuard(healthy, 200, { sweep: { ...sweep, exitCode: 1 } }).ok).toBe(false);
    expect(evaluateGuard(healthy, 200, { sweep: { ...sweep, failed: 3 } }).ok).toBe(false);
    expect(evaluateGuard(healthy, 200, { sweep: { ...sweep, friendRows: 0 } }).ok).toBe(false);
  });

  it('judges the replicas against a breakdown only: slow passes, half the quota or less fails', () => {
    const opts = { minUtilisation: BREAKDOWN_UTILISATION };
    expect(evaluateGuard({ ...healthy, sustainedRate: 120 }, 200, opts).ok).toBe(true);
    expect(evaluateGuard({ ...healthy, sustainedRate: 95 }, 200, opts)).toMatchObject({
      ok: false,
      inconclusive: false,
    });
    expect(evaluateGuard({ ...healthy, sustainedRate: 120, rateLimited: 1 }, 200, opts).ok).toBe(false);
  });
});
