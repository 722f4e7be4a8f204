/**
 * What each command accepts, and the help texts: `friend-mirror --help` lists every command,
 * `friend-mirror <command> --help` (or `-h`) explains one. The CLI parses a command's arguments
 * against {@link COMMANDS} before it reads any configuration or opens the database.
 */

/** How one command is called. */
export interface CommandSpec {
  /** Lines of the command list in {@link HELP}: the call, and what it does. */
  synopsis: readonly (readonly [call: string, summary: string])[];
  /** The command's own help, after its synopsis. */
  details: string;
  /** Its `--` options (all flags). `--help`/`-h` is added to every command. */
  options: Readonly<Record<string, { type: 'boolean' }>>;
  /** Whether it takes positional arguments (ids, a file, a subcommand). */
  positionals: boolean;
  /** Reads only: never migrates; says `run friend-mirror migrate` when the schema is behind. */
  readOnly?: boolean;
}

const HELP_OPTION = '  -h, --help      print this help and exit';

/** Every command, in the order `--help` lists them. */
export const COMMANDS = {
  migrate: {
    synopsis: [['migrate', 'apply all database migrations']],
    details: `Applies every pending migration, in order, each in its own transaction; does nothing when the
schema is current. The commands that write (accounts add/import/remove, sync, run, resync) migrate
first as well. status, stats and accounts list only read: they never migrate.

${HELP_OPTION}`,
    options: {},
    positionals: false,
  },
  accounts: {
    synopsis: [
      ['accounts add <id...>', 'add accounts to mirror'],
      ['accounts import <file|->', 'add accounts from a file or stdin, one per line'],
      ['accounts remove <id...>', 'stop mirroring accounts (deletes their mirrored rows)'],
      ['accounts list', 'list mirrored accounts'],
    ],
    details: `import reports empty, invalid and repeated lines by number and skips them; list prints
tab-separated id, status, friend count and last sync (read-only: it never migrates). Ids that
start with "-" go after "--".

${HELP_OPTION}

exit codes: 0 ok, 1 some ids were rejected, 2 bad usage or configuration`,
    options: {},
    positionals: true,
  },
  sync: {
    synopsis: [['sync [--all] [<id...>]', 'one pass, then exit (default: accounts that are due)']],
    details: `One pass, then exit, printing a summary.

  (no arguments)  the accounts that are due
  --all           every active account
  <id...>         just these accounts (even missing ones)
${HELP_OPTION}

exit codes: 0 every account synced, 1 some failed or are missing, 2 bad usage or configuration`,
    options: { all: { type: 'boolean' } },
    positionals: true,
  },
  run: {
    synopsis: [['run', 'the daemon: sync due accounts until stopped']],
    details: `Syncs due accounts until SIGTERM or SIGINT: the first signal finishes the work in flight, a
second exits at once. Configured by environment variables (README.md, "Configuration").

${HELP_OPTION}`,
    options: {},
    positionals: false,
  },
  resync: {
    synopsis: [['resync [--full] (<id...>|--all)', 'make accounts due now; --full forgets their sequences']],
    details: `Makes accounts due now (a missing account rejoins); running daemons start them at once.

  <id...>         these accounts
  --all           every account
  --full          also forget their stored sequences, so everything is re-read and replaced
${HELP_OPTION}

exit codes: 0 ok, 1 some ids are not mirrored, 2 bad usage or configuration`,
    options: { all: { type: 'boolean' }, full: { type: 'boolean' } },
    positionals: true,
  },
  status: {
    synopsis: [['status', 'account counts by state, lag, last errors']],
    details: `Accounts by state, accounts due and how late, friend rows (the per-account counts every sync
keeps; no scan of the friends table), resyncs pending, reconcile backlog, discovered accounts,
running replicas and the last ten errors. Read-only: it never migrates, and exits 2 saying
"run friend-mirror migrate" when the schema is behind.

${HELP_OPTION}`,
    options: {},
    positionals: false,
    readOnly: true,
  },
  stats: {
    synopsis: [['stats [--json]', 'headline numbers: friends, mutual pairs, add sources, changes']],
    details: `Headline numbers from the analytics views: accounts by status, friends, tags, mutual pairs,
top add sources, friends added/removed/changed in the last 24 h and 7 d, sync lag and failing
accounts. Read-only: it never migrates, and exits 2 saying "run friend-mirror migrate" when the
schema is behind.

  --json          print one JSON object
${HELP_OPTION}`,
    options: { json: { type: 'boolean' } },
    positionals: false,
    readOnly: true,
  },
  demo: {
    synopsis: [['demo', 'end to end on the built-in simulator']],
    details: `Starts the simulator (DEMO_ACCOUNTS accounts, default 1000) and, when DATABASE_URL is unset, an
embedded PostgreSQL; mirrors the app, changes some of it, mirrors again, checks the mirror equals
the source and answers a few analytics questions.

${HELP_OPTION}`,
    options: {},
    positionals: false,
  },
  simulate: {
    synopsis: [['simulate', 'run the Tencent IM simulator alone']],
    details: `Runs the Tencent IM simulator until SIGINT/SIGTERM, configured by SIM_* variables (CONTRIBUTING.md,
"Simulator"), and prints the TIM_BASE_URL to point the mirror at.

${HELP_OPTION}`,
    options: {},
    positionals: false,
  },
} satisfies Record<string, CommandSpec>;

/** A command's name. */
export type CommandName = keyof typeof COMMANDS;

/** True when `name` is a command. */
export function isCommand(name: string): name is CommandName {
  return Object.hasOwn(COMMANDS, name);
}

const CALL_WIDTH = 30;

function synopsisLines(spec: CommandSpec): string {
  return spec.synopsis
    .map(([call, summary]) => `  friend-mirror ${call.padEnd(CALL_WIDTH)} ${summary}`.trimEnd())
    .join('\n');
}

/** `friend-mirror --help`. */
export const HELP = `friend-mirror: a Postgres mirror of Tencent Cloud IM friend lists

usage:
${Object.values(COMMANDS as Record<string, CommandSpec>)
  .map(synopsisLines)
  .join('\n')}

friend-mirror <command> --help explains one command.
exit codes: 0 ok, 1 some accounts failed, 2 bad usage or configuration
configuration: environment variables, see README.md and .env.sample`;

/** `friend-mirror <command> --help`. */
export function commandHelp(name: CommandName): string {
  const spec: CommandSpec = COMMANDS[name];
  return `usage:\n${synopsisLines(spec)}\n\n${spec.details}`;
}
