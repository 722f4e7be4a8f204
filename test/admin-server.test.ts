/**
 * The admin server on a real socket, with fakes for readiness and resync and real metrics: every
 * route's answers, the resync body rules, the bearer check, and that the token never reaches a log.
 */
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AdminServer, type AdminServerOptions, startAdminServer } from '../src/http/admin-server.js';
import type { ResyncRequest } from '../src/http/resync-request.js';
import { createLogger } from '../src/log.js';
import { createMetrics, type Metrics } from '../src/metrics.js';

const TOKEN = `admin-${randomBytes(12).toString('hex')}`;
const WRONG_TOKEN = `admin-${randomBytes(12).toString('hex')}`;

/** Everything any server of this file logged, at trace level. */
let logs = '';
const log = createLogger('trace', {
  write: (s: string) => {
    logs += s;
  },
});

const servers: AdminServer[] = [];
async function start(
  over: Partial<AdminServerOptions> = {},
): Promise<{ url: string; metrics: Metrics; resyncs: ResyncRequest[] }> {
  const metrics = over.metrics ?? createMetrics();
  const resyncs: ResyncRequest[] = [];
  const server = await startAdminServer({
    host: '127.0.0.1',
    port: 0,
    adminToken: TOKEN,
    log,
    metrics,
    readiness: async () => ({ ready: true, checks: { database: { ok: true } } }),
    resync: async (req) => {
      resyncs.push(req);
      return {
        marked: req.all ? 1000 : (req.ids?.length ?? 0) - 1,
        unknown: req.ids ? [req.ids.at(-1)!] : [],
      };
    },
    ...over,
  });
  servers.push(server);
  return { url: server.url, metrics, resyncs };
}

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  // Nothing any test did, with the right token or a wrong one, put either in a log line.
  expect(logs.length).toBeGreaterThan(0);
  expect(logs).not.toContain(TOKEN);
  expect(logs).not.toContain(WRONG_TOKEN);
});

function expectJsonHeaders(res: Response): void {
  expect(res.headers.get('content-type')).toBe('application/json');
  expect(res.headers.get('cache-control')).toBe('no-store');
}

