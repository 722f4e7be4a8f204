/**
 * The process logger: pino JSON to stderr, so stdout stays free for command output that people
 * pipe (e.g. `accounts list`). Secrets are redacted by path as a second line of defence; the first
 * is that no module puts them in a log object.
 */
import { type Logger, pino } from 'pino';

export type { Logger };

/** Paths pino blanks out wherever they appear. */
export const REDACT_PATHS = [
  'secretKey',
  'userSig',
  'usersig',
  'token',
  'adminToken',
  'callbackToken',
  'authorization',
  'password',
  'databaseUrl',
  '*.secretKey',
  '*.userSig',
  '*.usersig',
  '*.token',
  '*.authorization',
  '*.password',
  '*.databaseUrl',
  'req.headers.authorization',
];

/** Creates the logger. */
export function createLogger(
  level: string,
  destination: pino.DestinationStream = pino.destination(2),
): Logger {
  return pino(
    {
      level,
      base: { app: 'tim-friend-mirror' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
