/**
 * Runs the top-level `migrations/` folder with Kysely's Migrator.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileMigrationProvider, type Kysely, type MigrationResult, Migrator } from 'kysely';

/**
 * migrations/ sits two levels above this file both in the source tree (src/db/) and in the build
 * (dist/src/db/ → dist/migrations/), so one relative path serves both.
 */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations', import.meta.url));

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
    provider: new FileMigrationProvider({ fs, path, migrationFolder: MIGRATIONS_DIR }),
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
  // Kysely creates its bookkeeping tables in this schema, so it must exist first.
  await db.schema.createSchema('tim').ifNotExists().execute();
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
