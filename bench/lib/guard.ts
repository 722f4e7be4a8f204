/**
 * The CI guard's rule (issue #5): fail only on gross regressions of the full sweep. Two checks, no
 * other wall-clock assertion:
 * - utilisation while work remained (first call → last account started) below `minUtilisation` of
 *   the quota;
 * - any one-second window with more calls than the limit.
 */
import type { CallStats } from './calls.js';

/** Result of {@link evaluateGuard}. */
export interface GuardVerdict {
  ok: boolean;
  /** One line per check, `ok` or the reason it failed. */
  lines: string[];
}

/** Decides the guard. `rateLimit` is the quota the sweep ran under. */
export function evaluateGuard(
  calls: Pick<CallStats, 'sustainedRate' | 'sustainedSeconds' | 'maxInAnySecond' | 'rateLimited'>,
  rateLimit: number,
  minUtilisation = 0.8,
): GuardVerdict {
  const lines: string[] = [];
  let ok = true;
  const utilisation = calls.sustainedRate / rateLimit;
  if (!(utilisation >= minUtilisation)) {
    ok = false;
    lines.push(
      `FAIL utilisation while work remained ${(utilisation * 100).toFixed(1)}% of ${rateLimit}/s ` +
        `(over ${calls.sustainedSeconds.toFixed(1)} s) is below ${(minUtilisation * 100).toFixed(0)}%`,
    );
  } else {
    lines.push(`ok   utilisation while work remained ${(utilisation * 100).toFixed(1)}% of ${rateLimit}/s`);
  }
  if (calls.maxInAnySecond > rateLimit || calls.rateLimited > 0) {
    ok = false;
    lines.push(
      `FAIL ${calls.maxInAnySecond} calls in one second (limit ${rateLimit}); ${calls.rateLimited} refused with 60007`,
    );
  } else {
    lines.push(`ok   at most ${calls.maxInAnySecond} calls in any one-second window (limit ${rateLimit})`);
  }
  return { ok, lines };
}