describe('admin server: health, readiness, metrics', () => {
  let url: string;
  let metrics: Metrics;
  beforeAll(async () => {
    ({ url, metrics } = await start());
  });

  it('GET /healthz answers 200 {"status":"ok"}', async () => {
    const res = await fetch(`${url}/healthz`);
    expect(res.status).toBe(200);
    expectJsonHeaders(res);
    expect(await res.json()).toEqual({ status: 'ok' });
    const head = await fetch(`${url}/healthz`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('GET /readyz answers 200 with the checks when ready, and sets the ready gauge', async () => {
    const res = await fetch(`${url}/readyz`);
    expect(res.status).toBe(200);
    expectJsonHeaders(res);
    expect(await res.json()).toEqual({ ready: true, checks: { database: { ok: true } } });
    expect((await metrics.render()).body).toMatch(/^tim_mirror_ready 1$/m);
  });

  it('GET /metrics answers the Prometheus text, with a call observed through observeCall', async () => {
    metrics.observeCall({ api: 'friend_get', durationMs: 80, outcome: 'TIM_ERR_API', errorCode: 70169 });
    const res = await fetch(`${url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = await res.text();
    expect(body).toContain(
      'tim_mirror_calls_total{api="friend_get",outcome="TIM_ERR_API",error_code="70169"} 1',
    );
    expect(body).toContain('# TYPE tim_mirror_call_duration_seconds histogram');
  });

  it('answers 404 for an unknown path and 405 with Allow for a wrong method', async () => {
    const missing = await fetch(`${url}/nope`);
    expect(missing.status).toBe(404);
    expectJsonHeaders(missing);
    expect(await missing.json()).toEqual({ error: 'not found' });

    const getResync = await fetch(`${url}/resync`);
    expect(getResync.status).toBe(405);
    expect(getResync.headers.get('allow')).toBe('POST');
    expectJsonHeaders(getResync);
    expect(await getResync.json()).toEqual({ error: 'method not allowed' });

    const postHealth = await fetch(`${url}/healthz`, { method: 'POST', body: '{}' });
    expect(postHealth.status).toBe(405);
    expect(postHealth.headers.get('allow')).toBe('GET, HEAD');
    await postHealth.body?.cancel();
  });

  it('logs one debug line per request with method, path (no query), status and ms', async () => {
    const secretish = randomBytes(8).toString('hex');
    await (await fetch(`${url}/healthz?sign=${secretish}`)).body?.cancel();
    await new Promise((r) => setTimeout(r, 20));
    const lines = logs
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === 'admin request' && l.path === '/healthz');
    expect(lines.length).toBeGreaterThan(0);
    const line = lines.at(-1)!;
    expect(line).toMatchObject({ level: 20, method: 'GET', path: '/healthz', status: 200 });
    expect(typeof line.ms).toBe('number');
    expect(Object.keys(line)).not.toContain('headers');
    expect(logs).not.toContain(secretish);
  });
});

describe('admin server: readiness failures', () => {
  it('answers 503 with the checks when not ready', async () => {
    const { url, metrics } = await start({
      readiness: async () => ({
        ready: false,
        checks: { database: { ok: false, detail: 'connection refused' } },
      }),
    });
    metrics.setReady(true);
    const res = await fetch(`${url}/readyz`);
    expect(res.status).toBe(503);
    expectJsonHeaders(res);
    expect(await res.json()).toEqual({
      ready: false,
      checks: { database: { ok: false, detail: 'connection refused' } },
    });
    expect((await metrics.render()).body).toMatch(/^tim_mirror_ready 0$/m);
  });

  it('GET /metrics runs the readiness check itself, so the ready gauge needs no /readyz probe', async () => {
    let ready = true;
    const { url, metrics } = await start({
      readiness: async () => ({ ready, checks: { database: { ok: ready } } }),
    });
    expect((await metrics.render()).body).toMatch(/^tim_mirror_ready 0$/m);
    expect(await (await fetch(`${url}/metrics`)).text()).toMatch(/^tim_mirror_ready 1$/m);
    ready = false;
    expect(await (await fetch(`${url}/metrics`)).text()).toMatch(/^tim_mirror_ready 0$/m);
  });

  it('answers 503 when readiness takes longer than its timeout', async () => {
    const { url } = await start({ readiness: () => new Promise(() => {}), readinessTimeoutMs: 100 });
    const started = performance.now();
    const res = await fetch(`${url}/readyz`);
    expect(performance.now() - started).toBeLessThan(1_500);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({
      ready: false,
      checks: { readiness: { ok: false, detail: 'readiness check timed out' } },
    });
  });

  it('times out after 2 s by default', async () => {
    const { url } = await start({ readiness: () => new Promise(() => {}) });
    const started = performance.now();
    const res = await fetch(`${url}/readyz`);
    const ms = performance.now() - started;
    expect(ms).toBeGreaterThanOrEqual(1_900);
    expect(ms).toBeLessThan(3_000);
    expect(res.status).toBe(503);
  });

  it('answers 503 (not ready) when readiness throws, and logs the error', async () => {
    const { url } = await start({
      readiness: async () => {
        throw new Error('pool exhausted');
      },
    });
    const res = await fetch(`${url}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({
      ready: false,
      checks: { readiness: { ok: false, detail: 'readiness check failed' } },
    });
    expect(logs).toContain('pool exhausted');
  });
});

describe('admin server: POST /resync', () => {
  let url: string;
  let resyncs: ResyncRequest[];
  beforeAll(async () => {
    ({ url, resyncs } = await start());
  });

  /** POSTs `body` to /resync with `Bearer <token>`; `null` sends no Authorization header. */
  const post = (body: string | Buffer, token: string | null = TOKEN, at = url) =>
    fetch(`${at}/resync`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      },
      body,
    });

  it('marks listed ids: 202 {marked, unknown}', async () => {
    const multibyte = 'é'.repeat(16); // 32 bytes: the limit is in bytes, not characters
    const res = await post(JSON.stringify({ ids: ['alice', 'bob', 'alice', multibyte, 'ghost'] }));
    expect(res.status).toBe(202);
    expectJsonHeaders(res);
    expect(await res.json()).toEqual({ marked: 3, unknown: ['ghost'] });
    expect(resyncs.at(-1)).toEqual({ ids: ['alice', 'bob', multibyte, 'ghost'], full: false });
  });

  it('marks everyone, fully: 202', async () => {
    const res = await post(JSON.stringify({ all: true, full: true }));
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ marked: 1000, unknown: [] });
    expect(resyncs.at(-1)).toEqual({ all: true, full: true });
  });

  it('accepts 100,000 ids', async () => {
    const ids = Array.from({ length: 100_000 }, (_, i) => `u${i}`);
    const res = await post(JSON.stringify({ ids }));
    expect(res.status).toBe(202);
    expect(resyncs.at(-1)?.ids).toHaveLength(100_000);
  });

  const bad: Array<[string, string | Buffer, RegExp]> = [
    ['not JSON', '{"ids": [', /JSON/],
    [
      'not UTF-8',
      Buffer.from([0x7b, 0x22, 0x69, 0x64, 0x73, 0x22, 0x3a, 0x5b, 0x22, 0xff, 0x22, 0x5d, 0x7d]),
      /UTF-8/,
    ],
    ['a JSON array', '[]', /object/],
    ['both ids and all', '{"ids": ["a"], "all": true}', /exactly one of "ids" or "all"/],
    ['neither ids nor all', '{"full": true}', /exactly one of "ids" or "all"/],
    ['all not true', '{"all": false}', /"all" must be true/],
    ['ids not an array', '{"ids": "alice"}', /"ids" must be an array/],
    ['ids empty', '{"ids": []}', /"ids" must not be empty/],
    ['an id not a string', '{"ids": ["a", 7]}', /"ids\[1\]" must be a string/],
    ['an empty id', '{"ids": ["a", ""]}', /"ids\[1\]" is empty/],
    ['a 33-byte id', JSON.stringify({ ids: ['a'.repeat(33)] }), /"ids\[0\]" is 33 bytes/],
    ['a 34-byte multibyte id', JSON.stringify({ ids: ['é'.repeat(17)] }), /"ids\[0\]" is 34 bytes/],
    ['an id with NUL', JSON.stringify({ ids: ['a\u0000b'] }), /"ids\[0\]" contains a NUL/],
    ['a lone surrogate', '{"ids": ["\\ud800"]}', /"ids\[0\]" is not valid Unicode/],
    [
      'more than 100,000 ids',
      JSON.stringify({ ids: Array.from({ length: 100_001 }, () => 'x') }),
      /at most 100000/,
    ],
    ['full not a boolean', '{"all": true, "full": "yes"}', /"full" must be true or false/],
    ['an unknown field', '{"all": true, "ful": true}', /unknown field "ful"/],
  ];
  it.each(bad)('answers 400 for %s', async (_what, body, reason) => {
    const before = resyncs.length;
    const res = await post(body);
    expect(res.status).toBe(400);
    expectJsonHeaders(res);
    const json = (await res.json()) as { error: string };
    expect(json.error).toMatch(reason);
    expect(resyncs.length).toBe(before);
  });

  it('answers 401 with WWW-Authenticate without a token, with a wrong one, or another scheme', async () => {
    const before = resyncs.length;
    const attempts = [
      await post('{"all": true}', null),
      await post('{"all": true}', WRONG_TOKEN),
      await post('{"all": true}', `${TOKEN}x`),
      await post('{"all": true}', ''),
      await fetch(`${url}/resync`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}` },
        body: '{"all": true}',
      }),
      await fetch(`${url}/resync`, {
        method: 'POST',
        headers: { authorization: TOKEN },
        body: '{"all": true}',
      }),
    ];
    for (const res of attempts) {
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
      expectJsonHeaders(res);
      expect(((await res.json()) as { error: string }).error).toMatch(/bearer token/);
    }
    expect(resyncs.length).toBe(before);
  });

  it('answers 403 saying to set ADMIN_TOKEN when no token is configured, whatever is sent', async () => {
    const noToken = await start({ adminToken: undefined });
    for (const token of [null, '', TOKEN]) {
      const res = await post('{"all": true}', token, noToken.url);
      expect(res.status).toBe(403);
      expectJsonHeaders(res);
      expect(((await res.json()) as { error: string }).error).toMatch(/set ADMIN_TOKEN/);
    }
    expect(noToken.resyncs).toHaveLength(0);
  });

  it('answers 413 for a body over 1 MiB, and keeps serving', async () => {
    const res = await post(JSON.stringify({ ids: ['a'], pad: 'x'.repeat(1024 * 1024) }));
    expect(res.status).toBe(413);
    expectJsonHeaders(res);
    expect(((await res.json()) as { error: string }).error).toMatch(/1048576 bytes/);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
  });

  it('answers 413 at once, without reading it, for a body declared far over the limit', async () => {
    const { status, headers } = await new Promise<{ status: number; headers: Record<string, unknown> }>(
      (resolve, reject) => {
        const req = httpRequest(`${url}/resync`, {
          method: 'POST',
          headers: { authorization: `Bearer ${TOKEN}`, 'content-length': String(1024 ** 3) },
        });
        req.on('response', (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, headers: res.headers });
          req.destroy();
        });
        req.on('error', reject);
        req.write('{"ids": [');
      },
    );
    expect(status).toBe(413);
    expect(headers.connection).toBe('close');
  });

  it('answers 500 {"error":"internal error"} when resync throws, and logs the message', async () => {
    const failing = await start({
      resync: async () => {
        throw new Error('deadlock detected');
      },
    });
    const res = await post('{"all": true}', TOKEN, failing.url);
    expect(res.status).toBe(500);
    expectJsonHeaders(res);
    expect(await res.json()).toEqual({ error: 'internal error' });
    expect(logs).toContain('deadlock detected');
  });
});

describe('admin server: shutdown', () => {
  it('close() closes idle keep-alive connections, resolves, stops accepting, and is safe twice', async () => {
    const server = await startAdminServer({
      host: '127.0.0.1',
      port: 0,
      log,
      metrics: createMetrics(),
      readiness: async () => ({ ready: true, checks: {} }),
      resync: async () => ({ marked: 0, unknown: [] }),
    });
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    // Leaves a keep-alive connection open in fetch's pool.
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const started = performance.now();
    await Promise.all([server.close(), server.close()]);
    await server.close();
    expect(performance.now() - started).toBeLessThan(1_000);
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
  });

  it('lets a request in flight finish when close() is called', async () => {
    let release: () => void = () => {};
    let arrived: () => void = () => {};
    const inFlight = new Promise<void>((r) => {
      arrived = r;
    });
    const server = await startAdminServer({
      host: '127.0.0.1',
      port: 0,
      log,
      metrics: createMetrics(),
      readiness: () =>
        new Promise((resolve) => {
          arrived();
          release = () => resolve({ ready: true, checks: {} });
        }),
      resync: async () => ({ marked: 0, unknown: [] }),
    });
    const pending = fetch(`${server.url}/readyz`);
    await inFlight;
    const closing = server.close();
    release();
    const res = await pending;
    expect(res.status).toBe(200);
    expect(res.headers.get('connection')).toBe('close');
    await res.body?.cancel();
    await closing;
  });
});
