/**
 * The client for Tencent IM's REST API: builds the signed URL, decodes the answer, renews an
 * expired UserSig, and reports every call. Sending is left to an {@link HttpTransport} (by default
 * an undici keep-alive pool in this thread), which enforces the timeout and turns every failure
 * into a typed {@link TimError}.
 */
import { randomInt } from 'node:crypto';
import { decodeUtf8 } from '../text.js';
import { TimApiError, TimDecodeError, TimError } from './errors.js';
import { decodeFriendGetResponse, type FriendGetPage, type FriendGetRequest } from './friend-get.js';
import { absoluteNow, type HttpTransport, UndiciTransport } from './transport.js';
import type { UserSigProvider } from './usersig.js';

/** Options of {@link TimClient}. */
export interface TimClientOptions {
  /** e.g. `https://console.tim.qq.com`, or a proxy / the simulator; may carry a path prefix. */
  baseUrl: string;
  sdkAppId: number;
  /** The app administrator account the UserSig is for. */
  identifier: string;
  userSig: UserSigProvider;
  /**
   * Whole-call timeout. Tencent's backend gives up after 3 s, so anything shorter would cut off
   * answers that are still coming. Default 8 s.
   */
  timeoutMs?: number;
  /** Keep-alive connections to the host. Default 64: enough for 200 calls/s at 300 ms each. */
  connections?: number;
  /** Largest body accepted; a bigger one is refused as malformed. Default 32 MiB. */
  maxBodyBytes?: number;
  /** Observes every HTTP call (metrics, tests). */
  onCall?: (event: CallEvent) => void;
  /**
   * Sends the calls. Default: an {@link UndiciTransport} to `baseUrl`'s origin with `timeoutMs`,
   * `connections` and `maxBodyBytes`; a given transport brings its own and those three are ignored.
   * {@link TimClient.close} closes it either way.
   */
  transport?: HttpTransport;
}

/** What {@link TimClientOptions.onCall} receives for every HTTP call. */
export interface CallEvent {
  api: string;
  /** From sending the request to receiving the answer (not the wait for a turn before it). */
  durationMs: number;
  /** `ok`, or the failing error's `code`. */
  outcome: string;
  /** TIM ErrorCode when the body carried one. */
  errorCode?: number;
}

const FRIEND_GET_PATH = '/v4/sns/friend_get';
const U32_LIMIT = 2 ** 32;

/**
 * A client for the one API the mirror calls.
 *
 * @example
 * const client = new TimClient({ baseUrl, sdkAppId, identifier: 'administrator', userSig });
 * const page = await client.friendGet({ From_Account: 'alice', StartIndex: 0 });
 * await client.close();
 */
export class TimClient {
  readonly #opts: Required<Omit<TimClientOptions, 'onCall' | 'transport'>> & Pick<TimClientOptions, 'onCall'>;
  readonly #transport: HttpTransport;
  readonly #pathPrefix: string;

  constructor(opts: TimClientOptions) {
    const { transport, ...rest } = opts;
    this.#opts = { timeoutMs: 8_000, connections: 64, maxBodyBytes: 32 * 1024 * 1024, ...rest };
    const url = new URL(opts.baseUrl);
    this.#pathPrefix = url.pathname.replace(/\/+$/, '');
    this.#transport =
      transport ??
      new UndiciTransport({
        origin: url.origin,
        timeoutMs: this.#opts.timeoutMs,
        connections: this.#opts.connections,
        maxBodyBytes: this.#opts.maxBodyBytes,
      });
  }

  /**
   * Calls `v4/sns/friend_get` once. A UserSig that Tencent reports expired or invalidated
   * (70001/70052) is renewed and the call retried once, when the provider can renew it.
   *
   * @throws TimError subclasses only
   */
  async friendGet(req: FriendGetRequest, signal?: AbortSignal): Promise<FriendGetPage> {
    try {
      return await this.#callOnce(req, signal);
    } catch (err) {
      if (err instanceof TimError && err.retryClass === 'usersig-refresh') {
        if (this.#opts.userSig.invalidate()) return this.#callOnce(req, signal);
        // A fixed UserSig that Tencent no longer takes fails every call alike: no retry fixes it.
        if (err instanceof TimApiError) {
          throw new TimApiError(err.errorCode, err.errorInfo, { unrenewable: true });
        }
      }
      throw err;
    }
  }

  async #callOnce(req: FriendGetRequest, signal?: AbortSignal): Promise<FriendGetPage> {
    // Timed from when the transport sent the request, not from here: the transport may hold it for
    // a while first (the call thread paces calls), and that wait is not the call's duration.
    let sentAt: number | undefined;
    let receivedAt: number | undefined;
    let outcome = 'ok';
    let errorCode: number | undefined;
    try {
      const reply = await this.#transport.post(this.#pathFor(FRIEND_GET_PATH), JSON.stringify(req), signal);
      receivedAt = absoluteNow();
      sentAt = reply.sentAt;
      return decodeFriendGetResponse(bodyText(reply.body));
    } catch (err) {
      outcome = err instanceof TimError ? err.code : 'unknown';
      errorCode = (err as { errorCode?: number }).errorCode;
      if (err instanceof TimError) {
        // Errors found in the answer (decoding, Tencent's ErrorCode) belong to the same sent call.
        if (sentAt !== undefined) err.sentAt ??= sentAt;
        sentAt ??= err.sentAt;
      }
      throw err;
    } finally {
      // A call that was never sent (aborted while waiting for its turn) is not an HTTP call.
      if (sentAt !== undefined) {
        this.#opts.onCall?.({
          api: 'friend_get',
          durationMs: Math.max(0, (receivedAt ?? absoluteNow()) - sentAt),
          outcome,
          ...(errorCode !== undefined ? { errorCode } : {}),
        });
      }
    }
  }

  /** The path and query of one call. It carries the UserSig: never log it. */
  #pathFor(api: string): string {
    const q = new URLSearchParams({
      sdkappid: String(this.#opts.sdkAppId),
      identifier: this.#opts.identifier,
      usersig: this.#opts.userSig.current(),
      // A fresh u32 per call: Tencent uses it to tell calls apart.
      random: String(randomInt(0, U32_LIMIT)),
      contenttype: 'json',
    });
    return `${this.#pathPrefix}${api}?${q.toString()}`;
  }

  /** Closes the transport, waiting for calls in flight. */
  async close(): Promise<void> {
    await this.#transport.close();
  }
}

/** Decodes a body as UTF-8, refusing invalid sequences. */
function bodyText(body: Uint8Array): string {
  try {
    // Strict: invalid UTF-8 would otherwise turn into U+FFFD and be stored as if Tencent had sent it.
    return decodeUtf8(body);
  } catch {
    throw new TimDecodeError('body is not valid UTF-8');
  }
}
