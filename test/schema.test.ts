/**
 * The migrated schema equals migrations/schema.sql, the dump checked in beside the migrations: a
 * migration that changes the schema shows up in review as a diff of that file, and a migration
 * edited after the dump was made (or a dump edited by hand) fails here. Read from the catalog
 * (scripts/lib/schema-dump.ts), so it holds on every server CI runs the suite against.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpSchema, SCHEMA_DUMP_COMMAND, SCHEMA_DUMP_PATH } from '../scripts/lib/schema-dump.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

describe('the migrated schema', () => {
  let database: TestDatabase;
  let client: pg.Client;

  beforeAll(async () => {
    database = await createTestDatabase('schema');
    const db = createDb(database.url, { maxConnections: 1 });
    try {
      await migrateToLatest(db);
    } finally {
      await db.destroy();
    }
    client = new pg.Client({ connectionString: database.url });
    await client.connect();
  });

  afterAll(async () => {
    await client?.end();
    await database?.drop();
  });

  it(`equals ${SCHEMA_DUMP_PATH}`, async () => {
    const dumped = await dumpSchema(client);
    const checkedIn = readFileSync(new URL(`../${SCHEMA_DUMP_PATH}`, import.meta.url), 'utf8');
    const server = (await client.query<{ v: string }>('show server_version')).rows[0]!.v;
    expect(
      dumped,
      `${SCHEMA_DUMP_PATH} is not the schema the migrations make (PostgreSQL ${server}; - checked in, + migrated). ` +
        `After changing a migration, run \`${SCHEMA_DUMP_COMMAND}\` and commit the file with it`,
    ).toBe(checkedIn);
  });

  it('is read the same whatever the session search_path, and leaves it as it was', async () => {
    await client.query('set search_path = tim, public');
    try {
      const inTim = await dumpSchema(client);
      expect((await client.query<{ p: string }>('show search_path')).rows[0]!.p).toBe('tim, public');
      await client.query('reset search_path');
      expect(await dumpSchema(client)).toBe(inTim);
    } finally {
      await client.query('reset search_path');
    }
  });
});
