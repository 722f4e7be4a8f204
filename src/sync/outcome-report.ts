/**
 * Log lines for what a sync found besides its data: drift that a full read repaired, and what
 * discovery did. Shared by the daemon and the one-shot `sync`, so both say the same thing.
 */
import type { Logger } from '../log.js';
import type { AccountSyncOutcome } from './account-sync.js';

/** Options of {@link createOutcomeReporter}. */
export interface OutcomeReporterOptions {
  /** `SYNC_DISCOVER_MAX_ACCOUNTS`, named in the cap warning. */
  discoverMaxAccounts?: number;
  /** Milliseconds clock; injectable for tests. */
  now?: () => number;
}

/** While discovery stays capped, the warning repeats at most this often. */
export const CAP_WARNING_INTERVAL_MS = 3_600_000;

/**
 * Returns a function to call with every finished account. Drift is logged at warn with the account
 * and row counts (never row contents); the discovery cap is logged once, then at most once an
 * hour while it stays capped (the metric `discovery_capped_total` counts every account left out).
 *
 * Not "again once discovery has found room": accounts finish in any order, so an account whose
 * discovery added rows before the cap was reached can report after one that hit it, and that
 * re-armed the warning within the same pass.
 */
export function createOutcomeReporter(
  log: Logger,
  opts: OutcomeReporterOptions = {},
): (o: AccountSyncOutcome) => void {
  const now = opts.now ?? Date.now;
  let capLoggedAt = Number.NEGATIVE_INFINITY;
  return (o) => {
    if (o.drift) {
      log.warn(
        {
          account: o.accountId,
          friendRowsRepaired: o.drift.friendRows,
          tagRowsRepaired: o.drift.tagRows,
          reconciled: o.reconciled === true,
        },
        `${o.reconciled ? 'reconciliation' : 'full read'} repaired drift: ${o.drift.friendRows} friend row(s) and ` +
          `${o.drift.tagRows} tag row(s) differed although Tencent's sequences had not moved`,
      );
    }
    if (o.discoveryError) {
      log.warn(
        { account: o.accountId, err: { message: o.discoveryError.message } },
        'discovery failed for this account (its sync is kept); its friends are tried again on its next full read',
      );
    }
    if (o.discovery) {
      if (o.discovery.capped > 0 && now() - capLoggedAt >= CAP_WARNING_INTERVAL_MS) {
        capLoggedAt = now();
        log.warn(
          { account: o.accountId, capped: o.discovery.capped, maxAccounts: opts.discoverMaxAccounts },
          'discovery stopped: tim.accounts reached SYNC_DISCOVER_MAX_ACCOUNTS; raise it, or remove accounts, to let it grow',
        );
      }
    }
  };
}
