/**
 * The simulator's friend webhooks: what it POSTs (URL parameters, signature, body per command) for
 * friends added and removed through every way its data changes (store, friends/add, friends/delete,
 * mutate, random mutations), nothing for tag edits, one attempt with no retry, and the control
 * endpoints that set the target without ever showing the token.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generateApp, Simulator } from '../src/simulator/index.js';
import { CallbackVerifier } from '../src/tim/callback-sign.js';

const APP = 1400000321;
const TOKEN = 'sim-callback-token-123';

interface Received {
  query: URLSearchParams;
  path: string;
  body: Record<string, unknown>;
}

let received: Received[] = [];
let answerStatus = 200;
let target: Server;
let targetUrl: string;
let sim: Simulator;
let base: string;

beforeAll(async () => {
  target = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const [path, search] = (req.url ?? '').split('?');
      received.push({
        path: path!,
        query: new URLSearchParams(search),
        body: JSON.parse(Buffer.concat(chunks).toString('utf8')),
      });
      res.writeHead(answerStatus, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({ ActionStatus: answerStatus === 200 ? 'OK' : 'FAIL', ErrorInfo: '', ErrorCode: 0 }),
      );
    });
  });
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
  targetUrl = `http://127.0.0.1:${(target.address() as AddressInfo).port}/tim/callback`;
  sim = new Simulator({
    store: generateApp({ accounts: 20, meanFriends: 5, seed: 3 }),
    sdkAppId: APP,
    seed: 1,
  });
  base = await sim.listen();
  sim.setCallback({ url: targetUrl, token: TOKEN });
});

afterAll(async () => {
  await sim?.close();
  await new Promise((r) => target?.close(r));
});

beforeEach(() => {
  received = [];
  answerStatus = 200;
});

async function control(path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}/__sim/${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: await res.json() };
}

describe('simulator webhooks', () => {
  it('friends/delete (both sides): one signed Sns.CallbackFriendDelete with both pairs', async () => {
    const [a, b] = sim.store.accountIds();
    sim.store.addFriend(a!, b!);
    sim.store.addFriend(b!, a!);
    await sim.callbacksIdle();
    received = [];

    const r = await control('friends/delete', { account: a, friendId: b });
    expect(r).toEqual({ status: 200, json: { changed: [a, b] } });
    await sim.callbacksIdle();
    expect(received).toHaveLength(1);
    const cb = received[0]!;
    expect(cb.path).toBe('/tim/callback');
    expect(Object.fromEntries(cb.query)).toMatchObject({
      SdkAppid: String(APP),
      CallbackCommand: 'Sns.CallbackFriendDelete',
      contenttype: 'json',
      ClientIP: '127.0.0.1',
      OptPlatform: 'RESTAPI',
    });
    const verifier = new CallbackVerifier({ token: TOKEN, maxSkewSeconds: 5 });
    expect(verifier.check(cb.query.get('Sign'), cb.query.get('RequestTime'))).toBeUndefined();
    expect(cb.body).toEqual({
      CallbackCommand: 'Sns.CallbackFriendDelete',
      PairList: [
        { From_Account: a, To_Account: b },
        { From_Account: b, To_Account: a },
      ],
    });
  });

  it('friends/add: Sns.CallbackFriendAdd with Initiator_Account, ClientCmd, Admin_Account, ForceFlag', async () => {
    const [a] = sim.store.accountIds();
    const r = await control('friends/add', { account: a, friendId: 'outsider', both: true });
    // 'outsider' is not a simulated account: only a's list changes.
    expect(r.json).toEqual({ changed: [a] });
    await sim.callbacksIdle();
    expect(received.map((x) => x.body)).toEqual([
      {
        CallbackCommand: 'Sns.CallbackFriendAdd',
        PairList: [{ From_Account: a, To_Account: 'outsider', Initiator_Account: a }],
        ClientCmd: 'friend_add',
        Admin_Account: 'administrator',
        ForceFlag: 1,
      },
    ]);
    // Adding a friend that is already there is a tag edit at most: no callback.
    received = [];
    await control('friends/add', { account: a, friendId: 'outsider', standard: { Tag_SNS_IM_Remark: 'x' } });
    await sim.callbacksIdle();
    expect(received).toEqual([]);
  });

  it('mutate: friend adds and removes send callbacks, tag edits none', async () => {
    const [a, b] = sim.store.accountIds();
    await control('mutate', {
      mutations: [
        { op: 'addFriend', account: a, friendId: 'm1' },
        { op: 'setStandardTag', account: a, friendId: 'm1', tag: 'Tag_SNS_IM_Remark', value: 'r' },
        { op: 'removeFriend', account: a, friendId: 'm1' },
        { op: 'addFriend', account: b, friendId: 'm2' },
      ],
    });
    await sim.callbacksIdle();
    // One step: one callback per command, pairs in order.
    expect(
      received.map((x) => [x.query.get('CallbackCommand'), (x.body.PairList as unknown[]).length]),
    ).toEqual([
      ['Sns.CallbackFriendAdd', 2],
      ['Sns.CallbackFriendDelete', 1],
    ]);
  });

  it('random mutations send one callback per command, at most 100 pairs each', async () => {
    await control('mutate', { random: { fraction: 1, seed: 9 } });
    await sim.callbacksIdle();
    expect(received.length).toBeGreaterThan(0);
    for (const x of received) expect((x.body.PairList as unknown[]).length).toBeLessThanOrEqual(100);
    expect(new Set(received.map((x) => x.query.get('CallbackCommand'))).size).toBe(received.length);
  });

  it('fire and forget: a failed answer is counted and not retried', async () => {
    answerStatus = 500;
    const before = sim.callbackStats();
    sim.store.addFriend(sim.store.accountIds()[2]!, 'retry-check');
    await sim.callbacksIdle();
    await new Promise((r) => setTimeout(r, 100));
    expect(received).toHaveLength(1);
    const after = sim.callbackStats();
    expect(after.failed - before.failed).toBe(1);
    expect(after.inFlight).toBe(0);
    expect(sim.callbackDeliveries(1)[0]).toMatchObject({ status: 500, pairs: 1 });
  });

  it('the control API sets and stops the target, and never shows the token', async () => {
    const shown = await control('callback');
    expect(shown.json.target).toEqual({ url: targetUrl, signed: true });
    expect(JSON.stringify(shown.json)).not.toContain(TOKEN);
    expect(JSON.stringify(await control('stats'))).not.toContain(TOKEN);

    expect((await control('callback', { url: targetUrl })).json.target).toEqual({
      url: targetUrl,
      signed: false,
    });
    sim.store.addFriend(sim.store.accountIds()[3]!, 'unsigned-one');
    await sim.callbacksIdle();
    expect(received.at(-1)!.query.has('Sign')).toBe(false);
    expect(received.at(-1)!.query.has('RequestTime')).toBe(false);

    expect((await control('callback', { url: null })).json.target).toBe(null);
    received = [];
    sim.store.addFriend(sim.store.accountIds()[3]!, 'nobody-hears');
    await sim.callbacksIdle();
    expect(received).toEqual([]);

    expect((await control('callback', { url: 'ftp://x' })).status).toBe(400);
    expect((await control('callback', { url: 5 })).status).toBe(400);
    expect((await control('friends/delete', { account: 'no-such', friendId: 'x' })).status).toBe(400);
    expect((await control('friends/add', { account: 1 })).status).toBe(400);
    sim.setCallback({ url: targetUrl, token: TOKEN });
  });
});
