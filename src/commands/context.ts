/**
 * What every command receives: where to print, the logger, the environment and a shutdown signal.
 */
import type { Logger } from '../log.js';
import type { ProgressLine } from './progress-line.js';

/** The command-line environment of one command. */
export interface CommandContext {
  env: Record<string, string | undefined>;
  log: Logger;
  /** Human-readable output (stdout). */
  out: (line: string) => void;
  /** Aborted on SIGINT/SIGTERM. */
  signal: AbortSignal;
  stdin: NodeJS.ReadableStream;
  /** Set when stderr is a terminal: long commands draw their progress here instead of logging it. */
  progress?: ProgressLine;
}

/** Exit codes of the CLI (design.md). */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

/** A usage error: the CLI prints it with the help text and exits 2. */
export class UsageError extends Error {
  readonly code = 'USAGE';
}
