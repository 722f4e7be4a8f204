/**
 * One fresh database per test file, on the server that `global-setup.ts` chose for the run.
 *
 * Files run in parallel, each in its own database, so schemas (`tim`), migrations and data never
 * collide, and no file depends on what another left behind.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { runComment } from './run-databases.js';

/** A database created for one test file. */
export interface TestDatabase {
  /** Connection URL of the new database (same server and credentials as the admin URL). */
  url: string;
  /** Its name, e.g. `fmtest_friends_3f9a1c02b7`. */
  name: string;
  /**
   * Drops it. Rejects, naming the sessions, when connections to it are still open after the server's
   * grace (see {@link LeakedSessionsError}); the database is removed all the same. Safe to call twice.
   */
  drop(): Promise<void>;
}

/**
 * Sessions still connected to a test's database when it was dropped: a pool or client the test
 * opened and never closed (or a child process still running). Its message names the database and
 * each session's `application_name`, state and last query, so the leak can be found.
 */
export class LeakedSessionsError extends Error {
  constructor(
    readonly database: string,
    readonly sessions: readonly LeakedSession[],
    cleanup = 'then ended them and dropped it',
  ) {
    super(
      `${sessions.length} session(s) still connected to test database ${database} at its drop ` +
        `(${cleanup}): close every pool, client and child process that uses it before drop()\n` +
        sessions.map((s) => `  - ${describeSession(s)}`).join('\n'),
    );
    this.name = 'LeakedSessionsError';
  }
}

/** One row of `pg_stat_activity` (or a prepared transaction) that kept a database alive. */
export interface LeakedSession {
  pid: number | null;
  applicationName: string;
  state: string | null;
  query: string;
  backendStart: Date | null;
}

/** Postgres truncates identifiers longer than this; a truncated name could collide. */
const MAX_IDENTIFIER_BYTES = 63;
const PREFIX = 'fmtest';
/** `DROP DATABASE ... WITH (FORCE)`, which clears a leaked database after reporting it, appeared in PostgreSQL 13. */
const MIN_SERVER_VERSION_NUM = 130_000;
/** Postgres's error code for DROP DATABASE while "the database is being accessed by other users". */
const OBJECT_IN_USE = '55006';
/** A query longer than this is cut in the leak message. */
const MAX_QUERY_CHARS = 200;

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
    // The global teardown finds this run's databases that no file dropped by this mark.
    await client.query(
      `comment on database ${client.escapeIdentifier(name)} is ${client.escapeLiteral(runComment(inject('testRunId')))}`,
    );
  });

  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  let dropping: Promise<void> | undefined;
  return {
    url: url.toString(),
    name,
    drop: () => {
      dropping ??= withAdmin(adminUrl, (client) => dropOrReportLeaks(client, name));
      return dropping;
    },
  };
}

/**
 * Drops `name` without FORCE, so a connection a test leaked fails that test's cleanup instead of
 * being ended silently. The server itself waits up to 5 s for other sessions to go before it refuses
 * (CountOtherDBBackends), which covers a pool whose backends are still exiting after `end()`. On
 * refusal the sessions are read for the message, then ended and the database dropped all the same,
 * so one leak does not leave databases behind on a shared server.
 */
async function dropOrReportLeaks(client: pg.Client, name: string): Promise<void> {
  const ident = client.escapeIdentifier(name);
  try {
    await client.query(`drop database if exists ${ident}`);
    return;
  } catch (err) {
    if ((err as { code?: string }).code !== OBJECT_IN_USE) throw err;
  }
  const sessions = await sessionsOn(client, name);
  try {
    await client.query(`drop database if exists ${ident} with (force)`);
  } catch (err) {
    // A prepared transaction refuses even FORCE: the leak is still what to report.
    throw new LeakedSessionsError(name, sessions, `and it could not be dropped: ${(err as Error).message}`);
  }
  throw new LeakedSessionsError(name, sessions);
}

/** Who is connected to `name`, plus its prepared transactions, oldest first. */
async function sessionsOn(client: pg.Client, name: string): Promise<LeakedSession[]> {
  const { rows } = await client.query<{
    pid: number | null;
    application_name: string;
    state: string | null;
    query: string;
    backend_start: Date | null;
  }>(
    `select pid, application_name, state, query, backend_start
       from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()
     union all
     select null, 'prepared transaction ' || gid, null, '', prepared
       from pg_prepared_xacts where database = $1
     order by backend_start nulls last`,
    [name],
  );
  return rows.map((r) => ({
    pid: r.pid,
    applicationName: r.application_name,
    state: r.state,
    query: r.query,
    backendStart: r.backend_start,
  }));
}

function describeSession(s: LeakedSession): string {
  const query = s.query.replace(/\s+/g, ' ').trim();
  const cut = query.length > MAX_QUERY_CHARS ? `${query.slice(0, MAX_QUERY_CHARS)}…` : query;
  return [
    s.pid === null ? '' : `pid ${s.pid}`,
    `application_name ${JSON.stringify(s.applicationName)}`,
    s.state ? `state ${s.state}` : '',
    s.backendStart ? `connected since ${s.backendStart.toISOString()}` : '',
    cut ? `last query: ${cut}` : '',
  ]
    .filter(Boolean)
    .join(', ');
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
