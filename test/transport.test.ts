/**
 * The client's HTTP half in this thread (UndiciTransport) against the simulator: typed errors that
 * carry when their call was sent, bodies in buffers of their own; and the client's call metrics,
 * which time the HTTP call, not the wait for a turn, and skip calls that were never sent. Also the
 * wiring's choice of call thread: `TIM_CALL_THREAD` is checked like every variable, the call thread
 * is the default (from these TypeScript sources too: it runs the worker the test run compiled), and
 * without its compiled worker the mirror paces in-thread and warns. The call thread's own behaviour
 * (pacing, crashes, shutdown) is tested in call-thread.process.test.ts.
 */
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { timCallsFrom } from '../src/app.js';
import { ConfigError, loadSyncConfig, loadTimConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { generateApp, Simulator } from '../src/simulator/index.js';
import { CallLimiter } from '../src/sync/limiter.js';
import { type CallEvent, TimClient } from '../src/tim/client.js';
import {
  TimAbortError,
  TimApiError,
  TimDecodeError,
  TimHttpError,
  TimNetworkError,
  TimTimeoutError,
} from '../src/tim/errors.js';
import { absoluteNow, UndiciTransport } from '../src/tim/transport.js';
import { SigningUserSig } from '../src/tim/usersig.js';

const APP = 1400000456;
const KEY = 'transport-test-key';

describe('UndiciTransport and TimClient', () => {
  let sim: Simulator;
  let baseUrl: string;
  const userSig = new SigningUserSig({ secretKey: KEY, sdkAppId: APP, identifier: 'administrator' });

  beforeAll(async () => {
    sim = new Simulator({
      store: generateApp({ accounts: 5, meanFriends: 5, maxFriends: 10, seed: 2 }),
      sdkAppId: APP,
      secretKey: KEY,
      rateLimit: 0,
    });
    baseUrl = await sim.listen();
  });
  afterAll(async () => {
    await sim?.close();
  });

  const path = () =>
    `/v4/sns/friend_get?sdkappid=${APP}&identifier=administrator&usersig=${userSig.current()}&random=1&contenttype=json`;
  const body = () => JSON.stringify({ From_Account: sim.store.accountIds()[0], StartIndex: 0 });

  it('returns the body in a buffer of its own, with when it was sent', async () => {
    const t = new UndiciTransport({
      origin: baseUrl,
      timeoutMs: 5_000,
      connections: 2,
      maxBodyBytes: 1 << 20,
    });
    try {
      const before = absoluteNow();
      const reply = await t.post(path(), body());
      expect(reply.sentAt).toBeGreaterThanOrEqual(before);
      expect(reply.sentAt).toBeLessThanOrEqual(absoluteNow());
      expect(reply.body.byteOffset).toBe(0);
      expect(reply.body.buffer.byteLength).toBe(reply.body.byteLength);
      expect(JSON.parse(new TextDecoder().decode(reply.body)).ActionStatus).toBe('OK');
    } finally {
      await t.close();
      await t.close(); // twice is fine
    }
  });

  it('throws typed errors with sentAt, and TimAbortError without it for a call never sent', async () => {
    const t = new UndiciTransport({ origin: baseUrl, timeoutMs: 300, connections: 2, maxBodyBytes: 40 });
    const failure = async (kind?: 'http-502' | 'reset' | 'timeout') => {
      if (kind) sim.injectFaults(kind);
      return t.post(path(), body()).then(
        () => new Error('no error') as Error & { sentAt?: number },
        (e: unknown) => e as Error & { sentAt?: number },
      );
    };
    try {
      for (const [kind, cls] of [
        ['http-502', TimHttpError],
        ['reset', TimNetworkError],
        ['timeout', TimTimeoutError],
        [undefined, TimDecodeError], // the body is over 40 bytes
      ] as const) {
        const err = await failure(kind);
        expect(err, String(kind)).toBeInstanceOf(cls);
        expect(err.sentAt, String(kind)).toBeTypeOf('number');
        expect(err.message.toLowerCase()).not.toContain('usersig');
      }
      const aborted = await t
        .post(path(), body(), AbortSignal.abort(new Error('stop')))
        .catch((e: unknown) => e as TimAbortError);
      expect(aborted).toBeInstanceOf(TimAbortError);
      expect(aborted.sentAt).toBeUndefined();
    } finally {
      await t.close();
    }
  });

  it("times a call from when it was sent, not from the limiter's queue, and skips calls never sent", async () => {
    const events: CallEvent[] = [];
    const client = new TimClient({
      baseUrl,
      sdkAppId: APP,
      identifier: 'administrator',
      userSig,
      onCall: (e) => events.push(e),
    });
    const inner = new UndiciTransport({
      origin: baseUrl,
      timeoutMs: 5_000,
      connections: 1,
      maxBodyBytes: 1 << 20,
    });
    // A transport that waits 300 ms before sending, as the call thread's limiter may.
    const slow = new TimClient({
      baseUrl,
      sdkAppId: APP,
      identifier: 'administrator',
      userSig,
      onCall: (e) => events.push(e),
      transport: {
        post: async (p, b, s) => {
          await new Promise((r) => setTimeout(r, 300));
          return inner.post(p, b, s);
        },
        close: () => inner.close(),
      },
    });
    try {
      const req = { From_Account: sim.store.accountIds()[0]!, StartIndex: 0 };
      const started = performance.now();
      await slow.friendGet(req);
      expect(performance.now() - started).toBeGreaterThanOrEqual(290);
      expect(events).toHaveLength(1);
      expect(events[0]!.outcome).toBe('ok');
      expect(events[0]!.durationMs).toBeLessThan(250);

      // An error found in the answer is timed and carries its call's sentAt too.
      sim.injectFaults('error:30006');
      const apiErr = (await client.friendGet(req).catch((e: unknown) => e)) as TimApiError;
      expect(apiErr).toBeInstanceOf(TimApiError);
      expect(apiErr.sentAt).toBeTypeOf('number');
      expect(events.at(-1)).toMatchObject({ outcome: 'TIM_ERR_API', errorCode: 30006 });

      // Aborted before it was sent: no HTTP call, so no event.
      const n = events.length;
      const ac = new AbortController();
      ac.abort();
      await expect(client.friendGet(req, ac.signal)).rejects.toBeInstanceOf(TimAbortError);
      expect(events).toHaveLength(n);
    } finally {
      await slow.close();
      await client.close();
    }
  });
});

describe('TIM_CALL_THREAD', () => {
  const base = { TIM_SDKAPPID: String(APP), TIM_SECRET_KEY: KEY };

  it('defaults to true, takes true/false, and refuses anything else with a one-line message', () => {
    expect(loadTimConfig(base).callThread).toBe(true);
    expect(loadTimConfig({ ...base, TIM_CALL_THREAD: 'false' }).callThread).toBe(false);
    expect(loadTimConfig({ ...base, TIM_CALL_THREAD: 'on' }).callThread).toBe(true);
    expect(() => loadTimConfig({ ...base, TIM_CALL_THREAD: 'maybe' })).toThrow(ConfigError);
    expect(() => loadTimConfig({ ...base, TIM_CALL_THREAD: 'maybe' })).toThrow(
      'TIM_CALL_THREAD must be true or false, got "maybe"',
    );
  });

  /** The wiring at the given settings, logging into `lines`; `calls.close()` when done. */
  function wire(env: Record<string, string>, opts: { workerUrl?: URL } = {}) {
    const lines: { level: number; msg: string; reason?: string }[] = [];
    const log = createLogger(
      'debug',
      new Writable({
        write(chunk, _enc, done) {
          lines.push(JSON.parse(String(chunk)));
          done();
        },
      }),
    );
    // Tests take no OS priority.
    const tim = loadTimConfig({ ...base, ...env });
    return { calls: timCallsFrom(tim, loadSyncConfig(base), log, opts), lines };
  }
  const warnings = <L extends { level: number }>(lines: L[]) => lines.filter((l) => l.level >= 40);

  it('by default paces and sends from the call thread, whose worker the test run compiled', async () => {
    const sim = new Simulator({
      store: generateApp({ accounts: 2, meanFriends: 3, maxFriends: 5, seed: 4 }),
      sdkAppId: APP,
      secretKey: KEY,
      rateLimit: 0,
    });
    const { calls, lines } = wire({ TIM_BASE_URL: await sim.listen() });
    try {
      expect(calls.callThread).toBe(true);
      expect(calls.limiter).not.toBeInstanceOf(CallLimiter);
      const id = sim.store.accountIds()[0]!;
      const page = await calls.client.friendGet({ From_Account: id, StartIndex: 0 });
      const truth = sim.store.truth(id);
      expect(page.items.map((i) => i.friendId).sort()).toEqual(truth.friends.map((f) => f.friendId));
      expect(page.standardSequence).toBe(truth.standardSequence);
      expect(sim.calls()).toHaveLength(1);
      expect(warnings(lines)).toEqual([]);
    } finally {
      await calls.close();
      await sim.close();
    }
  });

  it('TIM_CALL_THREAD=false paces and sends in this thread, and says nothing of it', async () => {
    const { calls, lines } = wire({ TIM_CALL_THREAD: 'false' });
    try {
      expect(calls.callThread).toBe(false);
      expect(calls.limiter).toBeInstanceOf(CallLimiter);
      expect(warnings(lines)).toEqual([]);
    } finally {
      await calls.close();
    }
  });

  it('paces in this thread when the compiled worker is missing (a packaging fault), and warns why', async () => {
    const missing = new URL('./no-such-dir/call-thread-worker.js', import.meta.url);
    const { calls, lines } = wire({}, { workerUrl: missing });
    try {
      expect(calls.callThread).toBe(false);
      expect(calls.limiter).toBeInstanceOf(CallLimiter);
      expect(warnings(lines)).toEqual([
        expect.objectContaining({ msg: expect.stringMatching(/^the call thread cannot start/) }),
      ]);
      expect(warnings(lines)[0]!.reason).toContain(missing.href);
    } finally {
      await calls.close();
    }
  });
});
