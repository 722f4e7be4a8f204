#!/usr/bin/env node
/**
 * The `friend-mirror` command line. Parses arguments, loads config, wires the parts and maps
 * outcomes to exit codes: 0 success, 1 some accounts failed, 2 bad usage or configuration.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openDb } from './app.js';
import { accountsAdd, accountsImport, accountsList, accountsRemove } from './commands/accounts.js';
import { type CommandContext, EXIT, UsageError } from './commands/context.js';
import { ProgressLine } from './commands/progress-line.js';
import { runCommand } from './commands/run.js';
import { statsCommand } from './commands/stats.js';
import { resyncCommand, statusCommand } from './commands/status.js';
import { syncCommand } from './commands/sync.js';
import {
  ConfigError,
  loadCallbackConfig,
  loadDaemonConfig,
  loadDbConfig,
  loadLogConfig,
  loadSyncConfig,
  loadTimConfig,
} from './config.js';
import { MigrationFailedError, migrateToLatest } from './db/migrate.js';
import { createLogger } from './log.js';

export const HELP = `friend-mirror: a Postgres mirror of Tencent Cloud IM friend lists

usage:
  friend-mirror migrate                         apply all database migrations
  friend-mirror accounts add <id...>            add accounts to mirror
  friend-mirror accounts import <file|->        add accounts from a file or stdin, one per line
  friend-mirror accounts remove <id...>         stop mirroring accounts (deletes their mirrored rows)
  friend-mirror accounts list                   list mirrored accounts
  friend-mirror sync [--all] [<id...>]          one pass, then exit (default: accounts that are due)
  friend-mirror run                             the daemon: sync due accounts until stopped
  friend-mirror resync [--full] (<id...>|--all) make accounts due now; --full forgets their sequences
  friend-mirror status                          account counts by state, lag, last errors
  friend-mirror stats [--json]                  headline numbers: friends, mutual pairs, add sources, changes
  friend-mirror demo                            end to end on the built-in simulator
  friend-mirror simulate                        run the Tencent IM simulator alone

exit codes: 0 ok, 1 some accounts failed, 2 bad usage or configuration
configuration: environment variables, see README.md and .env.sample`;

/**
 * Runs one command line. Returns the exit code instead of exiting, so tests can call it.
 */
export async function main(
  argv: string[],
  io: Partial<CommandContext> & { errOut?: (text: string) => void } = {},
): Promise<number> {
  const out = io.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const errOut = io.errOut ?? ((text: string) => process.stderr.write(text));
  const env = io.env ?? process.env;
  let log: CommandContext['log'];
  // On a terminal, long commands keep a progress line at the bottom; logs are written above it.
  const progress =
    io.progress ??
    (io.log === undefined && process.stderr.isTTY ? new ProgressLine(process.stderr) : undefined);
  try {
    const logCfg = loadLogConfig(env);
    log = io.log ?? createLogger(logCfg.level, progress?.logStream(), logCfg.format);
  } catch (err) {
    errOut(`friend-mirror: ${(err as Error).message}\n`);
    return EXIT.usage;
  }
  const ctx: CommandContext = {
    env,
    log,
    out,
    signal: io.signal ?? new AbortController().signal,
    stdin: io.stdin ?? process.stdin,
    ...(progress ? { progress } : {}),
  };
  try {
    return await dispatch(ctx, argv);
  } catch (err) {
    if (err instanceof UsageError) {
      errOut(`friend-mirror: ${err.message}\n\n${HELP}\n`);
      return EXIT.usage;
    }
    if (err instanceof ConfigError) {
      errOut(`friend-mirror: configuration error: ${err.message}\n`);
      return EXIT.usage;
    }
    if (err instanceof MigrationFailedError) {
      log.fatal({ migration: err.migrationName }, err.message);
      errOut(`friend-mirror: ${err.message}\n`);
      return EXIT.failed;
    }
    log.fatal(
      { err: { message: (err as Error).message, code: (err as { code?: unknown }).code } },
      'command failed',
    );
    errOut(`friend-mirror: ${(err as Error).message}\n`);
    return EXIT.failed;
  }
}

