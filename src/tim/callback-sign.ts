/**
 * The signature Tencent puts on webhook (callback) URLs when the app has a callback token:
 * `Sign = hex(sha256(token + RequestTime))`, with `RequestTime` in Unix seconds, both in the query
 * string (tim-api.md, "Friend webhooks").
 *
 * The signature covers only the token and the time, not the body or the command: it proves the
 * sender knows the token, and the time bounds how long a captured URL can be replayed. A replay
 * inside that window can only make the mirror pull an account once more, never change its data,
 * because the mirror re-reads the truth from friend_get instead of trusting the callback body.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

/** `hex(sha256(token + requestTime))`, as Tencent computes it. */
export function callbackSign(token: string, requestTime: string | number): string {
  return createHash('sha256').update(`${token}${requestTime}`, 'utf8').digest('hex');
}

/** Why a callback's signature was refused. */
export type CallbackSignProblem =
  /** No `Sign` or `RequestTime` in the URL (the console has no token, or someone else called). */
  | 'unsigned'
  /** `RequestTime` is not Unix seconds. */
  | 'bad-time'
  /** `RequestTime` is further from our clock than the allowed window. */
  | 'stale'
  /** `Sign` does not match. */
  | 'bad-sign';

/** Options of {@link CallbackVerifier}. */
export interface CallbackVerifierOptions {
  /** The callback token set in the IM console (`TIM_CALLBACK_TOKEN`). */
  token: string;
  /**
   * How far `RequestTime` may be from our clock, either way, in seconds. Tencent documents no
   * window; both clock skew and replays are bounded by it.
   */
  maxSkewSeconds: number;
  /** Unix seconds now; injectable for tests. */
  nowSeconds?: () => number;
}

/** Unix seconds: digits only, at most 12 of them (year 33658), so `Number` stays exact. */
const REQUEST_TIME = /^\d{1,12}$/;
/** A SHA-256 in hex. */
const SIGN = /^[0-9a-fA-F]{64}$/;

/**
 * Checks `Sign` and `RequestTime` of one callback. The token is kept only inside the closure of
 * the hash it feeds; nothing here logs or returns it.
 *
 * @example
 * const verifier = new CallbackVerifier({ token: process.env.TIM_CALLBACK_TOKEN!, maxSkewSeconds: 300 });
 * const problem = verifier.check(query.get('Sign'), query.get('RequestTime'));
 * if (problem) return answer401(problem);
 */
export class CallbackVerifier {
  readonly #token: string;
  readonly #maxSkew: number;
  readonly #now: () => number;

  constructor(opts: CallbackVerifierOptions) {
    if (opts.token.length === 0) throw new RangeError('the callback token must not be empty');
    this.#token = opts.token;
    this.#maxSkew = opts.maxSkewSeconds;
    this.#now = opts.nowSeconds ?? (() => Math.floor(Date.now() / 1000));
  }

  /**
   * @returns undefined when the signature is right and fresh, else why not
   */
  check(
    sign: string | null | undefined,
    requestTime: string | null | undefined,
  ): CallbackSignProblem | undefined {
    if (!sign || !requestTime) return 'unsigned';
    if (!REQUEST_TIME.test(requestTime)) return 'bad-time';
    // The format of a Sign is public, so refusing a malformed one early reveals nothing about the token.
    if (!SIGN.test(sign)) return 'bad-sign';
    // Compare the signature first: an unauthenticated caller learns nothing, not even whether its
    // time would have been accepted.
    const expected = Buffer.from(callbackSign(this.#token, requestTime), 'hex');
    if (!timingSafeEqual(Buffer.from(sign, 'hex'), expected)) return 'bad-sign';
    if (Math.abs(this.#now() - Number(requestTime)) > this.#maxSkew) return 'stale';
    return undefined;
  }
}
