/**
 * Retrying one call when the error says a retry can help.
 */
import { TimError } from '../tim/errors.js';
import { sleep } from './limiter.js';

/** Options of {@link withRetries}. */
export interface RetryOptions {
  /** Tries in all, the first included. Default 4. */
  attempts?: number;
  /** Backoff base in ms; the n-th retry waits up to base × 2^n. Default 250 ms. */
  baseDelayMs?: number;
  /** Longest single wait in ms. Default 5,000 ms. */
  maxDelayMs?: number;
  signal?: AbortSignal;
  /** Told about each retry (logging). */
  onRetry?: (err: TimError, attempt: number, delayMs: number) => void;
  /** Random source in [0, 1); injectable for tests. */
  random?: () => number;
}

/** Error classes worth another try on the same call. */
// A UserSig lockout is retried too: the limiter holds the retry until the 60 s pause is over.
const RETRY_CLASSES = new Set(['retryable', 'rate-limited', 'bad-response', 'usersig-lockout']);

/** True when retrying the same call may succeed. */
export function isRetryable(err: unknown): err is TimError {
  return err instanceof TimError && RETRY_CLASSES.has(err.retryClass);
}

/**
 * Runs `fn`, retrying transient failures with exponential backoff and full jitter (a random wait
 * between 0 and the capped exponential), so many accounts failing at once do not retry in step.
 */
export async function withRetries<T>(fn: () => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const attempts = opts.attempts ?? 4;
  const base = opts.baseDelayMs ?? 250;
  const cap = opts.maxDelayMs ?? 5_000;
  const random = opts.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= attempts || !isRetryable(err)) throw err;
      // Rate-limited answers wait at least a second: the window they tripped is one second long.
      const floor = err.retryClass === 'rate-limited' ? 1_000 : 0;
      const delay = floor + Math.floor(random() * Math.min(cap, base * 2 ** (attempt - 1)));
      opts.onRetry?.(err, attempt, delay);
      await sleep(delay, opts.signal);
    }
  }
}
