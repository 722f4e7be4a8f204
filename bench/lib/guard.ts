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

/**
 * Other processes may use this much CPU (in cores) during the sweep and a low utilisation still
 * counts as ours. Above it the machine was busy with someone else's work (a shared runner, tests
 * still running) and a slow sweep proves nothing about the mirror: the caller runs it again, and
 * reports the check as inconclusive rather than failed if the machine stays busy.
 */
export const MAX_FOREIGN_CPU_CORES = 0.3;

/** Below this share of the quota a sweep failed, however busy the machine was. */
export const BREAKDOWN_UTILISATION = 0.5;

/** What the sweep's mirror process reported: a sweep that lost accounts fails whatever its rate. */
export interface SweepOutcome {
  exitCode: number;
  failed: number;
  friendRows: number;
}

/** Options of {@link evaluateGuard}. */
export interface GuardOptions {
  /** CPU (cores) other processes used during the sweep. */
  foreignCores?: number;
  /** Default 0.8. */
  minUtilisation?: number;
  sweep?: SweepOutcome;
}

/** Decides the guard. `rateLimit` is the quota the sweep ran under. */
export function evaluateGuard(
  calls: Pick<CallStats, 'sustainedRate' | 'sustainedSeconds' | 'maxInAnySecond' | 'rateLimited'>,
  rateLimit: number,
  opts: GuardOptions = {},
): GuardVerdict & { inconclusive: boolean } {
  const { foreignCores = 0, minUtilisation = 0.8, sweep } = opts;
  const lines: string[] = [];
  let ok = true;
  let inconclusive = false;
  if (sweep && (sweep.exitCode !== 0 || sweep.failed !== 0 || !(sweep.friendRows > 0))) {
    ok = false;
    lines.push(
      `FAIL the sweep itself: exit code ${sweep.exitCode}, ${sweep.failed} account(s) failed, ${sweep.friendRows} friend rows in the mirror`,
    );
  } else if (sweep) {
    lines.push(`ok   every account synced (exit code 0), ${sweep.friendRows} friend rows in the mirror`);
  }
  const utilisation = calls.sustainedRate / rateLimit;
  if (!(utilisation >= minUtilisation)) {
    const what =
      `utilisation while work remained ${(utilisation * 100).toFixed(1)}% of ${rateLimit}/s ` +
      `(over ${calls.sustainedSeconds.toFixed(1)} s) is below ${(minUtilisation * 100).toFixed(0)}%`;
    if (foreignCores > MAX_FOREIGN_CPU_CORES && utilisation >= BREAKDOWN_UTILISATION) {
      inconclusive = true;
      lines.push(
        `warn ${what}, but other processes used ${foreignCores.toFixed(2)} cores meanwhile: inconclusive`,
      );
    } else {
      ok = false;
      lines.push(`FAIL ${what}`);
    }
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
  return { ok, inconclusive, lines };
}