async function dispatch(ctx: CommandContext, argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    ctx.out(HELP);
    return command ? EXIT.ok : EXIT.usage;
  }
  const flags = (options: Record<string, { type: 'boolean' }>) => {
    try {
      return parseArgs({ args: rest, options, allowPositionals: true, strict: true });
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  };

  switch (command) {
    case 'demo': {
      const { demoCommand } = await import('./commands/demo.js');
      return demoCommand(ctx);
    }
    case 'simulate': {
      const { simulateCommand } = await import('./commands/simulate.js');
      return simulateCommand(ctx);
    }
    case 'migrate':
    case 'accounts':
    case 'sync':
    case 'run':
    case 'resync':
    case 'status':
    case 'stats':
      break;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }

  // Parse everything before touching the database, so bad usage never half-runs.
  const parsed = flags({ all: { type: 'boolean' }, full: { type: 'boolean' }, json: { type: 'boolean' } });
  const positionals = parsed.positionals;
  const all = parsed.values.all === true;
  const full = parsed.values.full === true;
  const needsTim = command === 'sync' || command === 'run';
  const tim = needsTim ? loadTimConfig(ctx.env) : undefined;
  const sync = needsTim ? loadSyncConfig(ctx.env) : undefined;
  const daemon = command === 'run' ? loadDaemonConfig(ctx.env) : undefined;
  const callback = command === 'run' ? loadCallbackConfig(ctx.env) : undefined;
  const dbCfg = loadDbConfig(ctx.env);
  if (command === 'accounts' && !['add', 'import', 'remove', 'list'].includes(positionals[0] ?? '')) {
    throw new UsageError('accounts needs one of: add, import, remove, list');
  }

  const db = openDb(dbCfg, ctx.log, sync ? Math.min(sync.concurrency, 8) : 0);
  // `return await` below, not `return`: the pool must outlive the command, and `finally` would
  // otherwise destroy it as soon as the command's promise is returned.
  try {
    // Every command runs on the current schema; migrating is idempotent and a failure stops here.
    await migrateToLatest(db);
    switch (command) {
      case 'migrate':
        ctx.out('migrations are up to date');
        return EXIT.ok;
      case 'accounts': {
        const [sub, ...ids] = positionals;
        if (sub === 'add') return await accountsAdd(ctx, db, ids);
        if (sub === 'remove') return await accountsRemove(ctx, db, ids);
        if (sub === 'list') return await accountsList(ctx, db);
        if (ids.length !== 1) throw new UsageError('accounts import needs one file name, or - for stdin');
        return await accountsImport(ctx, db, ids[0]!);
      }
      case 'sync':
        return await syncCommand(ctx, db, { tim: tim!, sync: sync! }, { all, ids: positionals });
      case 'run':
        return await runCommand(ctx, db, { db: dbCfg, tim: tim!, sync: sync!, daemon: daemon!, callback });
      case 'resync':
        return await resyncCommand(ctx, db, { full, all, ids: positionals });
      case 'stats':
        return await statsCommand(ctx, db, { json: parsed.values.json === true });
      default:
        return await statusCommand(ctx, db);
    }
  } finally {
    await db.destroy();
  }
}

/** Wires process signals: the first asks for a graceful stop, a second exits at once. */
function shutdownSignal(): AbortSignal {
  const ac = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (ac.signal.aborted) process.exit(130);
    process.stderr.write(
      `friend-mirror: ${sig} received, finishing work in flight (send again to exit now)\n`,
    );
    ac.abort(new Error(`${sig} received`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return ac.signal;
}

function isEntryPoint(): boolean {
  try {
    return realpathSync(process.argv[1] ?? '') === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  const code = await main(process.argv.slice(2), { signal: shutdownSignal() });
  process.exitCode = code;
}
