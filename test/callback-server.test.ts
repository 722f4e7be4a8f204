/**
 * The webhook receiver on a real socket, marking accounts in a real Postgres through the real mark
 * queue and `requestResync`: what a good callback marks (and what it never adds), every refusal
 * (bad, missing or stale signature, wrong app, unreadable body, too large, wrong path or method)
 * leaving the table untouched, commands that are ignored, the answer within its bound while the
 * database is stuck, the metrics, the config rules, and that neither token nor Sign reaches a log.
 */
import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadCallbackConfig } from '../src/config.js';
import { addAccounts, requestResync } from '../src/db/accounts.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import type { Database } from '../src/db/schema.js';
import { CALLBACK_OK, type CallbackServer, startCallbackServer } from '../src/http/callback-server.js';
import { createLogger } from '../src/log.js';
import { createCallbackMetrics, createMetrics, type Metrics } from '../src/metrics.js';
import { friendCallbackBody, friendCallbackUrl } from '../src/simulator/index.js';
import { ResyncQueue } from '../src/sync/resync-queue.js';
import { CallbackVerifier, callbackSign } from '../src/tim/callback-sign.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000555;
const TOKEN = `cb-${randomBytes(12).toString('hex')}`;
const ACK_WAIT_MS = 300;
const DEL = 'Sns.CallbackFriendDelete';

let logs = '';
const log = createLogger('trace', {
  write: (s: string) => {
    logs += s;
  },
});

let database: TestDatabase;
let db: Kysely<Database>;
let queue: ResyncQueue;
let metrics: Metrics;
let server: CallbackServer;
let base: string;
/** Every Sign this file sent, to check none was logged. */
const signs: string[] = [];

beforeAll(async () => {
  database = await createTestDatabase('callback_server');
  db = createDb(database.url, { maxConnections: 4 });
  await migrateToLatest(db);
  await addAccounts(db, ['alice', 'bob', 'carol', 'dave', 'a "quoted" ✓']);
  metrics = createMetrics();
  queue = new ResyncQueue({
    mark: async (ids) => {
      await requestResync(db, { ids }, { full: false });
    },
  });
  server = await startCallbackServer({
    host: '127.0.0.1',
    port: 0,
    sdkAppId: APP,
    verifier: new CallbackVerifier({ token: TOKEN, maxSkewSeconds: 300 }),
    enqueue: (ids) => queue.add(ids),
    ackWaitMs: ACK_WAIT_MS,
    log,
    metrics: createCallbackMetrics(metrics, { pendingMarks: () => queue.pending }),
  });
  base = `${server.url}/tim/callback`;
});

afterAll(async () => {
  await server?.close();
  await queue?.close();
  await db?.destroy();
  await database?.drop();
  expect(logs.length).toBeGreaterThan(0);
  expect(logs).not.toContain(TOKEN);
  for (const s of signs) expect(logs).not.toContain(s);
});

beforeEach(async () => {
  await db.updateTable('tim.accounts').set({ priority: 2, resync_requested_at: null }).execute();
});

/** Every account's scheduling columns, to prove a refused callback changed nothing. */
async function snapshot(): Promise<unknown[]> {
  return db
    .selectFrom('tim.accounts')
    .select(['account_id', 'priority', 'resync_requested_at', 'next_sync_at', 'status'])
    .orderBy('account_id')
    .execute();
}

async function marked(): Promise<string[]> {
  const rows = await db
    .selectFrom('tim.accounts')
    .select('account_id')
    .where('priority', '=', 0)
    .where('resync_requested_at', 'is not', null)
    .orderBy('account_id')
    .execute();
  return rows.map((r) => r.account_id);
}

interface Send {
  command?: string;
  body?: unknown;
  raw?: string | Buffer;
  token?: string | null;
  requestTime?: number;
  sdkAppId?: number;
  url?: string;
}

async function send(opts: Send = {}): Promise<{ status: number; json: Record<string, unknown>; ms: number }> {
  const command = opts.command ?? DEL;
  const url =
    opts.url ??
    friendCallbackUrl(base, {
      sdkAppId: opts.sdkAppId ?? APP,
      command,
      token: opts.token === null ? undefined : (opts.token ?? TOKEN),
      ...(opts.requestTime === undefined ? {} : { requestTime: opts.requestTime }),
    });
  const sign = new URL(url).searchParams.get('Sign');
  if (sign) signs.push(sign);
  const body =
    opts.raw ??
    JSON.stringify(
      opts.body ??
        friendCallbackBody('delete', [
          { op: 'delete', account: 'alice', friendId: 'bob' },
          { op: 'delete', account: 'alice', friendId: 'ghost' },
        ]),
    );
  const started = performance.now();
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  const json = (await res.json()) as Record<string, unknown>;
  return { status: res.status, json, ms: performance.now() - started };
}

