/**
 * LISTEN on a Postgres channel with a dedicated connection that reconnects by itself, so a resync
 * request reaches every running replica within a moment, without anyone polling.
 */
import pg from 'pg';

/** Options of {@link listen}. */
export interface ListenOptions {
  url: string;
  channel: string;
  onNotify: (payload: string) => void;
  /** Told about connection failures; listening resumes with backoff. */
  onError?: (err: Error) => void;
  /** Told when (re)connected, so callers can catch up on anything missed meanwhile. */
  onConnect?: () => void;
}

/**
 * Starts listening. Notifications sent while the connection was down are lost, which is why
 * `onConnect` fires on every (re)connect: callers re-check the table instead.
 */
export function listen(opts: ListenOptions): { close(): Promise<void> } {
  let closed = false;
  let client: pg.Client | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  let failures = 0;

  const connect = async () => {
    if (closed) return;
    const c = new pg.Client({ connectionString: opts.url, application_name: 'tim-friend-mirror-listen' });
    client = c;
    const retry = (err: Error) => {
      if (closed || client !== c) return;
      client = undefined;
      c.removeAllListeners();
      c.on('error', () => {});
      c.end().catch(() => {});
      opts.onError?.(err);
      failures++;
      retryTimer = setTimeout(connect, Math.min(30_000, 250 * 2 ** Math.min(failures, 7)));
    };
    c.on('error', retry);
    c.on('end', () => retry(new Error('LISTEN connection closed')));
    c.on('notification', (n) => {
      if (n.channel === opts.channel) opts.onNotify(n.payload ?? '');
    });
    try {
      await c.connect();
      // The channel name is ours, a fixed identifier; quoting keeps it literal.
      await c.query(`LISTEN "${opts.channel.replace(/"/g, '""')}"`);
      failures = 0;
      opts.onConnect?.();
    } catch (err) {
      retry(err as Error);
    }
  };
  void connect();

  return {
    async close() {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      const c = client;
      client = undefined;
      if (c) {
        c.removeAllListeners();
        c.on('error', () => {});
        await c.end().catch(() => {});
      }
    },
  };
}
