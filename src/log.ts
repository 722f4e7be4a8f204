/**
 * The process logger: pino JSON to stderr, so stdout stays free for command output that people
 * pipe (e.g. `accounts list`). Secrets are redacted by path as a second line of defence; the first
 * is that no module puts them in a log object.
 */
import { type Logger, pino } from 'pino';
import pretty from 'pino-pretty';

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
  // The same secrets under their environment names, in case an env object is ever logged.
  ...[
    'TIM_SECRET_KEY',
    'TIM_USERSIG',
    'ADMIN_TOKEN',
    'TIM_CALLBACK_TOKEN',
    'DATABASE_URL',
    'TEST_DATABASE_URL',
  ].flatMap((k) => [k, `*.${k}`]),
];

/**
 * Creates the logger: JSON lines by default; human-readable when `format` is `pretty` (the CLI
 * picks that when stderr is a terminal). Redaction applies to both, since it runs before output.
 * `destination` (default stderr) receives the JSON, or the pretty text.
 */
export function createLogger(
  level: string,
  destination?: pino.DestinationStream,
  format: 'json' | 'pretty' = 'json',
): Logger {
  const out =
    format === 'pretty'
      ? pretty({
          destination: destination ?? 2,
          sync: true,
          translateTime: 'SYS:HH:MM:ss.l',
          ignore: 'pid,hostname,app',
        })
      : (destination ?? pino.destination(2));
  return pino(
    {
      level,
      base: { app: 'tim-friend-mirror' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    out,
  );
}
