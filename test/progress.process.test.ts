/**
 * Progress on long one-shot work: `sync` and `accounts import` run as real processes, once under a
 * pseudo-terminal (util-linux `script`, as a person at a terminal would see them) and once with
 * pipes (as a log collector would). On the terminal the progress line is redrawn in place and
 * cleared before the summary; through pipes there is no escape code at all.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addAccounts } from '../src/db/accounts.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { FriendStore, Simulator } from '../src/simulator/index.js';
import { buildCli } from './fixtures/build.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000999;
const KEY = 'progress-test-key';
const ACCOUNTS = 150;
const CLEAR = '\r\x1b[2K';

/** The output with each line erase spelled `<CLEAR>`, so patterns need no control characters. */
const shown = (output: string) => output.replaceAll(CLEAR, '<CLEAR>');

/** Runs `node <cli> <args>` and collects everything it prints; under a pty when `tty`. */
function runCli(
  cli: string,
  args: string[],
  env: Record<string, string>,
  tty: boolean,
): Promise<{ code: number | null; output: string; stderr: string }> {
  const quoted = [process.execPath, cli, ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  // `script` gives the command a terminal; a wide one, so no progress line is cut.
  const child = tty
    ? spawn('script', ['-qfec', `stty cols 200; exec ${quoted}`, '/dev/null'], {
        env: { ...process.env, ...env },
        stdio: ['pipe', 'pipe', 'pipe'],
      })
    : spawn(process.execPath, [cli, ...args], {
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
  let output = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => {
    output += d.toString('utf8');
  });
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, output, stderr })));
}

describe('progress of sync and accounts import', () => {
  let cli: string;
  let database: TestDatabase;
  let db: ReturnType<typeof createDb>;
  let sim: Simulator;
  let env: Record<string, string>;
  let dir: string;
  const ids = Array.from({ length: ACCOUNTS }, (_, i) => `pg_${String(i).padStart(3, '0')}`);

  beforeAll(async () => {
    cli = await buildCli();
    dir = mkdtempSync(join(tmpdir(), 'fm-progress-'));
    database = await createTestDatabase('progress');
    db = createDb(database.url, { maxConnections: 2 });
    await migrateToLatest(db);
    const store = new FriendStore();
    for (const id of ids) store.addAccount(id);
    for (const [i, id] of ids.entries()) store.addFriend(id, ids[(i + 1) % ids.length]!, {});
    await addAccounts(db, ids);
    sim = new Simulator({ store, sdkAppId: APP, secretKey: KEY, rateLimit: 0 });
    env = {
      DATABASE_URL: database.url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: await sim.listen(),
      // About 2.5 s for the pass: long enough for a dozen redraws.
      TIM_RATE_LIMIT: '60',
      LOG_LEVEL: 'warn',
    };
  }, 120_000);

  afterAll(async () => {
    await sim?.close();
    await db?.destroy();
    await database?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('sync on a terminal redraws one progress line, then clears it for the summary', async () => {
    const r = await runCli(cli, ['sync', '--all'], env, true);
    expect(r.code, r.output).toBe(0);
    const draws = [
      ...shown(r.output).matchAll(
        /<CLEAR>sync (\d+)\/(\d+) accounts · [\d.]+ calls\/s · [\d,]+ rows written · ETA [\dhms?]+/g,
      ),
    ];
    expect(draws.length).toBeGreaterThanOrEqual(3);
    const done = draws.map((m) => Number(m[1]));
    expect(done).toEqual([...done].sort((a, b) => a - b));
    expect(draws.every((m) => Number(m[2]) === ACCOUNTS)).toBe(true);
    expect(done.at(-1)).toBe(ACCOUNTS);
    // The last thing before the summary is the erase, so the summary starts on a clean line.
    expect(shown(r.output)).toContain(`<CLEAR>synced ${ACCOUNTS}/${ACCOUNTS} account(s)`);
  }, 60_000);

  it('sync through pipes prints no escape code and no progress line', async () => {
    const r = await runCli(cli, ['sync', '--all'], { ...env, LOG_LEVEL: 'info' }, false);
    expect(r.code, r.stderr).toBe(0);
    expect(r.output).toContain(`synced ${ACCOUNTS}/${ACCOUNTS} account(s)`);
    expect(r.output + r.stderr).not.toContain('\x1b[');
    expect(r.output + r.stderr).not.toMatch(/sync \d+\/\d+ accounts ·/);
    // The log stays JSON lines, one per line.
    for (const line of r.stderr.split('\n').filter(Boolean)) expect(() => JSON.parse(line)).not.toThrow();
  }, 60_000);

  it('accounts import of a file on a terminal shows lines, share and ETA', async () => {
    const file = join(dir, 'ids.txt');
    const n = 60_000;
    writeFileSync(file, `${Array.from({ length: n }, (_, i) => `imp_${i}`).join('\n')}\n`);
    const r = await runCli(cli, ['accounts', 'import', file], env, true);
    expect(r.code, r.output).toBe(0);
    const draws = [
      ...shown(r.output).matchAll(/<CLEAR>import ([\d,]+) lines · (\d+)% · [\d,]+ lines\/s · ETA [\dhms?]+/g),
    ];
    expect(draws.length).toBeGreaterThanOrEqual(1);
    const shares = draws.map((m) => Number(m[2]));
    expect(shares).toEqual([...shares].sort((a, b) => a - b));
    expect(shown(r.output)).toContain(`<CLEAR>read ${n} line(s): added ${n}`);
  }, 60_000);
});
