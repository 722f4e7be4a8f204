/**
 * What the main thread and the call thread (`call-thread.ts`, `call-thread-worker.ts`) say to each
 * other: the start settings, the messages, the shared state cells, and errors as plain data.
 *
 * Errors cross as their class and fields, never as message text or `cause`, and are rebuilt as the
 * same {@link TimError} subclasses, so callers on the main thread branch on them as before. Nothing
 * here carries the request path, which holds the UserSig, except the `post` message itself.
 */
import {
  TimAbortError,
  TimDecodeError,
  TimError,
  TimHttpError,
  TimNetworkError,
  TimTimeoutError,
} from '../tim/errors.js';
import type { RateComplaint } from './limiter.js';

/** `workerData` of the call thread. */
export interface CallThreadSettings {
  /** Scheme, host and port of Tencent IM (or a proxy, or the simulator). */
  origin: string;
  timeoutMs: number;
  connections: number;
  maxBodyBytes: number;
  ratePerSecond: number;
  jitterMs: number;
  /** Hold every call this long (ms) at start; see `CallThread` on restarts. */
  holdMs: number;
  /** The {@link STATE} cells, shared with the main thread. */
  state: SharedArrayBuffer;
}

/**
 * Int32 cells the call thread keeps up to date, so the main thread answers `rate`, `slowdownFactor`
 * and `queued()` synchronously, without a round trip.
 */
export const STATE = {
  /** The limiter's effective rate, calls/s. */
  rate: 0,
  /** The slow-down factor in millionths (1 = 1,000,000). */
  factorPpm: 1,
  /** Calls the call thread's limiter holds. */
  queued: 2,
  /** `post` messages the main thread sent (main thread writes). */
  posted: 3,
  /** `post` messages the call thread received (call thread writes). */
  received: 4,
  /** Complaints the limiter took for timing slips; added to, never reset, so they survive a restart. */
  slips: 5,
  /** Complaints the limiter cut the rate for; as `slips`. */
  slowDowns: 6,
} as const;

/** Number of {@link STATE} cells. */
export const STATE_CELLS = 7;

/** Main thread → call thread. */
export type ToCallThread =
  | { type: 'post'; id: number; path: string; body: string }
  | { type: 'abort'; id: number }
  | { type: 'slowDown' }
  | { type: 'pause'; ms: number }
  | { type: 'setRate'; rate: number }
  | { type: 'stop' };

/** Call thread → main thread. `body` is transferred, not copied. */
export type FromCallThread =
  | { type: 'reply'; id: number; body: ArrayBuffer; sentAt: number }
  | { type: 'error'; id: number; error: WireError }
  | { type: 'complaint'; complaint: RateComplaint }
  | { type: 'stopped' };

/** A transport error as data. */
export type WireError = { sentAt?: number } & (
  | { kind: 'http'; status: number }
  | { kind: 'timeout'; timeoutMs: number }
  | { kind: 'network'; detail: string }
  | { kind: 'abort' }
  | { kind: 'decode'; detail: string; permanent: boolean }
  /** The call thread stopped (`stop()`) before the call was sent. */
  | { kind: 'stopped' }
  /** Anything else: a bug in the call thread. Only the error's class name crosses. */
  | { kind: 'other'; name: string }
);

/** Turns what a transport threw into data. */
export function toWire(err: unknown): WireError {
  const sent = err instanceof TimError && err.sentAt !== undefined ? { sentAt: err.sentAt } : {};
  if (err instanceof TimHttpError) return { kind: 'http', status: err.status, ...sent };
  if (err instanceof TimTimeoutError) return { kind: 'timeout', timeoutMs: err.timeoutMs, ...sent };
  if (err instanceof TimNetworkError) return { kind: 'network', detail: err.detail, ...sent };
  if (err instanceof TimAbortError) return { kind: 'abort', ...sent };
  if (err instanceof TimDecodeError)
    return { kind: 'decode', detail: err.detail, permanent: err.retryClass === 'fatal', ...sent };
  return { kind: 'other', name: err instanceof Error ? err.name : typeof err };
}

/** Rebuilds the error {@link toWire} described. */
export function fromWire(w: WireError): TimError {
  let err: TimError;
  switch (w.kind) {
    case 'http':
      err = new TimHttpError(w.status);
      break;
    case 'timeout':
      err = new TimTimeoutError(w.timeoutMs);
      break;
    case 'network':
      err = new TimNetworkError(w.detail);
      break;
    case 'abort':
      err = new TimAbortError();
      break;
    case 'decode':
      err = new TimDecodeError(w.detail, { permanent: w.permanent });
      break;
    case 'stopped':
      err = new TimCallThreadError('the call thread was stopped before this call was sent', {
        permanent: true,
      });
      break;
    case 'other':
      err = new TimCallThreadError(`the call thread failed this call with ${w.name}`);
      break;
  }
  if (w.sentAt !== undefined) err.sentAt = w.sentAt;
  return err;
}

/**
 * The call thread could not answer a call: it crashed (the call may or may not have been sent; a new
 * thread is starting, so it is `retryable`), or it is stopped or gave up restarting (`fatal`: no call
 * can be made, so a pass stops, see `mustStopPass`).
 */
export class TimCallThreadError extends TimError {
  readonly code = 'TIM_ERR_CALL_THREAD';
  readonly retryClass: 'retryable' | 'fatal';
  constructor(message: string, options?: { cause?: unknown; permanent?: boolean }) {
    super(message, options);
    this.retryClass = options?.permanent ? 'fatal' : 'retryable';
  }
}
