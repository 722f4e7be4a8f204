#!/usr/bin/env node
/**
 * The `friend-mirror` command line. Parses arguments, loads config, wires the parts and maps
 * outcomes to exit codes: 0 success, 1 some accounts failed, 2 bad usage or configuration.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Kysely } from 'kysely';
import { accountsAdd, accountsImport, accountsList, accountsRemove } from './commands/accounts.js';
import { type CommandContext, EXIT, UsageError } from './commands/context.js';
import { ProgressLine } from './commands/progress-line.js';
import { statsCommand } from './commands/stats.js';
import { resyncCommand, statusCommand } from './commands/status.js';
import { COMMANDS, type CommandSpec, commandHelp, HELP, isCommand } from './commands/usage.js';
import {
  ConfigError,
  type DbConfig,
  loadCallbackConfig,
  loadDaemonConfig,
  loadDbConfig,
  loadLogConfig,
  loadSyncConfig,
  loadTimConfig,
  obsoleteSettings,
} from './config.js';
import {
  MigrationFailedError,
  migrateToLatest,
  requireCurrentSchema,
  SchemaBehindError,
} from './db/migrate.js';
import { createDb } from './db/pool.js';
import type { Database } from './db/schema.js';
import { createLogger, type Logger } from './log.js';

export { HELP } from './commands/usage.js';

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
      // The usage of the command at fault, or the list of commands when there is none.
      const command = argv[0];
      errOut(
        `friend-mirror: ${err.message}\n\n${command && isCommand(command) ? commandHelp(command) : HELP}\n`,
      );
      return EXIT.usage;
    }
    if (err instanceof SchemaBehindError) {
      errOut(`friend-mirror: ${err.message}\n`);
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
  if (!isCommand(command)) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  const spec: CommandSpec = COMMANDS[command];

  // Parse everything before reading configuration or touching the database, so `--help` and bad
  // usage never start anything or half-run.
  const parsed = parseCommandArgs(spec, rest);
  if (parsed.values.help === true) {
    ctx.out(commandHelp(command));
    return EXIT.ok;
  }
  const positionals = parsed.positionals;
  if (!spec.positionals && positionals.length > 0) {
    throw new UsageError(`${command} takes no arguments, got ${JSON.stringify(positionals[0])}`);
  }
  if (command === 'accounts' && !['add', 'import', 'remove', 'list'].includes(positionals[0] ?? '')) {
    throw new UsageError('accounts needs one of: add, import, remove, list');
  }
  if (command === 'accounts' && positionals[0] === 'list' && positionals.length > 1) {
    throw new UsageError(`accounts list takes no arguments, got ${JSON.stringify(positionals[1])}`);
  }

  if (command === 'demo') {
    const { demoCommand } = await import('./commands/demo.js');
    return demoCommand(ctx);
  }
  if (command === 'simulate') {
    const { simulateCommand } = await import('./commands/simulate.js');
    return simulateCommand(ctx);
  }

  const all = parsed.values.all === true;
  const full = parsed.values.full === true;
  const readOnly = spec.readOnly === true || (command === 'accounts' && positionals[0] === 'list');
  const needsTim = command === 'sync' || command === 'run';
  const tim = needsTim ? loadTimConfig(ctx.env) : undefined;
  if (needsTim) for (const o of obsoleteSettings(ctx.env)) ctx.log.warn({ variable: o.variable }, o.message);
  const sync = needsTim ? loadSyncConfig(ctx.env) : undefined;
  const daemon = command === 'run' ? loadDaemonConfig(ctx.env) : undefined;
  const callback = command === 'run' ? loadCallbackConfig(ctx.env) : undefined;
  const dbCfg = loadDbConfig(ctx.env);

  const db = openDb(dbCfg, ctx.log, sync ? Math.min(sync.concurrency, 8) : 0);
  // `return await` below, not `return`: the pool must outlive the command, and `finally` would
  // otherwise destroy it as soon as the command's promise is returned.
  try {
    // Every command runs on the current schema. Those that write migrate first (idempotent; a
    // failure stops here); those that only read must work for a role that may not create
    // anything, so they only check, and ask for `friend-mirror migrate` when the schema is behind.
    if (readOnly) await requireCurrentSchema(db);
    else await migrateToLatest(db);
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
      // Loaded here: the Tencent client, the call thread and the daemon's servers are most of the
      // CLI's start-up time, and the other commands need none of them.
      case 'sync': {
        const { syncCommand } = await import('./commands/sync.js');
        return await syncCommand(ctx, db, { tim: tim!, sync: sync! }, { all, ids: positionals });
      }
      case 'run': {
        const { runCommand } = await import('./commands/run.js');
        return await runCommand(ctx, db, { db: dbCfg, tim: tim!, sync: sync!, daemon: daemon!, callback });
      }
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

/** Opens the database pool; idle-connection failures are logged, not fatal. */
function openDb(cfg: DbConfig, log: Logger, extraConnections = 0): Kysely<Database> {
  return createDb(cfg.databaseUrl, {
    maxConnections: cfg.poolSize + extraConnections,
    onIdleError: (err) =>
      log.warn({ err: { message: err.message } }, 'an idle database connection failed; it will be replaced'),
  });
}

/** A command's flags and positional arguments; an unknown option is a {@link UsageError}. */
function parseCommandArgs(
  spec: CommandSpec,
  args: string[],
): { values: Record<string, boolean | undefined>; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args,
      options: { ...spec.options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
    return { values: values as Record<string, boolean | undefined>, positionals };
  } catch (err) {
    const e = err as Error & { code?: string };
    // Node's own text for this case runs on about `--` and positionals; say just what was wrong.
    const unknown = e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? /'([^']+)'/.exec(e.message)?.[1] : undefined;
    throw new UsageError(unknown ? `unknown option ${unknown}` : e.message);
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
