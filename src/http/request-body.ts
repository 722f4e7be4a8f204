/** Reading request bodies under a size limit, without letting a client make us buffer more. */
import type { IncomingMessage } from 'node:http';

/** The client closed or broke the connection before the body ended; there is no one to answer. */
export class ClientGoneError extends Error {
  readonly code = 'HTTP_CLIENT_GONE';
  constructor(options?: ErrorOptions) {
    super('client closed the request before its body ended', options);
  }
}

/** What {@link readBody} found. */
export type BodyResult =
  | { kind: 'ok'; bytes: Buffer }
  /**
   * Over the limit. `drained`: the rest was read and dropped, so the connection can be kept; when
   * false, the caller should answer with `connection: close` and let the socket go.
   */
  | { kind: 'too-large'; drained: boolean };

/**
 * Reads the whole body, keeping at most `limitBytes`.
 *
 * A body a little over the limit is read to its end and dropped, so that the client, which is
 * probably still sending, gets a clean 413 instead of a connection reset. A body over
 * `drainLimitBytes` (declared or actual) is not worth reading: we stop and the caller closes.
 *
 * @throws ClientGoneError when the client goes away first
 */
export function readBody(
  req: IncomingMessage,
  limitBytes: number,
  drainLimitBytes: number,
): Promise<BodyResult> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > drainLimitBytes) {
    return Promise.resolve({ kind: 'too-large', drained: false });
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limitBytes) {
        chunks.push(chunk);
      } else if (size > drainLimitBytes) {
        cleanup();
        req.pause();
        resolve({ kind: 'too-large', drained: false });
      }
    };
    const onEnd = () => {
      cleanup();
      resolve(
        size > limitBytes
          ? { kind: 'too-large', drained: true }
          : { kind: 'ok', bytes: Buffer.concat(chunks, size) },
      );
    };
    const onError = (err: Error) => {
      cleanup();
      reject(new ClientGoneError({ cause: err }));
    };
    const onClose = () => {
      cleanup();
      reject(new ClientGoneError());
    };
    function cleanup(): void {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    }
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}
