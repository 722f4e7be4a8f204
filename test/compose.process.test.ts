/**
 * `docker-compose.yml` as written, without a container engine: every service of a profile runs as a
 * local process with the command and environment the file gives it (see ./fixtures/compose.ts for the
 * mapping), the test's database standing in for the `postgres` service.
 *
 * - `demo`: the simulator, its seeding step and the mirror come up on their own; the mirror ends equal
 *   to the simulator, and a friend added at the simulator reaches it through the signed webhook.
 * - `app`: pointed at a simulator standing in for your real app (`TIM_BASE_URL` in `.env`), with
 *   `TIM_SECRET_KEY`, then with `TIM_USERSIG` and two replicas: `accounts.txt` is imported and those
 *   accounts (only those) are mirrored. Neither credential: one line naming both, exit code 2.
 *
 * In `demo`, the simulator runs inside a network namespace this file creates (./fixtures/netns.ts) and
 * its host name resolves to the namespace's end of the veth pair, so `seed` and the mirror call it from
 * a non-loopback address, as on a compose network (the simulator's control API refuses those without
 * SIM_CONTROL_TOKEN: the demo once failed on exactly that). `mirror-demo`, which the simulator calls
 * back, resolves to the host's end; every other name to 127.0.0.1. Test traffic goes only to loopback
 * and to those two veth addresses. Without root or iproute2 the demo runs on loopback alone, with the
 * reason printed; under CI that fails instead.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Kysely } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDb } from '../src/db/pool.js';
import type { Database } from '../src/db/schema.js';
import { type AccountTruth, generateApp, Simulator } from '../src/simulator/index.js';
import { generateUserSig } from '../src/tim/usersig.js';
import { diffAccount } from '../src/verify.js';
import { buildCli } from './fixtures/build.js';
import { type ComposeRun, runCompose } from './fixtures/compose.js';
import { waitUntil } from './fixtures/daemon-process.js';
import { createNetNs, requireNetNs, skipWithout } from './fixtures/netns.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const netns = await createNetNs('compose');
afterAll(async () => {
  if (netns.ok) await netns.close();
});
/** Without a namespace (and not under CI), the demo runs on loopback only: said here, once. */
const demoOnLoopback = skipWithout(
  netns,
  'compose',
  'the non-loopback part of the demo (seed and mirror calling the simulator across a veth pair; without it the demo runs on 127.0.0.1)',
);

/** Accounts whose mirrored friends differ from `truth`, with the first differences. */
async function mirrorDiffs(
  db: Kysely<Database>,
  ids: readonly string[],
  truth: (id: string) => Promise<AccountTruth>,
): Promise<string[]> {
  const diffs: string[] = [];
  for (const id of ids) {
    const t = await truth(id);
    diffs.push(...(await diffAccount(db, id, t.friends, 3)));
    const row = await db
      .selectFrom('tim.accounts')
      .select(['standard_sequence', 'custom_sequence'])
      .where('account_id', '=', id)
      .executeTakeFirst();
    if (row?.standard_sequence !== t.standardSequence || row?.custom_sequence !== t.customSequence) {
      diffs.push(
        `${id}: sequences ${row?.standard_sequence}/${row?.custom_sequence}, source ${t.standardSequence}/${t.customSequence}`,
      );
    }
    if (diffs.length > 10) break;
  }
  return diffs;
}

