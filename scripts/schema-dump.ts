/**
 * `npm run schema:dump`: migrates a fresh scratch database and writes its schema to
 * migrations/schema.sql (scripts/lib/schema-dump.ts says what it holds). Run it after adding or
 * changing a migration and commit both; test/schema.test.ts fails while they differ.
 *
 * The server is the benchmark's choice (bench/lib/postgres.ts): BENCH_DATABASE_URL, else
 * TEST_DATABASE_URL, else an embedded server started for the run. The dump reads the same on each.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chooseServer, createScratchDatabase, withClient } from '../bench/lib/postgres.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { dumpSchema, SCHEMA_DUMP_PATH } from './lib/schema-dump.js';

const server = await chooseServer();
try {
  const scratch = await createScratchDatabase(server.adminUrl, 'schema_dump');
  try {
    const db = createDb(scratch.url, { maxConnections: 1, applicationName: 'schema-dump' });
    try {
      await migrateToLatest(db);
    } finally {
      await db.destroy();
    }
    const text = await withClient(scratch.url, dumpSchema);
    const path = fileURLToPath(new URL(`../../${SCHEMA_DUMP_PATH}`, import.meta.url));
    writeFileSync(path, text);
    process.stderr.write(`wrote ${SCHEMA_DUMP_PATH} (PostgreSQL ${server.version}, ${server.source})\n`);
  } finally {
    await scratch.drop();
  }
} finally {
  await server.stop();
}
