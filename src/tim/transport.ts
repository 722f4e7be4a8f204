/**
 * The HTTP half of the Tencent IM client: sends one signed POST and returns the raw body, or throws
 * a typed {@link TimError}. The client above it signs, decodes and retries; a transport only moves
 * bytes, so the same client can send in this thread ({@link UndiciTransport}) or through another one
 * (`src/sync/call-thread.ts`).
 */
import { Pool } from 'undici';
import {
  TimAbortError,
  TimDecodeError,
  TimError,
  TimHttpError,
  TimNetworkError,
  TimTimeoutError,
} from './errors.js';

/** A successful answer (HTTP 200). */
export interface HttpReply {
  /** The body as received, not decoded. Backed by its own `ArrayBuffer`, so it can be transferred. */
  body: Uint8Array;
  /**
   * When the request was sent, in absolute milliseconds ({@link absoluteNow}), so the caller can
   * time the HTTP call alone, whatever thread or queue the request waited in first.
   */
  sentAt: number;
}

/** Sends requests to one origin. */
export interface HttpTransport {
  /**
   * POSTs `body` (JSON) to `pathAndQuery`, which may carry the UserSig: implementations never put
   * it in an error or a log line.
   *
   * @throws TimHttpError (non-200), TimNetworkError, TimTimeoutError, TimAbortError (`signal`
   *   aborted), TimDecodeError (body over the size limit); each with `sentAt` once it was sent
   */
  post(pathAndQuery: string, body: string, signal?: AbortSignal): Promise<HttpReply>;
  /** Stops sending; resolves when calls in flight have finished. Safe to call twice. */
  close(): Promise<void>;
}

/** Milliseconds since the epoch at sub-millisecond resolution; comparable across threads. */
export function absoluteNow(): number {
  return performance.timeOrigin + performance.now();
}

/** Options of {@link UndiciTransport}. */
export interface UndiciTransportOptions {
  /** Scheme, host and port only, e.g. `https://console.tim.qq.com`. */
  origin: string;
  /** Whole-call timeout, ms. */
  timeoutMs: number;
  /** Keep-alive connections to the host. */
  connections: number;
  /** Largest body accepted; a bigger one is refused as malformed. */
  maxBodyBytes: number;
}

/**
 * The default transport: an undici keep-alive pool in the calling thread.
 *
 * @example
 * const transport = new UndiciTransport({ origin, timeoutMs: 8_000, connections: 64, maxBodyBytes: 32 << 20 });
 * const { body } = await transport.post(`/v4/sns/friend_get?${query}`, '{"From_Account":"a"}');
 */
export class UndiciTransport implements HttpTransport {
  readonly #pool: Pool;
  readonly #timeoutMs: number;
  readonly #maxBodyBytes: number;
  #closed: Promise<void> | undefined;

  constructor(opts: UndiciTransportOptions) {
    this.#timeoutMs = opts.timeoutMs;
    this.#maxBodyBytes = opts.maxBodyBytes;
    this.#pool = new Pool(opts.origin, {
      connections: opts.connections,
      // Tencent advises long-lived connections; keep idle ones for a while between sweeps.
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 120_000,
      pipelining: 1,
    });
  }

  async post(pathAndQuery: string, body: string, signal?: AbortSignal): Promise<HttpReply> {
    if (signal?.aborted) throw new TimAbortError({ cause: signal.reason });
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    const sentAt = absoluteNow();
    try {
      const res = await this.#pool.request({
        path: pathAndQuery,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        signal: combined,
      });
      if (res.statusCode !== 200) {
        await res.body.dump().catch(() => {});
        throw new TimHttpError(res.statusCode);
      }
      return { body: await this.#readBody(res.body), sentAt };
    } catch (err) {
      const typed =
        err instanceof TimError
          ? err
          : signal?.aborted
            ? new TimAbortError({ cause: err })
            : timeout.aborted
              ? new TimTimeoutError(this.#timeoutMs, { cause: err })
              : new TimNetworkError(describeNetworkError(err), { cause: err });
      typed.sentAt = sentAt;
      throw typed;
    }
  }

  async #readBody(body: AsyncIterable<Buffer> & { destroy(err?: Error): unknown }): Promise<Uint8Array> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of body) {
      size += chunk.length;
      if (size > this.#maxBodyBytes) {
        body.destroy();
        throw new TimDecodeError(`body exceeds ${this.#maxBodyBytes} bytes`);
      }
      chunks.push(chunk);
    }
    // Copied into a buffer of its own (not Buffer.concat, which may hand out a slice of the shared
    // pool): the call thread transfers this ArrayBuffer to the main thread instead of copying it.
    const out = new Uint8Array(size);
    let offset = 0;
    for (const chunk of chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }

  close(): Promise<void> {
    this.#closed ??= this.#pool.close();
    return this.#closed;
  }
}

/** A short, secret-free description of a network error (undici codes, errno names). */
function describeNetworkError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e.code ?? (typeof e.message === 'string' ? e.message.slice(0, 120) : 'unknown error');
}
