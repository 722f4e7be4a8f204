/**
 * Who may use the simulator's control API (it can rewrite the data): loopback clients always; any other
 * client (the compose demo's seeding step on the compose network) only with `SIM_CONTROL_TOKEN` as a
 * bearer token. The rule itself, then real requests from a client in a network namespace this file
 * creates (./fixtures/netns.ts): it calls the simulator on the host's end of the veth pair, so it
 * arrives from the namespace's address, never loopback. No other address is a target. Without root or
 * iproute2 those requests are skipped with the reason printed; under CI they fail instead.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadSimControlToken } from '../src/config.js';
import { BearerToken } from '../src/http/bearer-token.js';
import { controlRefusal } from '../src/simulator/control.js';
import { Simulator } from '../src/simulator/index.js';
import { createNetNs, requireNetNs, skipWithout } from './fixtures/netns.js';

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

const netns = await createNetNs('simulator-control-access');
afterAll(async () => {
  if (netns.ok) await netns.close();
});

/**
 * One request from inside the namespace (its own `node`, so its source is the namespace's veth
 * address): the status and body it got.
 */
async function fromNamespace(url: string, headers: Record<string, string> = {}) {
  const ns = requireNetNs(netns);
  const script = `fetch(${JSON.stringify(url)}, { headers: ${JSON.stringify(headers)} })
    .then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })))
    .catch((e) => { console.error(String(e.cause ?? e)); process.exit(1); })`;
  const out = await ns.exec(process.execPath, ['-e', script], { timeoutMs: 20_000 });
  if (out.code !== 0) throw new Error(`client in ${ns.name} failed (${out.code}): ${out.stderr}`);
  return JSON.parse(out.stdout) as { status: number; body: string };
}

describe.skipIf(skipWithout(netns, 'simulator-control-access'))(
  'control API, called from a network namespace (a non-loopback client)',
  () => {
    let sim: Simulator | undefined;
    afterEach(async () => {
      await sim?.close();
      sim = undefined;
    });

    /** The simulator on the host's end of the veth pair, which the namespace reaches it at. */
    async function start(controlToken?: string): Promise<string> {
      const ns = requireNetNs(netns);
      sim = new Simulator({
        generate: { accounts: 3, meanFriends: 2, oddIds: false },
        ...(controlToken ? { controlToken } : {}),
      });
      const base = await sim.listen({ host: ns.hostAddress, port: 0 });
      expect(base).toBe(`http://${ns.hostAddress}:${new URL(base).port}`);
      return base;
    }

    it('answers 403 by default', async () => {
      const base = await start();
      const res = await fromNamespace(`${base}/__sim/accounts`, { authorization: `Bearer ${TOKEN}` });
      expect(res.status).toBe(403);
      expect((JSON.parse(res.body) as { error: string }).error).toMatch(/SIM_CONTROL_TOKEN/);
      // friend_get is not the control API: it stays open to every client, as Tencent's API is.
      expect((await fromNamespace(`${base}/v4/sns/friend_get`)).status).not.toBe(403);
    });

    it('answers with the data when the configured token is sent, 403 without it', async () => {
      const base = await start(TOKEN);
      expect((await fromNamespace(`${base}/__sim/accounts`)).status).toBe(403);
      const res = await fromNamespace(`${base}/__sim/accounts`, { authorization: `Bearer ${TOKEN}` });
      expect(res.status).toBe(200);
      expect((JSON.parse(res.body) as { accounts: string[] }).accounts).toHaveLength(3);
    });
  },
);
