/**
 * Who may use the simulator's control API (it can rewrite the data): loopback clients always; any other
 * client (the compose demo's seeding step on the compose network) only with `SIM_CONTROL_TOKEN` as a
 * bearer token. The rule itself, then real requests from this machine's own non-loopback address.
 */
import { networkInterfaces } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { loadSimControlToken } from '../src/config.js';
import { BearerToken } from '../src/http/bearer-token.js';
import { controlRefusal } from '../src/simulator/control.js';
import { Simulator } from '../src/simulator/index.js';

const TOKEN = 'sim-control-token-for-tests';

describe('controlRefusal', () => {
  const token = new BearerToken(TOKEN);

  it('lets loopback clients in, with or without a token configured', () => {
    for (const addr of ['127.0.0.1', '127.5.6.7', '::1', '::ffff:127.0.0.1']) {
      expect(controlRefusal(addr, undefined, undefined), addr).toBeUndefined();
      expect(controlRefusal(addr, undefined, token), addr).toBeUndefined();
    }
  });

  it('refuses other clients when no token is configured, whatever they send', () => {
    for (const addr of ['172.18.0.4', '10.0.0.5', '::ffff:192.168.1.2', 'fd00::2', undefined]) {
      expect(controlRefusal(addr, `Bearer ${TOKEN}`, undefined), String(addr)).toMatch(
        /loopback clients only \(set SIM_CONTROL_TOKEN/,
      );
    }
  });

  it('lets other clients in with the configured token only', () => {
    expect(controlRefusal('172.18.0.4', `Bearer ${TOKEN}`, token)).toBeUndefined();
    for (const auth of [undefined, '', TOKEN, 'Bearer wrong-token-of-some-length', `Basic ${TOKEN}`]) {
      expect(controlRefusal('172.18.0.4', auth, token), String(auth)).toMatch(/Bearer <SIM_CONTROL_TOKEN>/);
    }
  });

  it('SIM_CONTROL_TOKEN must be long enough, and is optional', () => {
    expect(loadSimControlToken({})).toBeUndefined();
    expect(loadSimControlToken({ SIM_CONTROL_TOKEN: TOKEN })).toBe(TOKEN);
    expect(() => loadSimControlToken({ SIM_CONTROL_TOKEN: 'short' })).toThrow(
      /^SIM_CONTROL_TOKEN must be at least 16 characters/,
    );
  });
});

/** This machine's first non-loopback IPv4 address: traffic to it never leaves the machine. */
const ownAddress = Object.values(networkInterfaces())
  .flat()
  .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
if (!ownAddress)
  console.log('[simulator-control-access] no non-loopback IPv4 address: real-request tests skipped');

describe.skipIf(!ownAddress)(`control API over ${ownAddress ?? 'a non-loopback address'}`, () => {
  let sim: Simulator | undefined;
  afterEach(async () => {
    await sim?.close();
    sim = undefined;
  });

  async function start(controlToken?: string): Promise<string> {
    sim = new Simulator({
      generate: { accounts: 3, meanFriends: 2, oddIds: false },
      ...(controlToken ? { controlToken } : {}),
    });
    return sim.listen({ host: ownAddress as string, port: 0 });
  }

  it('answers 403 by default', async () => {
    const base = await start();
    const res = await fetch(`${base}/__sim/accounts`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.status).toBe(403);
    expect(((await res.json()) as { error: string }).error).toMatch(/SIM_CONTROL_TOKEN/);
    // friend_get is not the control API: it stays open to every client, as Tencent's API is.
    expect((await fetch(`${base}/v4/sns/friend_get`)).status).not.toBe(403);
  });

  it('answers with the data when the configured token is sent, 403 without it', async () => {
    const base = await start(TOKEN);
    expect((await fetch(`${base}/__sim/accounts`)).status).toBe(403);
    const res = await fetch(`${base}/__sim/accounts`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { accounts: string[] }).accounts).toHaveLength(3);
  });
});
