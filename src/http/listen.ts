/** Binding a `node:http` server, shared by the admin server and the webhook receiver. */
import type { Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * Starts `server` listening and resolves with its base URL, e.g. `http://127.0.0.1:8081` (the port
 * actually bound, so port 0 works; IPv6 hosts bracketed).
 *
 * @throws the listen error, e.g. EADDRINUSE
 */
export async function listenHttp(server: Server, host: string, port: number): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  return `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;
}

/** Closing a server whose clients keep connections alive; see {@link gracefulCloser}. */
export interface GracefulCloser {
  /** Call for every request: answers given while closing tell the client the connection ends. */
  track(res: ServerResponse): void;
  /** Stops accepting, lets answers in progress finish (at most `graceMs`), then resolves. Safe twice. */
  close(): Promise<void>;
}

/**
 * Graceful close for `server`. `server.close()` alone waits for every keep-alive connection to be
 * closed by its client; this closes idle ones at once and each busy one as its answer finishes,
 * and cuts whatever is left after `graceMs`.
 */
export function gracefulCloser(server: Server, graceMs: number): GracefulCloser {
  let closing = false;
  const active = new Set<ServerResponse>();
  let closed: Promise<void> | undefined;
  return {
    track(res) {
      if (closing) res.setHeader('connection', 'close');
      active.add(res);
      res.once('close', () => {
        active.delete(res);
        if (closing) server.closeIdleConnections();
      });
    },
    close() {
      closed ??= new Promise<void>((resolve, reject) => {
        closing = true;
        for (const res of active) if (!res.headersSent) res.setHeader('connection', 'close');
        const force = setTimeout(() => server.closeAllConnections(), graceMs);
        force.unref();
        server.close((err) => {
          clearTimeout(force);
          if (err) reject(err);
          else resolve();
        });
        server.closeIdleConnections();
      });
      return closed;
    },
  };
}
