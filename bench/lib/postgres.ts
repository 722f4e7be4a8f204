/**
 * The benchmark's PostgreSQL: the same choice as the tests, minus containers. `BENCH_DATABASE_URL`,
 * else `TEST_DATABASE_URL`, else an embedded server started for the run (tuned for throwaway data:
 * `fsync=off`, `synchronous_commit=off`). Every scenario gets a fresh database of its own on it.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../src/db/embedded.js';

/** The server the run uses. */
export interface BenchServer {
  /** Superuser URL; scenarios create their databases here. */
  adminUrl: string;
  /** How it was chosen, for the report. */
  source: 'BENCH_DATABASE_URL' | 'TEST_DATABASE_URL' | 'embedded';
  /** `server_version`, plus the durability settings that matter to write throughput. */
  version: string;
  settings: Record<string, string>;
  stop(): Promise<void>;
}

/** Starts or connects to the server. */
export async function chooseServer(env: NodeJS.ProcessEnv = process.env): Promise<BenchServer> {
  let adminUrl: string;
  let source: BenchServer['source'];
  let stop = async () => {};
  if (env.BENCH_DATABASE_URL) {
    adminUrl = env.BENCH_DATABASE_URL;
    source = 'BENCH_DATABASE_URL';
  } else if (env.TEST_DATABASE_URL) {
    adminUrl = env.TEST_DATABASE_URL;
    source = 'TEST_DATABASE_URL';
  } else {
    const server = await startEmbeddedPostgres();
    adminUrl = server.url;
    source = 'embedded';
    stop = server.stop;
  }
  const settings: Record<string, string> = {};
  let version = '';
  await withClient(adminUrl, async (c) => {
    version = (await c.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v;
    for (const name of ['fsync', 'synchronous_commit', 'shared_buffers', 'max_connections']) {
      settings[name] = (await c.query<{ v: string }>(`SELECT current_setting('${name}') AS v`)).rows[0]!.v;
    }
  });
  return { adminUrl, source, version, settings, stop };
}

/** A database made for one scenario. */
export interface ScratchDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

/** Creates an empty database `fmbench_<label>_<hex>` on the server. */
export async function createScratchDatabase(adminUrl: string, label: string): Promise<ScratchDatabase> {
  const name = `fmbench_${label.replace(/[^a-z0-9_]+/g, '_').slice(0, 30)}_${randomBytes(4).toString('hex')}`;
  await withClient(adminUrl, (c) => c.query(`CREATE DATABASE ${c.escapeIdentifier(name)}`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  let dropping: Promise<void> | undefined;
  return {
    url: url.toString(),
    name,
    drop: () => {
      dropping ??= withClient(adminUrl, async (c) => {
        await c.query(`DROP DATABASE IF EXISTS ${c.escapeIdentifier(name)} WITH (FORCE)`);
      });
      return dropping;
    },
  };
}

/** Runs `work` on one short-lived connection. */
export async function withClient<T>(url: string, work: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}
