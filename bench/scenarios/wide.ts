/**
 * The wide sweep (issue #18): a first sync where EVERY account has the most friends Tencent allows,
 * so each pull in flight holds a whole 3,000-friend list until it is applied. Memory is bounded by
 * the row budget (`SYNC_ROW_BUDGET`), not by `SYNC_CONCURRENCY` × friends: this shows the peak RSS
 * of `sync --all` at default settings, and the call rate beside it, so a budget that holds memory
 * down by starving the pipe shows as well.
 */
import type { PassMeasure, SweepSettings } from './sweep.js';
import { runSweep } from './sweep.js';

/** Settings of the wide sweep: the sweep's, with every account at `friends`. */
export interface WideSettings extends SweepSettings {
  /** Friends of every account (`BENCH_WIDE_FRIENDS`). */
  friends: number;
}

/** What the wide sweep measured. */
export interface WideResult {
  settings: WideSettings;
  simRaisedPriority: boolean;
  pass: PassMeasure;
}

/** Runs the wide sweep: one full pass, no incremental one. */
export async function runWide(adminUrl: string, s: WideSettings): Promise<WideResult> {
  const r = await runSweep(adminUrl, {
    ...s,
    meanFriends: s.friends,
    maxFriends: s.friends,
    minFriends: s.friends,
    mutateFraction: 0,
  });
  return {
    settings: s,
    simRaisedPriority: r.simRaisedPriority,
    pass: r.full,
  };
}

/** The console lines of a wide sweep, after the pass's own (bench/run.ts `passLines`). */
export function wideLines(r: WideResult): string[] {
  const p = r.pass;
  const b = p.rowBudget;
  return [
    `${r.settings.accounts} accounts of ${r.settings.friends} friends, ${r.settings.pageSize} per page`,
    `row budget: ${b ? `${b.limit} friends, at most ${b.peak} held at once` : 'off (SYNC_ROW_BUDGET=0)'}`,
    `friends per account in the mirror: ${p.friendsPerAccount.min}–${p.friendsPerAccount.max}`,
  ];
}
