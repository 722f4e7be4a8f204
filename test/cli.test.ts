/**
 * The command line as a new user meets it: env vars, `accounts import -` from stdin, `sync`, exit
 * codes, against a simulator configured away from the defaults (page size 3, the "omit-friend"
 * sequence reading, odd account ids, a 50 calls/s limit).
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { sql } from 'kysely';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { HELP, main } from '../src/cli.js';
import { COMMANDS, type CommandName, commandHelp } from '../src/commands/usage.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { type FriendStore, generateApp, ODD_ACCOUNT_IDS, Simulator } from '../src/simulator/index.js';
import { diffAccount } from '../src/verify.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000123;
const KEY = 'cli-test-key';
const silent = pino({ level: 'silent' });

describe('friend-mirror CLI', () => {
  let database: TestDatabase;
  let sim: Simulator;
  let env: Record<string, string>;

  async function run(argv: string[], stdin?: string) {
    const out: string[] = [];
    let err = '';
    const code = await main(argv, {
      env,
      log: silent,
      out: (l) => out.push(l),
      errOut: (t) => {
        err += t;
      },
      ...(stdin !== undefined ? { stdin: Readable.from([stdin]) } : {}),
    });
    return { code, out, err };
  }

  async function mirrorEqualsSource(): Promise<string[]> {
    const db = createDb(database.url, { maxConnections: 2 });
    try {
      const diffs: string[] = [];
      for (const id of sim.store.accountIds())
        diffs.push(...(await diffAccount(db, id, sim.store.truth(id).friends)));
      const rows = await db.selectFrom('tim.accounts').selectAll().execute();
      for (const r of rows) {
        const t = sim.store.truth(r.account_id);
        if (r.standard_sequence !== t.standardSequence || r.custom_sequence !== t.customSequence) {
          diffs.push(
            `${r.account_id}: sequences ${r.standard_sequence}/${r.custom_sequence} ≠ ${t.standardSequence}/${t.customSequence}`,
          );
        }
      }
      return diffs;
    } finally {
      await db.destroy();
    }
  }

  beforeAll(async () => {
    database = await createTestDatabase('cli');
    const store: FriendStore = generateApp({
      accounts: 25,
      meanFriends: 12,
      maxFriends: 40,
      seed: 3,
      oddIds: true,
    });
    sim = new Simulator({
      store,
      sdkAppId: APP,
      secretKey: KEY,
      pageSize: 3,
      sequenceReading: 'omit-friend',
      rateLimit: 50,
    });
    const baseUrl = await sim.listen();
    env = {
      DATABASE_URL: database.url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: baseUrl,
      TIM_RATE_LIMIT: '50',
      // The simulator runs on this test's event loop; cover its lag under a loaded test run.
      TIM_RATE_JITTER_MS: '100',
      SYNC_CONCURRENCY: '8',
    };
  });
  afterAll(async () => {
    await sim?.close();
    await database?.drop();
  });

  it('imports ids from stdin, reporting bad lines by number and keeping the rest', async () => {
    const ids = sim.store.accountIds();
    expect(ids.some((id) => ODD_ACCOUNT_IDS.includes(id))).toBe(true);
    const input = [...ids.slice(0, 10), '', ids[0]!, 'x'.repeat(33), ...ids.slice(10)].join('\n');
    const r = await run(['accounts', 'import', '-'], input);
    expect(r.code).toBe(1);
    expect(r.out).toContain('line 11: empty line; skipped');
    expect(r.out.some((l) => l.startsWith('line 12:') && l.includes('repeats'))).toBe(true);
    expect(r.out.some((l) => l.startsWith('line 13:') && l.includes('33 bytes'))).toBe(true);
    expect(r.out.at(-1)).toContain(`added ${ids.length}`);
    const list = await run(['accounts', 'list']);
    expect(list.out).toHaveLength(ids.length);
  });

  it('mirrors every account exactly, then incrementally, never above TIM_RATE_LIMIT', async () => {
    // Paced on the main thread (TIM_CALL_THREAD=false): the simulator answers on this test's event
    // loop, so it stamps a call's arrival only when that loop gets to it. The call thread sends on
    // time while this loop decodes pages and writes SQL, and the stamps of calls sent over one window
    // can bunch into less than a second behind a stall; paced on this loop, sends wait for the same
    // stalls. The call thread's quota at a simulator in a process of its own is held by
    // call-thread.process.test.ts; the other tests here run it.
    const saved = env;
    env = { ...env, TIM_CALL_THREAD: 'false' };
    onTestFinished(() => {
      env = saved;
    });
    const first = await run(['sync', '--all']);
    expect(first.code, first.out.join('\n')).toBe(0);
    expect(first.out[0]).toMatch(/^synced 25\/25 account\(s\)/);
    expect(await mirrorEqualsSource()).toEqual([]);

    const changed = new Set(sim.store.mutateRandom({ fraction: 0.2, seed: 9 }));
    sim.clearCalls();
    const second = await run(['sync', '--all']);
    expect(second.code).toBe(0);
    expect(await mirrorEqualsSource()).toEqual([]);
    const perAccount = new Map<string, number>();
    for (const c of sim.calls()) perAccount.set(c.account!, (perAccount.get(c.account!) ?? 0) + 1);
    for (const id of sim.store.accountIds()) if (!changed.has(id)) expect(perAccount.get(id), id).toBe(1);
    expect(sim.stats().rateLimited).toBe(0);
    expect(sim.maxCallsInWindow(1000)).toBeLessThanOrEqual(50);
  });

  it('syncs only what is due by default, and resync makes accounts due again', async () => {
    const idle = await run(['sync']);
    expect(idle.code).toBe(0);
    expect(idle.out[0]).toMatch(/^synced 0\/0/);
    const id = sim.store.accountIds()[0]!;
    expect((await run(['resync', '--full', id])).code).toBe(0);
    const again = await run(['sync']);
    expect(again.out[0]).toMatch(/^synced 1\/1 account\(s\)/);
    expect(await mirrorEqualsSource()).toEqual([]);
    const status = await run(['status']);
    expect(status.out[0]).toMatch(/^accounts: 25 \(.*ok 25/);
  });

  it('exits 1 when an account is missing at Tencent, and marks it', async () => {
    expect((await run(['accounts', 'add', 'nobody-here'])).code).toBe(0);
    const r = await run(['sync', 'nobody-here']);
    expect(r.code).toBe(1);
    expect(r.out[0]).toContain('1 missing');
    expect((await run(['accounts', 'remove', 'nobody-here'])).code).toBe(0);
  });

  it('exits 2 with a one-line message naming the variable on bad configuration', async () => {
    const saved = { ...env };
    try {
      for (const [name, value] of [
        ['TIM_RATE_LIMIT', 'fast'],
        ['SYNC_INTERVAL', 'soon'],
        ['TIM_REGION', 'mars'],
        ['TIM_BASE_URL', 'http://example.com'],
        ['DATABASE_URL', 'mysql://x'],
        ['TIM_CALL_THREAD', 'maybe'],
      ] as const) {
        env = { ...saved, [name]: value };
        const r = await run(['sync', '--all']);
        expect(r.code, name).toBe(2);
        expect(r.err.trim().split('\n'), name).toHaveLength(1);
        expect(r.err, name).toContain(name);
      }
      env = { ...saved, TIM_USERSIG: 'also-set' };
      const both = await run(['sync']);
      expect(both.code).toBe(2);
      expect(both.err).not.toContain('also-set');
      expect(both.err).not.toContain(KEY);
    } finally {
      env = saved;
    }
  });

  it('accepts an obsolete setting (TIM_CALL_THREAD_NICE, even out of its old range) and warns once that it is ignored', async () => {
    const saved = { ...env };
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
    try {
      env = { ...saved, TIM_CALL_THREAD_NICE: '-30' };
      const code = await main(['sync'], { env, log, out: () => {}, errOut: () => {} });
      expect(code).toBe(0);
      const warned = lines
        .map((l) => JSON.parse(l) as { variable?: string; msg: string })
        .filter((l) => l.variable === 'TIM_CALL_THREAD_NICE');
      expect(warned).toHaveLength(1);
      expect(warned[0]!.msg).toBe(
        'TIM_CALL_THREAD_NICE is ignored (the call thread no longer changes its priority) and can be removed',
      );
    } finally {
      env = saved;
    }
  });

  it('exits 2 when Tencent reports a configuration error, and stops calling', async () => {
    const saved = { ...env };
    try {
      env = { ...saved, TIM_IDENTIFIER: 'not-an-admin' };
      sim.clearCalls();
      await run(['resync', '--all']);
      const r = await run(['sync']);
      expect(r.code).toBe(2);
      expect(r.out.join('\n')).toContain('30004');
      // The pass stops at the first such answer instead of trying every account.
      expect(sim.calls().length).toBeLessThan(10);
    } finally {
      env = saved;
    }
  });

  it('exits 1 when a proxy refuses the calls (HTTP 403): the pass stops and says why, no restart needed', async () => {
    await run(['resync', '--all']);
    sim.clearCalls();
    sim.injectFaults('http-403', 1);
    const r = await run(['sync']);
    expect(r.code).toBe(1);
    expect(r.out.join('\n')).toMatch(/stopped early: Tencent IM answered HTTP 403 \(fix: .*TIM_BASE_URL\)/);
    expect(sim.calls().length).toBeLessThan(10);
    // Once the proxy lets calls through, the next pass completes.
    expect((await run(['sync'])).code).toBe(0);
  });

  it('exits 2 on bad usage', async () => {
    expect((await run(['frobnicate'])).code).toBe(2);
    expect((await run(['sync', '--bogus'])).code).toBe(2);
    expect((await run(['resync'])).code).toBe(2);
    expect((await run(['accounts'])).code).toBe(2);
  });

  it('status reports the friend rows without reading tim.friends, and they equal a recount', async () => {
    // Mirror rows of every kind of history: changed, resynced in full, removed, missing.
    await run(['accounts', 'add', 'nobody-here-either']);
    await run(['sync', '--all']);
    sim.store.mutateRandom({ fraction: 0.3, seed: 21 });
    await run(['resync', '--full', sim.store.accountIds()[1]!]);
    await run(['sync', '--all']);
    await run(['accounts', 'remove', sim.store.accountIds()[2]!]);
    const db = createDb(database.url, { maxConnections: 1 });
    // Anything that reads tim.friends (a scan, an index, even planning a query on it) waits for
    // this lock: status must finish while it is held.
    const locker = new pg.Client({ connectionString: database.url });
    await locker.connect();
    try {
      const recount = await sql<{ n: string }>`SELECT count(*) AS n FROM tim.friends`.execute(db);
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE tim.friends IN ACCESS EXCLUSIVE MODE');
      const status = await Promise.race([
        run(['status']),
        new Promise<'blocked'>((r) => setTimeout(() => r('blocked'), 5_000)),
      ]);
      await locker.query('ROLLBACK');
      expect(status, 'status waited for the lock on tim.friends').not.toBe('blocked');
      if (status === 'blocked') return;
      expect(status.code).toBe(0);
      expect(status.out).toContain(`friend rows: ${recount.rows[0]!.n}`);
      expect(Number(recount.rows[0]!.n)).toBeGreaterThan(0);
    } finally {
      await locker.end();
      await db.destroy();
    }
  });
});

describe('per-command help and usage errors', () => {
  // Nothing may be read or started: the database does not exist, and TIM is not configured.
  const env = { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nowhere', SIM_PORT: '0' };
  const commands = Object.keys(COMMANDS) as CommandName[];

  async function run(argv: string[]) {
    const out: string[] = [];
    let err = '';
    // Already aborted: a command that starts anything anyway stops at once instead of hanging the test.
    const ac = new AbortController();
    ac.abort(new Error('test'));
    const code = await main(argv, {
      env,
      log: silent,
      out: (l) => out.push(l),
      errOut: (t) => {
        err += t;
      },
      signal: ac.signal,
    });
    return { code, out, err };
  }

  it('friend-mirror --help lists every command and exits 0', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    expect(r.out).toEqual([HELP]);
    for (const c of commands) expect(HELP, c).toContain(`friend-mirror ${c}`);
    expect((await run([])).code).toBe(2);
  });

  it.each(commands)('%s --help and -h print its usage, exit 0 and start nothing', async (c) => {
    const lines = c === 'accounts' ? [[c], [c, 'list'], [c, 'import']] : [[c]];
    for (const flag of ['--help', '-h']) {
      for (const line of lines) {
        const r = await run([...line, flag]);
        expect(r, `${line.join(' ')} ${flag}`).toEqual({ code: 0, out: [commandHelp(c)], err: '' });
      }
      expect(commandHelp(c)).toContain(`friend-mirror ${c}`);
    }
  });

  it.each(commands)('%s with an unknown option exits 2 with its usage on stderr', async (c) => {
    const r = await run([c, '--bogus']);
    expect(r.code).toBe(2);
    expect(r.out).toEqual([]);
    expect(r.err).toBe(`friend-mirror: unknown option --bogus\n\n${commandHelp(c)}\n`);
  });

  it('options of other commands are unknown, and commands without arguments refuse them', async () => {
    expect((await run(['sync', '--full'])).err).toContain('unknown option --full');
    expect((await run(['status', '--json'])).err).toContain('unknown option --json');
    const extra = await run(['status', 'now']);
    expect(extra.code).toBe(2);
    expect(extra.err).toContain('status takes no arguments');
    expect((await run(['accounts', 'list', 'x'])).code).toBe(2);
    // After `--`, a leading dash is an id, not an option.
    expect((await run(['accounts', 'remove', '--', '--help'])).err).not.toContain('unknown option');
  });
});

describe('read-only commands', () => {
  let database: TestDatabase;
  let admin: ReturnType<typeof createDb>;
  const role = `fm_reader_${randomBytes(4).toString('hex')}`;
  let readerUrl: string;

  async function run(argv: string[], url: string) {
    const out: string[] = [];
    let err = '';
    const code = await main(argv, {
      env: { DATABASE_URL: url },
      log: silent,
      out: (l) => out.push(l),
      errOut: (t) => {
        err += t;
      },
    });
    return { code, out, err };
  }

  beforeAll(async () => {
    database = await createTestDatabase('cli_readonly');
    admin = createDb(database.url, { maxConnections: 2 });
    await migrateToLatest(admin);
    await sql`INSERT INTO tim.accounts (account_id) VALUES ('reader-sees-me')`.execute(admin);
    // Connect and read, nothing more: no CREATE on the database or the schema, no writes.
    await sql.raw(`CREATE ROLE ${role} LOGIN PASSWORD 'reader'`).execute(admin);
    await sql.raw(`REVOKE ALL ON DATABASE "${database.name}" FROM PUBLIC`).execute(admin);
    await sql.raw(`GRANT CONNECT ON DATABASE "${database.name}" TO ${role}`).execute(admin);
    await sql.raw(`GRANT USAGE ON SCHEMA tim TO ${role}`).execute(admin);
    await sql.raw(`GRANT SELECT ON ALL TABLES IN SCHEMA tim TO ${role}`).execute(admin);
    const url = new URL(database.url);
    url.username = role;
    url.password = 'reader';
    readerUrl = url.toString();
  });
  afterAll(async () => {
    await admin?.destroy();
    await database?.drop();
    const adminUrl = new URL(database.url);
    adminUrl.pathname = '/postgres';
    const cleanup = createDb(adminUrl.toString(), { maxConnections: 1 });
    try {
      await sql.raw(`DROP ROLE IF EXISTS ${role}`).execute(cleanup);
    } finally {
      await cleanup.destroy();
    }
  });

  const readOnly = ['status', 'stats', 'accounts list'];

  it.each(readOnly)('%s works for a role without CREATE', async (command) => {
    const argv = command.split(' ');
    const r = await run(argv, readerUrl);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out.join('\n')).toMatch(argv[0] === 'accounts' ? /^reader-sees-me\t/ : /accounts: 1 /);
  });

  it('says "run friend-mirror migrate" when the schema is behind, and changes nothing', async () => {
    const last = await sql<{ name: string; timestamp: string }>`
      SELECT name, timestamp FROM tim.kysely_migration ORDER BY name DESC LIMIT 1`.execute(admin);
    const row = last.rows[0]!;
    await sql`DELETE FROM tim.kysely_migration WHERE name = ${row.name}`.execute(admin);
    try {
      for (const command of readOnly) {
        for (const url of [readerUrl, database.url]) {
          const r = await run(command.split(' '), url);
          expect(r.code, command).toBe(2);
          expect(r.out).toEqual([]);
          expect(r.err).toMatch(/^friend-mirror: .*: run friend-mirror migrate\n$/);
        }
      }
      // Not even the owner's read-only command migrated.
      const after = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM tim.kysely_migration WHERE name = ${row.name}`.execute(admin);
      expect(after.rows[0]!.n).toBe(0);
    } finally {
      await sql`INSERT INTO tim.kysely_migration (name, timestamp) VALUES (${row.name}, ${row.timestamp})`.execute(
        admin,
      );
    }
    expect((await run(['status'], readerUrl)).code).toBe(0);
  });

  it('a database never migrated gets the same answer', async () => {
    const fresh = await createTestDatabase('cli_unmigrated');
    try {
      const r = await run(['status'], fresh.url);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/run friend-mirror migrate\n$/);
      const db = createDb(fresh.url, { maxConnections: 1 });
      const schemas = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'tim'`.execute(db);
      await db.destroy();
      expect(schemas.rows[0]!.n).toBe(0);
    } finally {
      await fresh.drop();
    }
  });
});