describe('a good callback', () => {
  it('answers the documented OK body and marks both accounts of each pair, never adding one', async () => {
    const r = await send();
    expect(r.status).toBe(200);
    expect(r.json).toEqual(CALLBACK_OK);
    expect(JSON.stringify(r.json)).toBe('{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}');
    expect(await marked()).toEqual(['alice', 'bob']);
    const ghost = await db
      .selectFrom('tim.accounts')
      .select('account_id')
      .where('account_id', '=', 'ghost')
      .execute();
    expect(ghost).toEqual([]);
  });

  it('takes friend adds and the blocklist callback too, and odd ids byte for byte', async () => {
    const add = await send({
      command: 'Sns.CallbackFriendAdd',
      body: friendCallbackBody('add', [{ op: 'add', account: 'carol', friendId: 'a "quoted" ✓' }]),
    });
    expect(add.status).toBe(200);
    const block = await send({
      command: 'Sns.CallbackBlackListAdd',
      body: {
        CallbackCommand: 'Sns.CallbackBlackListAdd',
        PairList: [{ From_Account: 'dave', To_Account: 'x' }],
      },
    });
    expect(block.status).toBe(200);
    expect(await marked()).toEqual(['a "quoted" ✓', 'carol', 'dave']);
  });

  it('answers OK to a signed callback of another command and changes nothing', async () => {
    const before = await snapshot();
    const r = await send({
      command: 'C2C.CallbackAfterSendMsg',
      body: { CallbackCommand: 'C2C.CallbackAfterSendMsg' },
    });
    expect(r).toMatchObject({ status: 200, json: CALLBACK_OK });
    expect(await snapshot()).toEqual(before);
  });
});

describe('refused callbacks change nothing', () => {
  const now = () => Math.floor(Date.now() / 1000);
  const cases: [string, () => Send, number, RegExp][] = [
    ['a wrong Sign (another token)', () => ({ token: 'not-the-token' }), 401, /Sign does not match/],
    [
      'a Sign for another RequestTime',
      () => {
        const t = now();
        const u = new URL(
          friendCallbackUrl(base, { sdkAppId: APP, command: DEL, token: TOKEN, requestTime: t }),
        );
        u.searchParams.set('RequestTime', String(t - 1));
        return { url: u.toString() };
      },
      401,
      /Sign does not match/,
    ],
    ['no Sign at all', () => ({ token: null }), 401, /Sign and RequestTime are missing/],
    [
      'a stale RequestTime (10 min old)',
      () => ({ requestTime: now() - 600 }),
      401,
      /too far from the receiver clock/,
    ],
    ['a RequestTime from the future', () => ({ requestTime: now() + 600 }), 401, /too far/],
    ['a wrong SdkAppid', () => ({ sdkAppId: APP + 1 }), 400, /SdkAppid is not this mirror/],
    [
      'no SdkAppid',
      () => {
        const u = new URL(friendCallbackUrl(base, { sdkAppId: APP, command: DEL, token: TOKEN }));
        u.searchParams.delete('SdkAppid');
        return { url: u.toString() };
      },
      400,
      /SdkAppid is missing/,
    ],
    ['a body that is not JSON', () => ({ raw: '{"PairList": [' }), 400, /UTF-8 JSON/],
    ['a body that is not UTF-8', () => ({ raw: Buffer.from([0x7b, 0xff, 0x7d]) }), 400, /UTF-8 JSON/],
    [
      'a bad pair after a good one',
      () => ({
        body: { PairList: [{ From_Account: 'alice', To_Account: 'bob' }, { From_Account: 'carol' }] },
      }),
      400,
      /PairList\[1\]\.To_Account must be a string/,
    ],
    [
      'commands that differ between URL and body',
      () => ({ body: { CallbackCommand: 'Sns.CallbackFriendAdd', PairList: [] } }),
      400,
      /differs/,
    ],
    ['a body over 256 KiB', () => ({ raw: `{"x":"${'y'.repeat(300 * 1024)}"}` }), 413, /over 262144 bytes/],
    // The URL is checked before the body is read: without the token, no body is ever buffered.
    [
      'a body over 256 KiB without a Sign',
      () => ({ token: null, raw: `{"x":"${'y'.repeat(300 * 1024)}"}` }),
      401,
      /Sign and RequestTime are missing/,
    ],
  ];
  it.each(cases)('%s', async (_what, make, status, error) => {
    const before = await snapshot();
    const r = await send(make());
    expect(r.status).toBe(status);
    expect(r.json).toMatchObject({ ActionStatus: 'FAIL', ErrorCode: status });
    expect(String(r.json.ErrorInfo)).toMatch(error);
    await new Promise((res) => setTimeout(res, 50));
    expect(await snapshot()).toEqual(before);
  });

  it('serves nothing but POST /tim/callback', async () => {
    const get = await fetch(base);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    await get.body?.cancel();
    for (const path of ['/', '/resync', '/metrics', '/healthz', '/tim/callback/']) {
      const r = await fetch(`${server.url}${path}`, { method: 'POST', body: '{}' });
      expect(r.status, path).toBe(404);
      await r.body?.cancel();
    }
  });
});

