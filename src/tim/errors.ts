/**
 * Typed errors of the Tencent IM client.
 *
 * Callers branch on `code` (stable strings, like undici's `UND_ERR_*`) or on `retryClass`,
 * never on message text. Messages never contain the UserSig, the secret key or the request URL,
 * because the URL carries the UserSig.
 */

/**
 * What a caller should do about an error, decided once here from the TIM `ErrorCode` tables
 * in tim-api.md:
 * - `retryable`: transient; retry with backoff.
 * - `rate-limited`: too frequent; slow the whole process down, then retry.
 * - `usersig-refresh`: the UserSig expired or was invalidated; make a new one and retry once.
 * - `usersig-lockout`: too many failed UserSig checks (70050); pause every call for at least 60 s.
 * - `account-missing`: the account does not exist (30003); mark it missing.
 * - `fatal-config`: a setting of this process is wrong (SDKAppID, identifier, key or UserSig,
 *    region or URL), which no retry fixes; stop calling and tell the operator which variable to fix.
 * - `refused`: every call is refused for a reason outside this process's settings: a proxy's or
 *    gateway's HTTP 4xx, the app disabled or its plan expired in the IM console, this IP not on the
 *    allowlist. Fixed elsewhere, so pause every call and try again later; no restart is needed.
 * - `bad-response`: the server's answer could not be trusted; nothing from it is applied. Retried,
 *    since it is usually a truncated body or a proxy page.
 * - `fatal`: anything else that retrying will not fix for this account.
 */
export type RetryClass =
  | 'retryable'
  | 'rate-limited'
  | 'usersig-refresh'
  | 'usersig-lockout'
  | 'account-missing'
  | 'fatal-config'
  | 'refused'
  | 'bad-response'
  | 'fatal';

const RETRYABLE = new Set([30006, 30007, 60008, 70169, 70202, 70500]);
const RATE_LIMITED = new Set([60007, 60011, 60018, 60019]);
const USERSIG_REFRESH = new Set([70001, 70052]);
const FATAL_CONFIG = new Set([
  30004, 60002, 60004, 60005, 60006, 60010, 70003, 70005, 70009, 70013, 70014, 70016, 70020, 70403,
]);
/** Fixed in the IM console, not in our settings: a later try succeeds without a restart. */
const REFUSED = new Set([60016, 60020, 60021]);

/** Maps a TIM `ErrorCode` to what the caller should do about it. */
export function classifyTimErrorCode(errorCode: number): RetryClass {
  if (RETRYABLE.has(errorCode)) return 'retryable';
  if (RATE_LIMITED.has(errorCode)) return 'rate-limited';
  if (USERSIG_REFRESH.has(errorCode)) return 'usersig-refresh';
  if (errorCode === 70050) return 'usersig-lockout';
  // 70107 "account not imported" says the same of an account as 30003 does. Treating it as missing
  // (re-checked every SYNC_MISSING_RECHECK, daily by default) rather than fatal keeps one unimported account from stopping every sync.
  if (errorCode === 30003 || errorCode === 70107) return 'account-missing';
  if (FATAL_CONFIG.has(errorCode)) return 'fatal-config';
  if (REFUSED.has(errorCode)) return 'refused';
  // 60003 (request JSON rejected) lands here too: the only part of our JSON that varies is the
  // account id, so it is about that account, and stopping every sync for it would be wrong.
  return 'fatal';
}

/** Operator-facing advice for the fatal-config codes, so the log line says what to fix. */
const FIX_HINTS: Record<number, string> = {
  30004: 'TIM_IDENTIFIER must be an app administrator account',
  60002: 'the request URL was rejected; check TIM_BASE_URL / TIM_REGION',
  60003: 'the request JSON was rejected; please report this as a bug with the account id',
  60004: 'TIM_IDENTIFIER is not a valid UserID',
  60005: 'the UserSig was rejected; check TIM_SECRET_KEY or TIM_USERSIG',
  60006: 'TIM_SDKAPPID is invalid',
  60010: 'TIM_IDENTIFIER must be an app administrator account',
  60016: 'the SDKAppID is disabled: enable it in the IM console',
  60020: 'the IM plan has expired: renew it in the IM console',
  60021: "this machine's IP is not on the app's allowlist: add it in the IM console",
  70003: 'the UserSig signature is wrong; TIM_SECRET_KEY may belong to another app',
  70005: 'the UserSig signature is wrong; TIM_SECRET_KEY may belong to another app',
  70009: 'the UserSig signature is wrong; TIM_SECRET_KEY may belong to another app',
  70013: 'TIM_IDENTIFIER differs from the identifier inside TIM_USERSIG',
  70014: 'TIM_SDKAPPID differs from the SDKAppID inside the UserSig',
  70016: 'the key was not found: check TIM_SECRET_KEY and TIM_REGION',
  70020: 'the SDKAppID was not found: check TIM_SDKAPPID and TIM_REGION',
  70403: 'TIM_IDENTIFIER must be an app administrator account',
};

const UNRENEWABLE_HINT =
  'TIM_USERSIG has expired or was invalidated: set a new one, or set TIM_SECRET_KEY instead so UserSigs are renewed';

