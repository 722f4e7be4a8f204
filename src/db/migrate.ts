/**
 * Runs the top-level `migrations/` (listed in migrations/index.ts) with Kysely's Migrator.
 */
import { type Kysely, type MigrationResult, Migrator } from 'kysely';
import { migrations } from '../../migrations/index.js';

/** A migration failed; nothing after it ran. The command must stop with a non-zero exit. */
export class MigrationFailedError extends Error {
  readonly code = 'MIGRATION_FAILED';
  readonly migrationName: string | undefined;
  constructor(migrationName: string | undefined, cause: unknown) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    super(`migration ${migrationName ?? '(unknown)'} failed: ${reason}`, { cause });
    this.migrationName = migrationName;
  }
}

function migrator(db: Kysely<any>): Migrator {
  return new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableSchema: 'tim',
  });
}

/**
 * Applies every pending migration, in order, each in its own transaction.
 *
 * @returns the migrations that ran
 * @throws MigrationFailedError when one fails
 */
export async function migrateToLatest(db: Kysely<any>): Promise<MigrationResult[]> {
  // The migrator creates the `tim` schema for its bookkeeping tables itself, and takes its lock
  // before running anything. A `CREATE SCHEMA IF NOT EXISTS` of our own before that raced: two
  // replicas starting together could both miss the schema, and one failed on the catalog's unique
  // index. Kysely's own creation checks again after such an error.
  const { error, results = [] } = await migrator(db).migrateToLatest();
  if (error) {
    const failed = results.find((r) => r.status === 'Error');
    throw new MigrationFailedError(failed?.migrationName, error);
  }
  return results;
}

/**
 * True when every migration in migrations/ has been applied (for readiness checks).
 */
export async function migrationsAreCurrent(db: Kysely<any>): Promise<boolean> {
  const all = await migrator(db).getMigrations();
  return all.every((m) => m.executedAt !== undefined);
}

/** The schema lacks migrations this version needs; a read-only command does not apply them. */
export class SchemaBehindError extends Error {
  readonly code = 'SCHEMA_BEHIND';
  /** The migrations not applied yet. */
  readonly pending: string[];
  constructor(pending: string[]) {
    super(
      `the database schema is behind this version (${pending.length} migration(s) pending): run friend-mirror migrate`,
    );
    this.pending = pending;
  }
}

/**
 * For commands that only read: checks, without writing or taking locks, that every migration has
 * been applied, so a role without CREATE (a reporting role) can run them.
 *
 * @throws SchemaBehindError when some are pending (or the schema was never migrated)
 */
export async function requireCurrentSchema(db: Kysely<any>): Promise<void> {
  const pending = (await migrator(db).getMigrations()).filter((m) => m.executedAt === undefined);
  if (pending.length > 0) throw new SchemaBehindError(pending.map((m) => m.name));
}