describe('docker-compose.yml, run as local processes', () => {
  let projectDir: string;
  let database: TestDatabase | undefined;
  let db: Kysely<Database> | undefined;
  let run: ComposeRun | undefined;

  beforeAll(async () => {
    await buildCli();
  });

  afterEach(async () => {
    await run?.down();
    run = undefined;
    await db?.destroy();
    db = undefined;
    await database?.drop();
    database = undefined;
    if (projectDir) await rm(projectDir, { recursive: true, force: true });
  });

  async function project(label: string, files: Record<string, string>): Promise<void> {
    projectDir = await mkdtemp(path.join(tmpdir(), 'friend-mirror-compose-'));
    for (const [name, text] of Object.entries(files)) await writeFile(path.join(projectDir, name), text);
    database = await createTestDatabase(label);
    db = createDb(database.url, { maxConnections: 2 });
  }

  it('demo: seeded from the simulator over the network, the mirror ends equal to it and follows a webhook', async () => {
    // A smaller app than the default 1,000 for a shared CI machine, held still so "equal" is a fixed target.
    await project('compose_demo', { '.env': 'SIM_ACCOUNTS=200\nSIM_MUTATE_EVERY=\nLOG_LEVEL=info\n' });
    const ns = demoOnLoopback ? undefined : requireNetNs(netns);
    run = await runCompose({
      profile: 'demo',
      projectDir,
      databaseUrl: database!.url,
      ...(ns && {
        netns: { wrap: ns.wrap, services: ['simulator'] },
        serviceAddresses: { simulator: ns.nsAddress, 'mirror-demo': ns.hostAddress },
      }),
    });
    const r = run;
    await r.started;
    const sim = r.url('simulator', 5080);
    const auth = { authorization: `Bearer ${r.instance('simulator').env.SIM_CONTROL_TOKEN}` };
    const control = async <T>(p: string, body?: unknown): Promise<T> => {
      const res = await fetch(`${sim}${p}`, {
        method: body === undefined ? 'GET' : 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      if (!res.ok) throw new Error(`${p}: HTTP ${res.status} ${await res.text()}`);
      return (await res.json()) as T;
    };
    if (ns) {
      // What `seed` and the mirror call is across the veth pair: not loopback, so no token, no data.
      expect(sim).toBe(`http://${ns.nsAddress}:${r.instance('simulator').ports.get(5080)}`);
      expect((await fetch(`${sim}/__sim/accounts`)).status).toBe(403);
    }
    const seed = r.instance('seed');
    const seeded = await seed.nextExit(120_000);
    expect(seeded, r.tail()).toEqual({ code: 0, signal: null });
    expect(seed.exits, 'seeding needed no restart').toHaveLength(1);

    const { accounts } = await control<{ accounts: string[] }>('/__sim/accounts');
    expect(accounts.length).toBeGreaterThanOrEqual(200);
    expect(seed.logs.join('\n')).toContain(
      `added ${accounts.length} of ${accounts.length} simulated accounts`,
    );

    expect(seed.logs.join('\n')).toContain(
      `added ${accounts.length} of ${accounts.length} simulated accounts`,
    );
    const truth = (id: string) => control<AccountTruth>(`/__sim/truth?account=${encodeURIComponent(id)}`);
    const everySynced = async () =>
      Number(
        (
          await db!
            .selectFrom('tim.accounts')
            .select((eb) => eb.fn.countAll<string>().as('n'))
            .where('last_synced_at', 'is not', null)
            .executeTakeFirstOrThrow()
        ).n,
      ) === accounts.length;
    await waitUntil('every account synced', everySynced, 180_000, () => r.tail());
    expect(await mirrorDiffs(db!, accounts, truth)).toEqual([]);

    // The mirror's admin server answers, and is ready.
    const admin = r.url('mirror-demo', 8080);
    expect((await fetch(`${admin}/readyz`)).status).toBe(200);

    // A new friendship at the simulator: its signed webhook reaches the mirror's receiver, which pulls
    // both accounts long before SYNC_INTERVAL (1m) would.
    const [a, b] = [accounts[0]!, accounts[1]!];
    const before = (await truth(a)).friends.some((f) => f.friendId === b);
    await control(before ? '/__sim/friends/delete' : '/__sim/friends/add', { account: a, friendId: b });
    await waitUntil(
      'the webhook-triggered pull',
      async () => (await mirrorDiffs(db!, [a, b], truth)).length === 0,
      30_000,
      async () => `${(await mirrorDiffs(db!, [a, b], truth)).join('\n')}\n${r.tail()}`,
    );
    const callbacks = await control<{ stats: { sent: number; ok: number } }>('/__sim/callback');
    expect(callbacks.stats.ok).toBeGreaterThanOrEqual(1);
    expect(await mirrorDiffs(db!, accounts, truth)).toEqual([]);

    for (const name of ['simulator', 'mirror-demo']) {
      expect(r.instance(name).exits, `${name} stayed up\n${r.tail()}`).toEqual([]);
    }
  });

  describe('app, against a simulator standing in for your app', () => {
    const APP_ID = 1400000777;
    const KEY = 'compose-app-secret-key';
    let sim: Simulator;
    let simUrl: string;
    let listed: string[];

    beforeAll(async () => {
      sim = new Simulator({
        store: generateApp({ accounts: 40, meanFriends: 20, maxFriends: 60, seed: 5 }),
        sdkAppId: APP_ID,
        secretKey: KEY,
        rateLimit: 0,
      });
      simUrl = await sim.listen();
      listed = sim.store.accountIds().slice(0, 25);
    });
    afterAll(async () => {
      await sim?.close();
    });

    const env = (lines: string[]) =>
      `${[`TIM_SDKAPPID=${APP_ID}`, `TIM_BASE_URL=${simUrl}`, ...lines].join('\n')}\n`;

    async function upAndMirrored(credentials: string[], scale: number): Promise<ComposeRun> {
      await project('compose_app', { '.env': env(credentials), 'accounts.txt': `${listed.join('\n')}\n` });
      run = await runCompose({
        profile: 'app',
        projectDir,
        databaseUrl: database!.url,
        scale: { mirror: scale },
      });
      const r = run;
      await r.started;
      const imported = await r.instance('accounts').nextExit(60_000);
      expect(imported, r.tail()).toEqual({ code: 0, signal: null });
      expect(r.instance('accounts').logs.join('\n')).toContain(
        `read ${listed.length} line(s): added ${listed.length}`,
      );
      const truth = async (id: string) => sim.store.truth(id);
      await waitUntil(
        'the listed accounts mirrored',
        async () => (await mirrorDiffs(db!, listed, truth)).length === 0,
        120_000,
        async () => `${(await mirrorDiffs(db!, listed, truth)).join('\n')}\n${r.tail()}`,
      );
      const mirrored = (await db!.selectFrom('tim.accounts').select('account_id').execute()).map(
        (x) => x.account_id,
      );
      expect(mirrored.sort()).toEqual([...listed].sort());
      for (let i = 0; i < scale; i++) {
        expect((await fetch(`${r.url('mirror', 8080, i)}/readyz`)).status, `replica ${i + 1}`).toBe(200);
        expect(r.instance('mirror', i).exits, `replica ${i + 1} stayed up\n${r.tail()}`).toEqual([]);
      }
      return r;
    }

    it('with TIM_SECRET_KEY: imports accounts.txt and mirrors exactly those accounts', async () => {
      await upAndMirrored([`TIM_SECRET_KEY=${KEY}`], 1);
    });

    it('with TIM_USERSIG and --scale mirror=2: the same, each replica on its own ports', async () => {
      const sig = generateUserSig({
        secretKey: KEY,
        sdkAppId: APP_ID,
        identifier: 'administrator',
        expireSeconds: 86_400,
      });
      const r = await upAndMirrored([`TIM_USERSIG=${sig}`], 2);
      expect(r.instance('mirror', 0).ports.get(8080)).not.toBe(r.instance('mirror', 1).ports.get(8080));
      expect(r.instance('mirror', 0).env.TIM_SECRET_KEY).toBe('');
    });

    it('with neither credential: the mirror stops with one line naming both, exit code 2', async () => {
      await project('compose_app_nocreds', { '.env': env([]), 'accounts.txt': `${listed[0]}\n` });
      run = await runCompose({
        profile: 'app',
        projectDir,
        databaseUrl: database!.url,
      });
      await run.started;
      const mirror = run.instance('mirror');
      const exit = await mirror.nextExit(60_000);
      expect(exit.code).toBe(2);
      const said = mirror.logs.filter((l) => !/exited \(/.test(l));
      expect(said).toEqual([
        'mirror-1 | friend-mirror: configuration error: TIM_SECRET_KEY or TIM_USERSIG must be set, exactly one of the two',
      ]);
    });
  });
});
