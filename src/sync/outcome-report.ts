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
}

/**
 * Returns a function to call with every finished account. Drift is logged at warn with the account
 * and row counts (never row contents); the discovery cap is logged once per process (the metric
 * `discovery_capped_total` keeps counting), and again after discovery has found room since.
 */
export function createOutcomeReporter(
  log: Logger,
  opts: OutcomeReporterOptions = {},
): (o: AccountSyncOutcome) => void {
  let capLogged = false;
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
      if (o.discovery.capped > 0 && !capLogged) {
        capLogged = true;
        log.warn(
          { account: o.accountId, capped: o.discovery.capped, maxAccounts: opts.discoverMaxAccounts },
          'discovery stopped: tim.accounts reached SYNC_DISCOVER_MAX_ACCOUNTS; raise it, or remove accounts, to let it grow',
        );
      } else if (o.discovery.added > 0 && capLogged) {
        capLogged = false;
      }
    }
  };
}