describe('a stuck database', () => {
  it('still answers OK within the bound, and the mark lands once the database moves', async () => {
    // A real lock on carol's row: requestResync's UPDATE waits for it, as it would behind a slow
    // transaction or an overloaded server.
    const locker = new pg.Client({ connectionString: database.url });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query(`SELECT 1 FROM tim.accounts WHERE account_id = 'carol' FOR UPDATE`);
      const r = await send({
        body: friendCallbackBody('delete', [{ op: 'delete', account: 'carol', friendId: 'dave' }]),
      });
      expect(r).toMatchObject({ status: 200, json: CALLBACK_OK });
      expect(r.ms).toBeGreaterThanOrEqual(ACK_WAIT_MS - 5);
      expect(r.ms).toBeLessThan(ACK_WAIT_MS + 700);
      expect(await marked()).toEqual([]);
      expect(queue.pending).toBe(0); // taken by the write that waits on the lock
    } finally {
      await locker.query('COMMIT');
      await locker.end();
    }
    for (let i = 0; i < 50 && (await marked()).length < 2; i++)
      await new Promise((res) => setTimeout(res, 20));
    expect(await marked()).toEqual(['carol', 'dave']);
  });
});

describe('metrics', () => {
  it('counts callbacks by command and outcome', async () => {
    const body = (await metrics.render()).body;
    expect(body).toMatch(
      /tim_mirror_callbacks_total\{command="Sns.CallbackFriendDelete",outcome="marked"\} [1-9]/,
    );
    expect(body).toContain(
      'tim_mirror_callbacks_total{command="Sns.CallbackFriendDelete",outcome="queued"} 1',
    );
    expect(body).toContain('tim_mirror_callbacks_total{command="Sns.CallbackFriendAdd",outcome="marked"} 1');
    expect(body).toContain('tim_mirror_callbacks_total{command="other",outcome="ignored"} 1');
    expect(body).toMatch(
      /tim_mirror_callbacks_total\{command="Sns.CallbackFriendDelete",outcome="unauthorized"\} [3-9]/,
    );
    expect(body).toContain(
      'tim_mirror_callbacks_total{command="Sns.CallbackFriendDelete",outcome="stale"} 2',
    );
    expect(body).toContain(
      'tim_mirror_callbacks_total{command="Sns.CallbackFriendDelete",outcome="wrong_app"} 2',
    );
    expect(body).toContain(
      'tim_mirror_callbacks_total{command="Sns.CallbackFriendDelete",outcome="too_large"} 1',
    );
    expect(body).toContain('tim_mirror_callback_pending_marks 0');
  });
});

describe('loadCallbackConfig', () => {
  it('is off without a token, with defaults otherwise', () => {
    expect(loadCallbackConfig({})).toEqual({ host: '127.0.0.1', port: 8081, maxSkewSeconds: 300 });
    expect(
      loadCallbackConfig({
        TIM_CALLBACK_TOKEN: 't0k',
        CALLBACK_HOST: '0.0.0.0',
        CALLBACK_PORT: '9000',
        CALLBACK_MAX_SKEW: '1m',
      }),
    ).toEqual({ token: 't0k', host: '0.0.0.0', port: 9000, maxSkewSeconds: 60 });
  });

  it('with a token: refuses a port shared with the admin server, a tiny window, a bad port', () => {
    expect(loadCallbackConfig({ CALLBACK_PORT: '9000', HTTP_PORT: '9000' }).token).toBeUndefined();
    expect(() => loadCallbackConfig({ TIM_CALLBACK_TOKEN: 't', HTTP_PORT: '8081' })).toThrow(
      /must differ from HTTP_PORT/,
    );
    expect(() => loadCallbackConfig({ TIM_CALLBACK_TOKEN: 't', CALLBACK_MAX_SKEW: '1s' })).toThrow(
      ConfigError,
    );
    expect(() => loadCallbackConfig({ TIM_CALLBACK_TOKEN: 't', CALLBACK_PORT: 'x' })).toThrow(
      /CALLBACK_PORT/,
    );
  });

  it('never echoes the token', () => {
    const sign = callbackSign(TOKEN, 1);
    expect(sign).toHaveLength(64);
    // The receiver's default port clashes with this admin port: a config error, which must name
    // the variable without the token's value.
    let message = '';
    try {
      loadCallbackConfig({ TIM_CALLBACK_TOKEN: TOKEN, HTTP_PORT: '8081' });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/CALLBACK_PORT/);
    expect(message).not.toContain(TOKEN);
  });
});
