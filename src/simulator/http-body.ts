/** Reading request bodies for the simulator's API and control endpoints. */
import type { IncomingMessage } from 'node:http';

/**
 * Reads the whole body as UTF-8; resolves undefined when it is over `limit` bytes (the rest is read
 * and dropped so the connection stays usable). Rejects when the client goes away first.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let ended = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
    });
    req.on('end', () => {
      ended = true;
      resolve(size > limit ? undefined : Buffer.concat(chunks).toString('utf8'));
    });
    req.on('error', reject);
    req.on('close', () => {
      if (!ended) reject(new Error('client closed the request'));
    });
  });
}
