/**
 * The migrated schema equals migrations/schema.sql, the dump checked in beside the migrations: a
 * migration that changes the schema shows up in review as a diff of that file, and a migration
 * edited after the dump was made (or a dump edited by hand) fails here. Read from the catalog
 * (scripts/lib/schema-dump.ts), so it holds on every server CI runs the suite against.
 */
import { readFileSync } from 'node:fs';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  dumpSchema,
  normaliseViewDef,
  SCHEMA_DUMP_COMMAND,
  SCHEMA_DUMP_PATH,
} from '../scripts/lib/schema-dump.js';
import { latestErrors } from '../src/db/accounts.js';
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
    const server = (await client.query<{ v: string }>(`select current_setting('server_version') as v`))
      .rows[0]!.v;
    expect(
      dumped,
      `${SCHEMA_DUMP_PATH} is not the schema the migrations make (PostgreSQL ${server}; - checked in, + migrated). ` +
        `After changing a migration, run \`${SCHEMA_DUMP_COMMAND}\` and commit the file with it`,
    ).toBe(checkedIn);
  });

  it('lists the latest errors from their partial index, whatever the number of healthy accounts', async () => {
    // The plan the index allows: were the query and accounts_recent_errors_idx to drift apart, the
    // cheapest plan left would read every account (or the whole primary key) and sort.
    const db = createDb(database.url, { maxConnections: 1 });
    try {
      const q = latestErrors(db, 10).compile();
      await client.query('set enable_seqscan = off');
      const plan = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${q.sql}`, [...q.parameters]);
      expect(plan.rows.map((r) => r['QUERY PLAN']).join('\n')).toMatch(
        /Index Scan using accounts_recent_errors_idx/,
      );
    } finally {
      await client.query('reset enable_seqscan');
      await db.destroy();
    }
  });

  it('is read the same whatever the session search_path, and leaves it as it was', async () => {
    await client.query('set search_path = tim, public');
    try {
      const inTim = await dumpSchema(client);
      expect((await client.query<{ search_path: string }>('show search_path')).rows[0]!.search_path).toBe(
        'tim, public',
      );
      await client.query('reset search_path');
      expect(await dumpSchema(client)).toBe(inTim);
    } finally {
      await client.query('reset search_path');
    }
  });
});

describe('view definitions', () => {
  // tim.live_replicas as PostgreSQL 15 and 18 deparse it.
  const pg15 = ` SELECT r.replica_id,
    r.pid
   FROM tim.replicas r
  WHERE r.expires_at > now() AND (r.lock_key IS NULL OR (EXISTS ( SELECT 1
           FROM pg_locks l
          WHERE l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = r.lock_key)));`;
  const pg18 = ` SELECT replica_id,
    pid
   FROM tim.replicas r
  WHERE expires_at > now() AND (lock_key IS NULL OR (EXISTS ( SELECT 1
           FROM pg_locks l
          WHERE l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = r.lock_key)));`;

  it('read the same from PostgreSQL 15 and 18: one relation, qualified only inside subqueries', () => {
    expect(normaliseViewDef(pg15)).toBe(normaliseViewDef(pg18));
    expect(normaliseViewDef(pg18)).toBe(pg18.replace(/;$/, ''));
  });

  it('keep the qualifiers of a join, of strings and of other names', () => {
    const join = ` SELECT a.account_id AS account_a,
    b.account_id AS account_b
   FROM tim.friends a
     JOIN tim.friends b ON b.account_id = a.friend_id;`;
    expect(normaliseViewDef(join)).toBe(join.replace(/;$/, ''));
    const strings = ` SELECT 'accounts.x'::text AS s,
    data.accounts.y
   FROM tim.accounts;`;
    expect(normaliseViewDef(strings)).toBe(` SELECT 'accounts.x'::text AS s,
    data.accounts.y
   FROM tim.accounts`);
  });
});

describe('migrating', () => {
  it('from several processes at once (replicas starting together): each succeeds, the schema once', async () => {
    for (let round = 0; round < 5; round++) {
      const database = await createTestDatabase(`migrate_race_${round}`);
      const dbs = Array.from({ length: 8 }, () => createDb(database.url, { maxConnections: 2 }));
      try {
        // Connected first, so the migrations start together rather than one connection apart.
        await Promise.all(dbs.map((db) => sql`SELECT 1`.execute(db)));
        const results = await Promise.allSettled(dbs.map((db) => migrateToLatest(db)));
        expect(
          results
            .filter((r) => r.status === 'rejected')
            .map((r) => String((r as PromiseRejectedResult).reason)),
        ).toEqual([]);
        const ran = results.flatMap((r) => (r.status === 'fulfilled' ? r.value : []));
        // Every migration ran exactly once among them.
        expect(new Set(ran.map((m) => m.migrationName)).size).toBe(ran.length);
      } finally {
        for (const db of dbs) await db.destroy();
        await database.drop();
      }
    }
  });
});
