/**
 * Secrets stay secret: with LOG_LEVEL=trace, through successful syncs, UserSig renewals, network
 * faults, a configuration error from Tencent, and the admin server (right and wrong tokens,
 * metrics), nothing the process prints or serves contains the secret key, a UserSig (even inside a
 * URL), the admin token or the database password.
 */
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import { createLogger } from '../src/log.js';
import { generateApp, Simulator } from '../src/simulator/index.js';
import { decodeUserSig } from '../src/tim/usersig.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const APP = 1400000999;
const SECRET_KEY = 'sEcReT-kEy-5f2a9c0d7e1b4a83';
const ADMIN_TOKEN = 'aDmIn-ToKeN-0c8e7d6f5a4b3921';
const DB_PASSWORD = 'dB-pAsS-77aa11bb22cc';

/** Everything printed: logs at trace, command output, error output, HTTP answers. */
let printed = '';
const sink = new Writable({
  write(chunk, _enc, done) {
    printed += chunk.toString();
    done();
  },
});

describe('secrets', () => {
  let database: TestDatabase;
  let sim: Simulator;
  let env: Record<string, string>;

  const run = (argv: string[], signal?: AbortSignal) =>
    main(argv, {
      env,
      log: createLogger('trace', sink),
      out: (l) => {
        printed += `${l}\n`;
      },
      errOut: (t) => {
        printed += t;
      },
      ...(signal ? { signal } : {}),
    });

  beforeAll(async () => {
    database = await createTestDatabase('secrets');
    // Put a password in the URL whatever the server's auth: trust auth ignores it, password auth needs it.
    const url = new URL(database.url);
    const password = url.password || DB_PASSWORD;
    url.password = password;
    sim = new Simulator({
      store: generateApp({ accounts: 12, meanFriends: 5, maxFriends: 20, seed: 5 }),
      sdkAppId: APP,
      secretKey: SECRET_KEY,
      pageSize: 3,
      rateLimit: 0,
    });
    env = {
      DATABASE_URL: url.toString(),
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: SECRET_KEY,
      TIM_BASE_URL: await sim.listen(),
      ADMIN_TOKEN,
      HTTP_PORT: '0',
      LOG_LEVEL: 'trace',
      SYNC_RETRY_ATTEMPTS: '2',
    };
    (env as Record<string, string>).__password = password;
  });
  afterAll(async () => {
    await sim?.close();
    await database?.drop();
  });

  it('never prints or serves a secret', async () => {
    await run(['accounts', 'add', ...sim.store.accountIds()]);
    // Faults that produce error log lines: resets, truncation, a refused UserSig (70001 → renew).
    sim.injectFaults('reset', 2);
    sim.injectFaults('truncate', 1);
    sim.injectFaults('error:70001', 1);
    expect(await run(['sync', '--all'])).toBe(0);

    // The daemon with its admin server: resync with a wrong and a right token, readiness, metrics.
    const stop = new AbortController();
    const daemon = run(['run'], stop.signal);
    let admin: string | undefined;
    for (let i = 0; i < 100 && !admin; i++) {
      await new Promise((r) => setTimeout(r, 100));
      admin = /"admin":"(http:[^"]+)"/.exec(printed)?.[1];
    }
    expect(admin).toBeDefined();
    const answers: string[] = [];
    for (const [headers, body] of [
      [{ authorization: 'Bearer wrong-token-wrong-token' }, { all: true }],
      [{ authorization: `Bearer ${ADMIN_TOKEN}` }, { all: true, full: true }],
      [{ authorization: `Bearer ${ADMIN_TOKEN}` }, { ids: 'not-a-list' }],
    ] as const) {
      const res = await fetch(`${admin}/resync`, { method: 'POST', headers, body: JSON.stringify(body) });
      answers.push(`${res.status} ${await res.text()}`);
    }
    expect(answers.map((a) => a.slice(0, 3))).toEqual(['401', '202', '400']);
    for (const path of ['/readyz', '/metrics', '/healthz'])
      answers.push(await (await fetch(`${admin}${path}`)).text());
    await new Promise((r) => setTimeout(r, 1500));
    stop.abort();
    expect(await daemon).toBe(0);

    // A configuration error reported by Tencent: its message is printed, still without secrets.
    expect(await run(['sync', '--all'], undefined)).toBe(0);
    env.TIM_IDENTIFIER = 'not-admin';
    await run(['resync', '--all']);
    expect(await run(['sync'])).toBe(2);
    delete env.TIM_IDENTIFIER;

    const everything = `${printed}\n${answers.join('\n')}`;
    expect(everything.length).toBeGreaterThan(10_000);
    expect(everything).toContain('"level":20'); // debug lines (per account, per retry) were printed
    for (const secret of [SECRET_KEY, ADMIN_TOKEN, env.__password!]) {
      expect(everything.includes(secret), `leaked ${secret.slice(0, 4)}…`).toBe(false);
    }
    expect(everything.toLowerCase()).not.toContain('usersig=');
    // Any token that decodes as a UserSig is a leak, whatever surrounds it.
    const leakedSigs = (everything.match(/[A-Za-z0-9*\-_]{60,}/g) ?? []).filter((t) => decodeUserSig(t));
    expect(leakedSigs).toEqual([]);
  });
});
