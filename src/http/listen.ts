/** Binding a `node:http` server, shared by the admin server and the webhook receiver. */
import type { Server } from 'node:http';
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
