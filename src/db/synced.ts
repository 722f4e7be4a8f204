/**
 * What every successful sync writes on its account row, whatever it wrote to the data: the
 * sequences, the status, and when the account is due again.
 */
import { type Kysely, sql } from 'kysely';
import { afterSync } from './accounts.js';
import type { Database } from './schema.js';
import type { NextSync, SnapshotHead } from './snapshot-types.js';

/** When no schedule is given: due again in an hour. */
export const DEFAULT_NEXT_SYNC: NextSync = { intervalMs: 3_600_000 };
const DEFAULT_JITTER = 0.1;

function nextSyncAt(s: NextSync) {
  const jitter = s.jitter ?? DEFAULT_JITTER;
  return sql<Date>`now() + ${s.intervalMs}::float8 * (1 - ${jitter}::float8 + random() * 2 * ${jitter}::float8) * interval '1 millisecond'`;
}

/** Two schedules that store the same next sync. */
export function sameSchedule(a: NextSync, b: NextSync): boolean {
  return (
    a.intervalMs === b.intervalMs &&
    (a.jitter ?? DEFAULT_JITTER) === (b.jitter ?? DEFAULT_JITTER) &&
    a.leaseOwner === b.leaseOwner
  );
}

/** The columns of `tim.accounts` every successful apply writes, besides the data's own. */
export function syncedColumns(snap: SnapshotHead, friendCount: number, schedule: NextSync) {
  return {
    standard_sequence: snap.standardSequence,
    custom_sequence: snap.customSequence,
    friend_count: friendCount,
    ...syncedStatus(schedule),
  };
}

/** What every successful sync sets on its account, whatever the data. */
export function syncedStatus(schedule: NextSync) {
  return {
    status: 'ok' as const,
    last_error: null,
    failures: 0,
    last_synced_at: sql<Date>`now()`,
    last_attempt_at: sql<Date>`now()`,
    ...afterSync(nextSyncAt(schedule), 'succeeded', schedule.leaseOwner),
  };
}

/**
 * Records a pull that found both sequences unchanged: bookkeeping only, no data rows touched.
 * Refuses (returns false) if the stored sequences moved meanwhile, as an apply would.
 */
export async function recordUnchanged(
  db: Kysely<Database>,
  accountId: string,
  standardSequence: number,
  customSequence: number,
  schedule: NextSync = DEFAULT_NEXT_SYNC,
): Promise<boolean> {
  const res = await db
    .updateTable('tim.accounts')
    .set(syncedStatus(schedule))
    .where('account_id', '=', accountId)
    .where('standard_sequence', '=', standardSequence)
    .where('custom_sequence', '=', customSequence)
    .executeTakeFirst();
  return Number(res.numUpdatedRows) === 1;
}
