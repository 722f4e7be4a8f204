/**
 * The HTTP client for Tencent IM's REST API: builds the signed URL, keeps a keep-alive pool,
 * enforces a timeout, and turns every failure into a typed {@link TimError}.
 */
import { randomInt } from 'node:crypto';
import { Pool } from 'undici';
import {
  TimAbortError,
  TimDecodeError,
  TimError,
  TimHttpError,
  TimNetworkError,
  TimTimeoutError,
} from './errors.js';
import { decodeFriendGetResponse, type FriendGetPage, type FriendGetRequest } from './friend-get.js';
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
}

/** What {@link TimClientOptions.onCall} receives for every HTTP call. */
export interface CallEvent {
  api: string;
  durationMs: number;
  /** `ok`, or the failing error's `code`. */
  outcome: string;
  /** TIM ErrorCode when the body carried one. */
  errorCode?: number;
}

const FRIEND_GET_PATH = '/v4/sns/friend_get';
const UTF8 = new TextDecoder('utf-8', { fatal: true });
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
  readonly #opts: Required<Omit<TimClientOptions, 'onCall'>> & Pick<TimClientOptions, 'onCall'>;
  readonly #pool: Pool;
  readonly #pathPrefix: string;

  constructor(opts: TimClientOptions) {
    this.#opts = { timeoutMs: 8_000, connections: 64, maxBodyBytes: 32 * 1024 * 1024, ...opts };
    const url = new URL(opts.baseUrl);
    this.#pathPrefix = url.pathname.replace(/\/+$/, '');
    this.#pool = new Pool(url.origin, {
      connections: this.#opts.connections,
      // Tencent advises long-lived connections; keep idle ones for a while between sweeps.
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 120_000,
      pipelining: 1,
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
      if (
        err instanceof TimError &&
        err.retryClass === 'usersig-refresh' &&
        this.#opts.userSig.invalidate()
      ) {
        return this.#callOnce(req, signal);
      }
      throw err;
    }
  }

  async #callOnce(req: FriendGetRequest, signal?: AbortSignal): Promise<FriendGetPage> {
    const started = performance.now();
    let outcome = 'ok';
    let errorCode: number | undefined;
    try {
      const body = await this.#post(FRIEND_GET_PATH, JSON.stringify(req), signal);
      return decodeFriendGetResponse(body);
    } catch (err) {
      outcome = err instanceof TimError ? err.code : 'unknown';
      errorCode = (err as { errorCode?: number }).errorCode;
      throw err;
    } finally {
      this.#opts.onCall?.({
        api: 'friend_get',
        durationMs: performance.now() - started,
        outcome,
        ...(errorCode !== undefined ? { errorCode } : {}),
      });
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

  async #post(api: string, body: string, signal?: AbortSignal): Promise<string> {
    signal?.throwIfAborted();
    const timeout = AbortSignal.timeout(this.#opts.timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      const res = await this.#pool.request({
        path: this.#pathFor(api),
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        signal: combined,
      });
      if (res.statusCode !== 200) {
        await res.body.dump().catch(() => {});
        throw new TimHttpError(res.statusCode);
      }
      return await this.#readBody(res.body);
    } catch (err) {
      if (err instanceof TimError) throw err;
      if (signal?.aborted) throw new TimAbortError({ cause: err });
      if (timeout.aborted) throw new TimTimeoutError(this.#opts.timeoutMs, { cause: err });
      throw new TimNetworkError(describeNetworkError(err), { cause: err });
    }
  }

  async #readBody(body: AsyncIterable<Buffer> & { destroy(err?: Error): unknown }): Promise<string> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of body) {
      size += chunk.length;
      if (size > this.#opts.maxBodyBytes) {
        body.destroy();
        throw new TimDecodeError(`body exceeds ${this.#opts.maxBodyBytes} bytes`);
      }
      chunks.push(chunk);
    }
    try {
      // Fatal: invalid UTF-8 would otherwise turn into U+FFFD and be stored as if Tencent had sent it.
      return UTF8.decode(Buffer.concat(chunks, size));
    } catch {
      throw new TimDecodeError('body is not valid UTF-8');
    }
  }

  /** Closes the connection pool, waiting for calls in flight. */
  async close(): Promise<void> {
    await this.#pool.close();
  }
}

/** A short, secret-free description of a network error (undici codes, errno names). */
function describeNetworkError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e.code ?? (typeof e.message === 'string' ? e.message.slice(0, 120) : 'unknown error');
}