/** Base class of every client error. */
export abstract class TimError extends Error {
  /** Stable machine-readable code, e.g. `TIM_ERR_API`. */
  abstract readonly code: string;
  /** What the caller should do about it. */
  abstract readonly retryClass: RetryClass;
  /**
   * When the request that failed was sent, in absolute milliseconds (`performance.timeOrigin +
   * performance.now()`, comparable across threads); absent when it was never sent (e.g. aborted
   * while it waited for its turn). Set by the transport, so call metrics time the HTTP call and not
   * the wait before it.
   */
  sentAt?: number;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The API answered with `ActionStatus: FAIL` / a non-zero `ErrorCode`. */
export class TimApiError extends TimError {
  readonly code = 'TIM_ERR_API';
  readonly retryClass: RetryClass;
  /** The TIM `ErrorCode`. */
  readonly errorCode: number;
  /** The TIM `ErrorInfo` text, cut to a sane length. */
  readonly errorInfo: string;

  /**
   * @param opts.unrenewable the UserSig was expired or invalidated (70001, 70052) and cannot be
   *   renewed (a fixed `TIM_USERSIG`): a configuration error, since every call will fail the same way
   */
  constructor(errorCode: number, errorInfo: string, opts: { unrenewable?: boolean } = {}) {
    const retryClass = opts.unrenewable ? 'fatal-config' : classifyTimErrorCode(errorCode);
    const hint = opts.unrenewable ? UNRENEWABLE_HINT : FIX_HINTS[errorCode];
    const info = errorInfo.slice(0, 300);
    super(`Tencent IM error ${errorCode}${info ? `: ${info}` : ''}${hint ? ` (fix: ${hint})` : ''}`);
    this.errorCode = errorCode;
    this.errorInfo = info;
    this.retryClass = retryClass;
  }
}

/** A non-200 HTTP status: Tencent answers 200 unless the network in between failed. */
export class TimHttpError extends TimError {
  readonly code = 'TIM_ERR_HTTP';
  readonly retryClass: RetryClass;
  readonly status: number;

  constructor(status: number) {
    // Tencent answers 200, even for errors: any other status comes from something in between.
    const refused = status < 500 && status !== 429;
    super(
      `Tencent IM answered HTTP ${status}${refused ? ' (fix: a proxy or gateway refused the call; check it and TIM_BASE_URL)' : ''}`,
    );
    this.status = status;
    // 429 is a proxy or gateway telling us to slow down. Other 4xx: it refuses every call (a 403 from
    // a proxy, a 404 for a wrong path) until someone fixes it there, which needs no restart here.
    this.retryClass = status >= 500 ? 'retryable' : status === 429 ? 'rate-limited' : 'refused';
  }
}

/** The call did not finish within the client timeout. */
export class TimTimeoutError extends TimError {
  readonly code = 'TIM_ERR_TIMEOUT';
  readonly retryClass = 'retryable' as const;
  /** The timeout that expired. */
  readonly timeoutMs: number;
  constructor(timeoutMs: number, options?: { cause?: unknown }) {
    super(`Tencent IM call timed out after ${timeoutMs} ms`, options);
    this.timeoutMs = timeoutMs;
  }
}

/** The connection failed or was reset before a full answer arrived. */
export class TimNetworkError extends TimError {
  readonly code = 'TIM_ERR_NETWORK';
  readonly retryClass = 'retryable' as const;
  /** What failed, secret-free: an undici code or errno name, or a short message. */
  readonly detail: string;
  constructor(detail: string, options?: { cause?: unknown }) {
    super(`network error calling Tencent IM: ${detail}`, options);
    this.detail = detail;
  }
}

/** The answer was not valid JSON or did not have the documented shape. Nothing from it is used. */
export class TimDecodeError extends TimError {
  readonly code = 'TIM_ERR_DECODE';
  /**
   * `bad-response` (retried: usually a truncated body or a proxy page), or `fatal` when the answer
   * is well formed but holds a value the mirror cannot store exactly (`permanent`): asking again
   * brings the same value back, so the account fails this round without retries.
   */
  readonly retryClass: 'bad-response' | 'fatal';
  /** What was wrong with the answer. */
  readonly detail: string;
  constructor(detail: string, options?: { cause?: unknown; permanent?: boolean }) {
    super(`malformed friend_get response: ${detail}`, options);
    this.retryClass = options?.permanent ? 'fatal' : 'bad-response';
    this.detail = detail;
  }
}

/**
 * The pages of one pull did not add up: a cursor that repeats, more pages than an account can have,
 * or sequences that kept moving. Nothing from the pull is used.
 */
export class TimPagingError extends TimError {
  readonly code = 'TIM_ERR_PAGING';
  readonly retryClass = 'bad-response' as const;
}

/** The caller's signal aborted the call (shutdown). Not an API failure. */
export class TimAbortError extends TimError {
  readonly code = 'TIM_ERR_ABORTED';
  readonly retryClass = 'fatal' as const;
  constructor(options?: { cause?: unknown }) {
    super('Tencent IM call aborted', options);
  }
}
