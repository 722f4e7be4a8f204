/**
 * One fresh database per test file, on the server that `global-setup.ts` chose for the run.
 *
 * Files run in parallel, each in its own database, so schemas (`tim`), migrations and data never
 * collide, and no file depends on what another left behind.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';

/** A database created for one test file. */
export interface TestDatabase {
  /** Connection URL of the new database (same server and credentials as the admin URL). */
  url: string;
  /** Its name, e.g. `fmtest_friends_3f9a1c02b7`. */
  name: string;
  /** Ends every connection to it and drops it. Safe to call twice. */
  drop(): Promise<void>;
}

/** Postgres truncates identifiers longer than this; a truncated name could collide. */
const MAX_IDENTIFIER_BYTES = 63;
const PREFIX = 'fmtest';
/** `DROP DATABASE ... WITH (FORCE)` appeared in PostgreSQL 13. */
const MIN_SERVER_VERSION_NUM = 130_000;

/**
 * Creates a brand-new, empty database named after `label` plus a random suffix.
 *
 * @example
 * let db: TestDatabase;
 * beforeAll(async () => {
 *   db = await createTestDatabase('friends');
 *   // migrate db.url, open pools...
 * });
 * afterAll(async () => {
 *   // close pools first...
 *   await db?.drop();
 * });
 */
export async function createTestDatabase(label: string): Promise<TestDatabase> {
  const adminUrl = inject('adminDatabaseUrl');
  const name = testDatabaseName(label);
  await withAdmin(adminUrl, async (client) => {
    const { rows } = await client.query<{ v: string }>(`select current_setting('server_version_num') as v`);
    const version = Number(rows[0]?.v);
    if (!(version >= MIN_SERVER_VERSION_NUM)) {
      throw new Error(
        `tests need PostgreSQL 13 or newer (server_version_num ${rows[0]?.v}); fix TEST_DATABASE_URL`,
      );
    }
    await client.query(`create database ${client.escapeIdentifier(name)}`);
  });

  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  let dropping: Promise<void> | undefined;
  return {
    url: url.toString(),
    name,
    drop: () => {
      // FORCE ends connections a test leaked, so a forgotten pool cannot keep the database alive.
      dropping ??= withAdmin(adminUrl, async (client) => {
        await client.query(`drop database if exists ${client.escapeIdentifier(name)} with (force)`);
      });
      return dropping;
    },
  };
}

/**
 * `fmtest_<label>_<10 hex>`: only `[a-z0-9_]`, so it never needs quoting in psql, and at most 63 bytes
 * with the random part intact, so two files with the same label never collide.
 */
export function testDatabaseName(label: string): string {
  const suffix = randomBytes(5).toString('hex');
  const room = MAX_IDENTIFIER_BYTES - PREFIX.length - suffix.length - 2;
  const clean =
    label
      .toLowerCase()
      .replace(/[^a-z0-9_]+/g, '_')
      .replace(/^_+|_+$/g, '')
      .slice(0, room)
      .replace(/_+$/, '') || 'db';
  return `${PREFIX}_${clean}_${suffix}`;
}

async function withAdmin(adminUrl: string, work: (client: pg.Client) => Promise<void>): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  // A server-side disconnect would otherwise surface as an unhandled 'error' event.
  client.on('error', () => undefined);
  await client.connect();
  try {
    await work(client);
  } finally {
    await client.end();
  }
}
