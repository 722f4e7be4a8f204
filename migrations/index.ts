/**
 * Every migration, by name, in the order they run. Adding a migration means adding its file and a
 * line here. A static list (rather than reading the folder at run time) works the same from source
 * under vitest and from the build, and a typo fails typecheck instead of production.
 */
import type { Migration } from 'kysely';
import * as initial from './2026-11-25T00-00-00_initial.js';
import * as scheduling from './2026-11-25T01-00-00_scheduling.js';
import * as friendEvents from './2026-11-25T02-00-00_friend_events.js';
import * as analyticsViews from './2026-11-25T03-00-00_analytics_views.js';
import * as reconcile from './2026-11-25T04-00-00_reconcile.js';
import * as setBasedCascade from './2026-11-25T05-00-00_set_based_cascade.js';
import * as missingRecheck from './2026-12-03T00-00-00_missing_recheck.js';
import * as replicaLiveness from './2026-12-03T01-00-00_replica_liveness.js';
import * as recentErrors from './2026-12-03T02-00-00_recent_errors.js';

export const migrations: Record<string, Migration> = {
  '2026-11-25T00-00-00_initial': initial,
  '2026-11-25T01-00-00_scheduling': scheduling,
  '2026-11-25T02-00-00_friend_events': friendEvents,
  '2026-11-25T03-00-00_analytics_views': analyticsViews,
  '2026-11-25T04-00-00_reconcile': reconcile,
  '2026-11-25T05-00-00_set_based_cascade': setBasedCascade,
  '2026-12-03T00-00-00_missing_recheck': missingRecheck,
  '2026-12-03T01-00-00_replica_liveness': replicaLiveness,
  '2026-12-03T02-00-00_recent_errors': recentErrors,
};
