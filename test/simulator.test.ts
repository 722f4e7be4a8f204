/**
 * The friend_get simulator: Tencent's request checks and codes, opaque paging, the sequence rule under
 * both readings, sequence bumps, the rate limit, faults, the onCall hook, the call log, the generator
 * and the control API. Talks to the simulator over real HTTP with plain `fetch`; no database.
 */
import { randomInt } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CallRecord, SequenceReading, SimCall, TagRecord } from '../src/simulator/index.js';
import {
  buildPage,
  buildPageJson,
  FriendStore,
  generateApp,
  maxInWindow,
  ODD_ACCOUNT_IDS,
  Simulator,
  UNKNOWN_TAG,
  warmPageJson,
} from '../src/simulator/index.js';
import type { JsonValue } from '../src/tim/friend-get.js';
import { generateUserSig } from '../src/tim/usersig.js';

const SDKAPPID = 1_400_000_000;
const SECRET = 'sim-secret-key';
const ADMIN = 'administrator';

function sig(
  opts: { identifier?: string; secretKey?: string; sdkAppId?: number; now?: number } = {},
): string {
  return generateUserSig({
    secretKey: opts.secretKey ?? SECRET,
    sdkAppId: opts.sdkAppId ?? SDKAPPID,
    identifier: opts.identifier ?? ADMIN,
    expireSeconds: 86_400,
    ...(opts.now === undefined ? {} : { now: opts.now }),
  });
}
const ADMIN_SIG = sig();

/** Query overrides; `null` leaves the parameter out. */
type Query = Partial<Record<'sdkappid' | 'identifier' | 'usersig' | 'random' | 'contenttype', string | null>>;

function apiUrl(base: string, query: Query = {}, path = '/v4/sns/friend_get'): string {
  const params: Record<string, string | null> = {
    sdkappid: String(SDKAPPID),
    identifier: ADMIN,
    usersig: ADMIN_SIG,
    random: String(randomInt(2 ** 32)),
    contenttype: 'json',
    ...query,
  };
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null) search.set(k, v);
  return `${base}${path}?${search}`;
}

interface OkPage {
  UserDataItem: { To_Account: string; ValueItem?: { Tag: string; Value: JsonValue }[] }[];
  StandardSequence: number;
  CustomSequence: number;
  FriendNum: number;
  CompleteFlag: number;
  NextStartIndex: number;
  ActionStatus: string;
  ErrorCode: number;
  ErrorInfo: string;
  ErrorDisplay: string;
}

async function post(
  base: string,
  body: unknown,
  query: Query = {},
): Promise<{ status: number; json: OkPage }> {
  const res = await fetch(apiUrl(base, query), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as OkPage };
}

async function errorCodeOf(base: string, body: unknown, query: Query = {}): Promise<number> {
  const { status, json } = await post(base, body, query);
  expect(status).toBe(200);
  if (json.ErrorCode !== 0) {
    expect(json.ActionStatus).toBe('FAIL');
    expect(json.ErrorDisplay).toBe('');
    expect(typeof json.ErrorInfo).toBe('string');
  }
  return json.ErrorCode;
}

/** Pages through one account; returns every page. */
async function pullAll(
  base: string,
  account: string,
  seqs: { StandardSequence?: number; CustomSequence?: number } = {},
): Promise<OkPage[]> {
  const pages: OkPage[] = [];
  let startIndex = 0;
  for (let i = 0; i < 100; i++) {
    const { json } = await post(base, { From_Account: account, StartIndex: startIndex, ...seqs });
    expect(json.ErrorCode).toBe(0);
    pages.push(json);
    if (json.CompleteFlag !== 0) return pages;
    startIndex = json.NextStartIndex;
  }
  throw new Error('paging did not end');
}

const friendId = (i: number) => `f${String(i).padStart(2, '0')}`;

/** `alice` with 20 friends: all have standard tags, even ones a custom Level, every fifth the Beta flag. */
function fixtureStore(): FriendStore {
  const store = new FriendStore();
  store.addAccount('alice');
  store.addAccount('bob');
  for (let i = 0; i < 20; i++) {
    const standard: TagRecord = {
      Tag_SNS_IM_AddSource: 'AddSource_Type_Android',
      Tag_SNS_IM_AddTime: 1_600_000_000 + i,
    };
    if (i % 3 === 0) standard['Tag_SNS_IM_Remark'] = `remark ${i}`;
    const custom: TagRecord = {};
    if (i % 2 === 0) custom['Tag_SNS_Custom_Level'] = String(i);
    if (i % 5 === 0) custom[UNKNOWN_TAG] = { v: 1, on: true };
    store.addFriend('alice', friendId(i), { standard, custom });
  }
  return store;
}

/** Tag → value of one item, or undefined when it had no ValueItem. */
function tagsOf(item: OkPage['UserDataItem'][number]): Record<string, JsonValue> | undefined {
  return item.ValueItem && Object.fromEntries(item.ValueItem.map((tv) => [tv.Tag, tv.Value]));
}

const sims: Simulator[] = [];
async function start(options: ConstructorParameters<typeof Simulator>[0] = {}): Promise<[Simulator, string]> {
  const sim = new Simulator({ seed: 42, rateLimit: 0, ...options });
  sims.push(sim);
  return [sim, await sim.listen()];
}
afterAll(async () => {
  await Promise.all(sims.map((s) => s.close()));
});

describe('request checks', () => {
  let sim: Simulator;
  let base: string;
  beforeAll(async () => {
    [sim, base] = await start({ store: fixtureStore() });
  });
  const ok = { From_Account: 'alice', StartIndex: 0 };

  it('answers 404 and 405 in plain text off the API', async () => {
    const wrongPath = await fetch(apiUrl(base, {}, '/v4/sns/friend_get_list'), {
      method: 'POST',
      body: '{}',
    });
    expect(wrongPath.status).toBe(404);
    expect(await wrongPath.text()).toMatch(/not found/i);
    const wrongMethod = await fetch(apiUrl(base));
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get('allow')).toBe('POST');
  });

  it('accepts a valid call', async () => {
    expect(await errorCodeOf(base, ok)).toBe(0);
    expect(await errorCodeOf(base, ok, { random: '4294967295' })).toBe(0);
    expect(await errorCodeOf(base, ok, { random: '0' })).toBe(0);
  });

  it.each<[string, Query, number]>([
    ['contenttype missing', { contenttype: null }, 60002],
    ['contenttype not json', { contenttype: 'xml' }, 60002],
    ['random missing', { random: null }, 60002],
    ['random too large', { random: '4294967296' }, 60002],
    ['random negative', { random: '-1' }, 60002],
    ['random not a number', { random: 'abc' }, 60002],
    ['sdkappid not numeric', { sdkappid: 'app' }, 60006],
    ['sdkappid unknown', { sdkappid: '1400000001' }, 70020],
    ['usersig malformed', { usersig: 'not-a-sig' }, 70003],
    ['usersig missing', { usersig: null }, 70003],
    ['usersig with another key', { usersig: sig({ secretKey: 'other-key' }) }, 70003],
    ['usersig expired', { usersig: sig({ now: Math.floor(Date.now() / 1000) - 2 * 86_400 }) }, 70001],
    ['usersig for another identifier', { usersig: sig({ identifier: 'someone' }) }, 70013],
    ['usersig for another SDKAppID', { usersig: sig({ sdkAppId: 1_400_000_001 }) }, 70014],
    ['identifier not an admin', { identifier: 'bob', usersig: sig({ identifier: 'bob' }) }, 30004],
  ])('%s → %i', async (_name, query, code) => {
    expect(await errorCodeOf(base, ok, query)).toBe(code);
  });

  it.each<[string, unknown, number]>([
    ['body not JSON', 'From_Account=alice', 60003],
    ['empty body', '', 60003],
    ['body an array', [ok], 30001],
    ['From_Account missing', { StartIndex: 0 }, 30001],
    ['From_Account empty', { From_Account: '', StartIndex: 0 }, 30001],
    ['From_Account not a string', { From_Account: 5, StartIndex: 0 }, 30001],
    ['StartIndex missing', { From_Account: 'alice' }, 30001],
    ['StartIndex negative', { From_Account: 'alice', StartIndex: -1 }, 30001],
    ['StartIndex fractional', { From_Account: 'alice', StartIndex: 1.5 }, 30001],
    ['StandardSequence a string', { ...ok, StandardSequence: '5' }, 30001],
    ['CustomSequence null', { ...ok, CustomSequence: null }, 30001],
    ['unknown account', { From_Account: 'nobody', StartIndex: 0 }, 30003],
    ['StartIndex that is an offset, not a cursor', { From_Account: 'alice', StartIndex: 7 }, 30001],
  ])('%s → %i', async (_name, body, code) => {
    expect(await errorCodeOf(base, body)).toBe(code);
  });

  it('checks in order: the URL before the body, the UserSig before the admin', async () => {
    expect(await errorCodeOf(base, 'garbage', { contenttype: null })).toBe(60002);
    expect(await errorCodeOf(base, 'garbage', { identifier: 'bob', usersig: 'x' })).toBe(70003);
    expect(
      await errorCodeOf(base, 'garbage', { identifier: 'bob', usersig: sig({ identifier: 'bob' }) }),
    ).toBe(30004);
  });

  it('logs what each call carried', async () => {
    sim.clearCalls();
    await post(base, { From_Account: 'alice', StartIndex: 0, StandardSequence: 3 }, { random: '123' });
    const [call] = sim.calls() as [CallRecord];
    expect(call).toMatchObject({
      account: 'alice',
      startIndex: 0,
      standardSequence: 3,
      errorCode: 0,
      httpStatus: 200,
      items: 20,
      random: '123',
    });
    expect(call.customSequence).toBeUndefined();
    expect(Math.abs(call.at - Date.now())).toBeLessThan(5_000);
  });
});

describe('paging', () => {
  let base: string;
  beforeAll(async () => {
    [, base] = await start({ store: fixtureStore(), pageSize: 7 });
  });

  it('returns every friend exactly once, in order, with opaque cursors', async () => {
    const pages = await pullAll(base, 'alice');
    expect(pages.map((p) => p.UserDataItem.length)).toEqual([7, 7, 6]);
    expect(pages.map((p) => p.CompleteFlag)).toEqual([0, 0, 1]);
    expect(pages.every((p) => p.FriendNum === 20)).toBe(true);
    const ids = pages.flatMap((p) => p.UserDataItem.map((i) => i.To_Account));
    expect(ids).toEqual(Array.from({ length: 20 }, (_, i) => friendId(i)));
    const [first, second, last] = pages as [OkPage, OkPage, OkPage];
    for (const cursor of [first.NextStartIndex, second.NextStartIndex]) {
      expect(Number.isSafeInteger(cursor) && cursor > 0).toBe(true);
      expect([7, 14, 8, 15]).not.toContain(cursor);
    }
    expect(first.NextStartIndex).not.toBe(second.NextStartIndex);
    expect(last.NextStartIndex).toBe(0);
  });

  it('lets a page be retried with the same cursor, for its own account only', async () => {
    const [first] = (await pullAll(base, 'alice')) as [OkPage];
    const again = await post(base, { From_Account: 'alice', StartIndex: first.NextStartIndex });
    const retry = await post(base, { From_Account: 'alice', StartIndex: first.NextStartIndex });
    expect(retry.json.UserDataItem).toEqual(again.json.UserDataItem);
    expect(again.json.UserDataItem[0]?.To_Account).toBe('f07');
    expect(await errorCodeOf(base, { From_Account: 'bob', StartIndex: first.NextStartIndex })).toBe(30001);
  });

  it('answers an account with no friends with one complete, empty page', async () => {
    const [page] = (await pullAll(base, 'bob')) as [OkPage];
    expect(page).toMatchObject({ UserDataItem: [], FriendNum: 0, CompleteFlag: 1, NextStartIndex: 0 });
  });
});

describe.each<SequenceReading>(['empty-value-item', 'omit-friend'])('sequence rule, %s', (reading) => {
  let sim: Simulator;
  let base: string;
  const omit = reading === 'omit-friend';
  beforeAll(async () => {
    [sim, base] = await start({ store: fixtureStore(), pageSize: 7, sequenceReading: reading });
  });
  const items = (pages: OkPage[]) => pages.flatMap((p) => p.UserDataItem);

  it('first pull (no sequences sent) returns every tag of every friend', async () => {
    const pages = await pullAll(base, 'alice');
    const truth = sim.store.truth('alice');
    expect(pages[0]).toMatchObject({
      StandardSequence: truth.standardSequence,
      CustomSequence: truth.customSequence,
    });
    expect(items(pages).map((i) => [i.To_Account, tagsOf(i)])).toEqual(
      truth.friends.map((f) => [f.friendId, { ...f.standard, ...f.custom }]),
    );
  });

  it('both sequences unchanged: nothing to return', async () => {
    const { standardSequence, customSequence } = sim.store.truth('alice');
    const pages = await pullAll(base, 'alice', {
      StandardSequence: standardSequence,
      CustomSequence: customSequence,
    });
    const all = items(pages);
    if (omit) {
      expect(pages).toHaveLength(1);
      expect(all).toEqual([]);
    } else {
      expect(all).toHaveLength(20);
      for (const item of all) expect(Object.keys(item)).toEqual(['To_Account']);
    }
    expect(pages.at(-1)).toMatchObject({ FriendNum: 20, CompleteFlag: 1, NextStartIndex: 0 });
  });

  it('standard-only change: standard tags of every friend, no custom tags', async () => {
    const before = sim.store.truth('alice');
    expect(sim.store.setStandardTag('alice', 'f03', 'Tag_SNS_IM_Remark', 'new remark')).toBe(true);
    const after = sim.store.truth('alice');
    expect(after.standardSequence).toBe(before.standardSequence + 1);
    expect(after.customSequence).toBe(before.customSequence);
    const pages = await pullAll(base, 'alice', {
      StandardSequence: before.standardSequence,
      CustomSequence: before.customSequence,
    });
    // Every friend has standard tags, so both readings list them all.
    expect(items(pages).map((i) => [i.To_Account, tagsOf(i)])).toEqual(
      after.friends.map((f) => [f.friendId, f.standard]),
    );
    expect(pages[0]).toMatchObject({
      StandardSequence: after.standardSequence,
      CustomSequence: after.customSequence,
    });
  });

  it('custom-only change: custom tags only, and friends without any per the reading', async () => {
    const before = sim.store.truth('alice');
    expect(sim.store.setCustomTag('alice', 'f04', 'Tag_SNS_Custom_Level', undefined)).toBe(true);
    const after = sim.store.truth('alice');
    expect(after.standardSequence).toBe(before.standardSequence);
    expect(after.customSequence).toBe(before.customSequence + 1);
    const pages = await pullAll(base, 'alice', {
      StandardSequence: before.standardSequence,
      CustomSequence: before.customSequence,
    });
    const expected = after.friends
      .filter((f) => !omit || Object.keys(f.custom).length > 0)
      .map((f) => [f.friendId, Object.keys(f.custom).length > 0 ? f.custom : undefined]);
    expect(items(pages).map((i) => [i.To_Account, tagsOf(i)])).toEqual(expected);
    expect(expected.length).toBe(omit ? 11 : 20);
    expect(items(pages).find((i) => i.To_Account === 'f04')).toEqual(
      omit ? undefined : { To_Account: 'f04' },
    );
  });

  it('a wrong sequence counts as changed', async () => {
    const pages = await pullAll(base, 'alice', { StandardSequence: 999_999, CustomSequence: 999_999 });
    expect(items(pages)).toHaveLength(20);
    expect(items(pages).every((i) => i.ValueItem !== undefined)).toBe(true);
  });
});

describe('serialized pages', () => {
  // The server sends buildPageJson's text; buildPage's objects are the readable definition. They
  // must agree byte for byte, including after changes, which replace records the JSON is cached for.
  it('equal JSON.stringify of the page objects, for both readings, any sequences, before and after changes', () => {
    const store = generateApp({ accounts: 40, meanFriends: 25, maxFriends: 80, seed: 11 });
    warmPageJson(store, 'empty-value-item');
    store.addAccount('edge');
    store.addFriend('edge', 'no-tags', { standard: {} });
    store.addFriend('edge', '123', {
      standard: { Tag_SNS_IM_Remark: 'tab\there "q" 😀' },
      custom: { '7': 1, Tag_SNS_Custom_X: { a: [1, null] } },
    });
    const compare = () => {
      let pages = 0;
      for (const accountId of store.accountIds()) {
        const acc = store.account(accountId)!;
        const seqs: [number | undefined, number | undefined][] = [
          [undefined, undefined],
          [acc.standardSequence, undefined],
          [undefined, acc.customSequence],
          [acc.standardSequence, acc.customSequence],
        ];
        for (const reading of ['empty-value-item', 'omit-friend'] as const) {
          for (const [standardSequence, customSequence] of seqs) {
            for (let offset = 0; offset === 0 || offset < acc.friends.size; offset += 9) {
              const query = {
                accountId,
                offset,
                ...(standardSequence === undefined ? {} : { standardSequence }),
                ...(customSequence === undefined ? {} : { customSequence }),
              };
              const objects = buildPage(store, query, { pageSize: 9, reading })!;
              const json = buildPageJson(store, query, { pageSize: 9, reading })!;
              const { items, ...rest } = objects;
              const { itemsJson, count, ...jsonRest } = json;
              expect(`[${itemsJson}]`).toBe(JSON.stringify(items));
              expect(count).toBe(items.length);
              expect(jsonRest).toEqual(rest);
              pages++;
            }
          }
        }
      }
      return pages;
    };
    expect(compare()).toBeGreaterThan(500);
    const changed = store.mutateRandom({ fraction: 0.5, seed: 3 });
    expect(changed.length).toBeGreaterThan(10);
    const someone = store.accountIds()[0]!;
    const friend = [...store.account(someone)!.friends.keys()][0]!;
    store.setStandardTag(someone, friend, 'Tag_SNS_IM_Remark', 'renamed');
    store.setCustomTag(someone, friend, 'Tag_SNS_Custom_Level', '9');
    store.addFriend('edge', '123', { standard: { Tag_SNS_IM_Remark: 'changed' } });
    compare();
  });
});

describe('store sequences', () => {
  const seqs = (store: FriendStore, id = 'a') => {
    const { standardSequence, customSequence } = store.truth(id);
    return [standardSequence, customSequence];
  };
  const std = { Tag_SNS_IM_AddSource: 'AddSource_Type_Web', Tag_SNS_IM_AddTime: 1_700_000_000 };

  it('bumps the right sequence on each mutation, and nothing on a no-op', () => {
    const store = new FriendStore();
    expect(store.addAccount('a')).toBe(true);
    expect(seqs(store)).toEqual([0, 0]);
    expect(store.addAccount('a')).toBe(false);

    expect(store.addFriend('a', 'x', { standard: std })).toBe(true);
    expect(seqs(store)).toEqual([1, 0]);
    expect(store.addFriend('a', 'y', { standard: std, custom: { Tag_SNS_Custom_Level: '1' } })).toBe(true);
    expect(seqs(store)).toEqual([2, 1]);
    expect(store.addFriend('a', 'y', { standard: std, custom: { Tag_SNS_Custom_Level: '1' } })).toBe(false);
    expect(seqs(store)).toEqual([2, 1]);

    expect(store.setStandardTag('a', 'x', 'Tag_SNS_IM_Remark', 'hi')).toBe(true);
    expect(seqs(store)).toEqual([3, 1]);
    expect(store.setStandardTag('a', 'x', 'Tag_SNS_IM_Remark', 'hi')).toBe(false);
    expect(store.setStandardTag('a', 'x', 'Tag_SNS_IM_Group', ['Work'])).toBe(true);
    expect(store.setStandardTag('a', 'x', 'Tag_SNS_IM_Group', ['Work'])).toBe(false);
    expect(store.setStandardTag('a', 'x', 'Tag_SNS_IM_Remark', undefined)).toBe(true);
    expect(store.setStandardTag('a', 'x', 'Tag_SNS_IM_Remark', undefined)).toBe(false);
    expect(seqs(store)).toEqual([5, 1]);

    expect(store.setCustomTag('a', 'x', UNKNOWN_TAG, { v: 1, on: true })).toBe(true);
    expect(store.setCustomTag('a', 'x', UNKNOWN_TAG, { on: true, v: 1 })).toBe(false);
    expect(store.setCustomTag('a', 'x', UNKNOWN_TAG, 7)).toBe(true);
    expect(store.setCustomTag('a', 'x', UNKNOWN_TAG, undefined)).toBe(true);
    expect(store.setCustomTag('a', 'x', UNKNOWN_TAG, undefined)).toBe(false);
    expect(seqs(store)).toEqual([5, 4]);

    expect(store.removeFriend('a', 'x')).toBe(true);
    expect(seqs(store)).toEqual([6, 4]);
    expect(store.removeFriend('a', 'y')).toBe(true);
    expect(seqs(store)).toEqual([7, 5]);
    expect(store.removeFriend('a', 'y')).toBe(false);
    expect(seqs(store)).toEqual([7, 5]);
  });

  it('refuses misplaced tags, self-friendship, missing data and over-long ids', () => {
    const store = new FriendStore();
    store.addAccount('a');
    expect(() => store.addFriend('a', 'x', { standard: { Tag_SNS_Custom_Level: '1' } })).toThrow(RangeError);
    expect(() => store.addFriend('a', 'x', { custom: { Tag_SNS_IM_Remark: 'r' } })).toThrow(RangeError);
    expect(() => store.addFriend('a', 'a')).toThrow(RangeError);
    expect(() => store.addFriend('a', 'x'.repeat(33))).toThrow(RangeError);
    expect(() => store.addFriend('nobody', 'x')).toThrow(/unknown account/);
    expect(() => store.setStandardTag('a', 'x', 'Tag_SNS_IM_Remark', 'r')).toThrow(/not a friend/);
    store.addFriend('a', 'x');
    expect(() => store.setStandardTag('a', 'x', 'Tag_SNS_Custom_Level', '1')).toThrow(RangeError);
    expect(() => store.setCustomTag('a', 'x', 'Tag_SNS_IM_Remark', 'r')).toThrow(RangeError);
    expect(seqs(store)).toEqual([1, 0]);
    expect(typeof store.truth('a').friends[0]?.standard['Tag_SNS_IM_AddTime']).toBe('number');
  });

  it('gives a re-added account sequences above its old ones', () => {
    const store = new FriendStore();
    store.addAccount('a');
    store.addFriend('a', 'x', { standard: std, custom: { Tag_SNS_Custom_Level: '1' } });
    expect(store.removeAccount('a')).toBe(true);
    expect(store.removeAccount('a')).toBe(false);
    store.addAccount('a');
    expect(seqs(store)).toEqual([2, 2]);
    expect(store.truth('a').friends).toEqual([]);
  });

  it('reports truth sorted by code unit, as copies', () => {
    const store = new FriendStore();
    store.addAccount('a');
    for (const id of ['b', 'B', 'é', '😀', 'a b', 'Z']) {
      store.addFriend('a', id, { standard: std, custom: { [UNKNOWN_TAG]: { v: 1 } } });
    }
    const truth = store.truth('a');
    expect(truth.friends.map((f) => f.friendId)).toEqual(['B', 'Z', 'a b', 'b', 'é', '😀']);
    (truth.friends[0]!.custom[UNKNOWN_TAG] as { v: number }).v = 2;
    expect(store.truth('a').friends[0]!.custom[UNKNOWN_TAG]).toEqual({ v: 1 });
    expect(() => store.truth('nobody')).toThrow(/unknown account/);
  });
});

describe('rate limit', () => {
  it('refuses calls over the limit in a sliding second with 60007', async () => {
    const [sim, base] = await start({ store: fixtureStore(), rateLimit: 5 });
    const codes = await Promise.all(
      Array.from({ length: 10 }, () => errorCodeOf(base, { From_Account: 'alice', StartIndex: 0 })),
    );
    expect(codes.filter((c) => c === 0)).toHaveLength(5);
    expect(codes.filter((c) => c === 60007)).toHaveLength(5);
    expect(sim.stats()).toMatchObject({ rateLimited: 5, ok: 5, byErrorCode: { '0': 5, '60007': 5 } });
    expect(sim.maxCallsInWindow()).toBe(10);
  });

  it('does not count calls refused by an earlier check', async () => {
    const [, base] = await start({ store: fixtureStore(), rateLimit: 2 });
    for (let i = 0; i < 5; i++)
      expect(await errorCodeOf(base, { From_Account: 'nobody', StartIndex: 0 })).toBe(30003);
    expect(await errorCodeOf(base, { From_Account: 'alice', StartIndex: 0 })).toBe(0);
  });
});

describe('faults', () => {
  let sim: Simulator;
  let base: string;
  beforeAll(async () => {
    [sim, base] = await start({ store: fixtureStore() });
  });
  afterEach(() => {
    sim.configure({ faults: { rate: 0 } });
  });
  const request = (signal?: AbortSignal) =>
    fetch(apiUrl(base), {
      method: 'POST',
      body: JSON.stringify({ From_Account: 'alice', StartIndex: 0 }),
      ...(signal ? { signal } : {}),
    });
  const lastCall = () => sim.calls().at(-1)!;

  it('error:<code> answers a well-formed FAIL', async () => {
    sim.injectFaults('error:30006');
    const res = await request();
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      ActionStatus: 'FAIL',
      ErrorCode: 30006,
      ErrorInfo: expect.any(String),
      ErrorDisplay: '',
    });
    expect(lastCall()).toMatchObject({ fault: 'error:30006', errorCode: 30006, httpStatus: 200 });
  });

  it('http-502 answers 502 with an HTML body', async () => {
    sim.injectFaults('http-502');
    const res = await request();
    expect(res.status).toBe(502);
    expect(await res.text()).toContain('502 Bad Gateway');
  });

  it('http-<status> answers that status with a proxy-style HTML page, then calls go through again', async () => {
    sim.injectFaults('http-403', 2);
    for (let i = 0; i < 2; i++) {
      const res = await request();
      expect(res.status).toBe(403);
      expect(await res.text()).toContain('403 Forbidden');
      expect(lastCall()).toMatchObject({ fault: 'http-403', httpStatus: 403 });
    }
    expect((await request()).status).toBe(200);
  });

  it('garbage answers 200 with an HTML page', async () => {
    sim.injectFaults('garbage');
    const res = await request();
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    const text = await res.text();
    expect(() => JSON.parse(text)).toThrow();
  });

  it('truncate sends half of a valid body, then closes', async () => {
    sim.injectFaults('truncate');
    const res = await request();
    expect(res.status).toBe(200);
    const length = Number(res.headers.get('content-length'));
    await expect(res.text()).rejects.toThrow();
    expect(length).toBeGreaterThan(100);
    expect(lastCall()).toMatchObject({ fault: 'truncate', httpStatus: 200, items: 0 });
  });

  it('reset drops the connection without an answer', async () => {
    sim.injectFaults('reset');
    await expect(request()).rejects.toThrow();
    expect(lastCall()).toMatchObject({ fault: 'reset', httpStatus: 0, errorCode: -1 });
  });

  it('timeout never answers; the client gives up', async () => {
    sim.injectFaults('timeout');
    const t0 = Date.now();
    await expect(request(AbortSignal.timeout(300))).rejects.toThrow();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(lastCall()).toMatchObject({ fault: 'timeout', httpStatus: 0 });
  });

  it('applies queued faults to the next calls that pass the checks, then recovers', async () => {
    sim.injectFaults('error:70169', 2);
    expect(await errorCodeOf(base, { From_Account: 'nobody', StartIndex: 0 })).toBe(30003);
    expect(await errorCodeOf(base, { From_Account: 'alice', StartIndex: 0 })).toBe(70169);
    expect(await errorCodeOf(base, { From_Account: 'alice', StartIndex: 0 })).toBe(70169);
    expect(await errorCodeOf(base, { From_Account: 'alice', StartIndex: 0 })).toBe(0);
    expect(sim.pendingFaults).toBe(0);
  });

  it('draws random faults at the configured rate and mix', async () => {
    sim.resetStats();
    sim.configure({ faults: { rate: 1, kinds: { 'error:30007': 1, 'error:60008': 1 } } });
    const codes = [];
    for (let i = 0; i < 20; i++)
      codes.push(await errorCodeOf(base, { From_Account: 'alice', StartIndex: 0 }));
    expect(codes.every((c) => c === 30007 || c === 60008)).toBe(true);
    expect(new Set(codes).size).toBe(2);
    const { byFault } = sim.stats();
    expect((byFault['error:30007'] ?? 0) + (byFault['error:60008'] ?? 0)).toBe(20);
    sim.configure({ faults: { rate: 0 } });
    expect(await errorCodeOf(base, { From_Account: 'alice', StartIndex: 0 })).toBe(0);
  });

  it('refuses unknown fault kinds', () => {
    expect(() => sim.injectFaults('explode' as 'reset')).toThrow(RangeError);
    // Tencent answers 200; only statuses a proxy or gateway sends (4xx, 5xx) can be injected.
    expect(() => sim.injectFaults('http-200')).toThrow(RangeError);
    expect(() => sim.injectFaults('http-302')).toThrow(RangeError);
    expect(() => sim.configure({ faults: { rate: 2 } })).toThrow(RangeError);
  });
});

describe('latency', () => {
  it('delays answers by the configured range', async () => {
    const [sim, base] = await start({ store: fixtureStore(), latencyMs: [60, 80] });
    const t0 = performance.now();
    expect(await errorCodeOf(base, { From_Account: 'alice', StartIndex: 0 })).toBe(0);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(55);
    sim.configure({ latencyMs: [0, 0] });
    expect(sim.config.latencyMs).toEqual([0, 0]);
  });
});

describe('onCall', () => {
  it('lets a test change data between pages; later pages show the moved sequences', async () => {
    const [sim, base] = await start({ store: fixtureStore(), pageSize: 7 });
    const seen: SimCall[] = [];
    sim.onCall = (call) => {
      seen.push(call);
      if (call.account === 'alice' && call.startIndex !== 0 && call.offset === 7) {
        sim.store.setCustomTag('alice', 'f01', 'Tag_SNS_Custom_Level', 'moved');
      }
    };
    const pages = await pullAll(base, 'alice');
    const [p1, p2, p3] = pages as [OkPage, OkPage, OkPage];
    expect(p2.CustomSequence).toBe(p1.CustomSequence + 1);
    expect(p2.StandardSequence).toBe(p1.StandardSequence);
    expect(p3.CustomSequence).toBe(p2.CustomSequence);
    expect(seen.map((c) => c.offset)).toEqual([0, 7, 14]);
    expect(seen[1]?.startIndex).toBe(p1.NextStartIndex);

    sim.onCall = () => {
      throw new Error('hook failed');
    };
    expect(await errorCodeOf(base, { From_Account: 'alice', StartIndex: 0 })).toBe(30006);
    sim.onCall = undefined;
  });
});

describe('call log and stats', () => {
  it('maxInWindow finds the busiest half-open window', () => {
    expect(maxInWindow([], 1000)).toBe(0);
    expect(maxInWindow([5], 1000)).toBe(1);
    expect(maxInWindow([0, 10, 20, 1005, 1006, 1007, 1008], 1000)).toBe(6);
    expect(maxInWindow([0, 10, 20, 1010, 1011], 1000)).toBe(3);
    expect(maxInWindow([0, 1000, 2000], 1000)).toBe(1);
    expect(maxInWindow([2000, 0, 999, 1000], 1000)).toBe(2);
  });

  it('counts calls in a window, reused randoms, and clears', async () => {
    const [sim, base] = await start({ store: fixtureStore() });
    for (let i = 0; i < 6; i++) await post(base, { From_Account: 'alice', StartIndex: 0 });
    expect(sim.maxCallsInWindow(1000)).toBe(6);
    expect(sim.maxCallsInWindow(0)).toBe(0);
    expect(sim.stats().reusedRandoms).toBe(0);
    await post(base, { From_Account: 'alice', StartIndex: 0 }, { random: '77' });
    await post(base, { From_Account: 'alice', StartIndex: 0 }, { random: '77' });
    const stats = sim.stats();
    expect(stats).toMatchObject({
      calls: 8,
      ok: 8,
      reusedRandoms: 1,
      items: 160,
      completePages: 8,
      loggedCalls: 8,
    });
    expect(stats.byHttpStatus).toEqual({ '200': 8 });
    sim.clearCalls();
    expect(sim.calls()).toEqual([]);
    expect(sim.stats().calls).toBe(8);
  });

  it('reports how late its event loop ran since the log was cleared (arrival stamps are that late)', async () => {
    const [sim] = await start({ store: fixtureStore() });
    const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
    sim.clearCalls();
    // The histogram's first sample after a reset only starts its clock: let it tick first.
    await wait(30);
    const from = Date.now();
    while (Date.now() - from < 60) {
      // hold the loop, as building a big page or a GC pause would
    }
    await wait(20);
    expect(sim.stats().loopDelay.maxMs).toBeGreaterThanOrEqual(50);
    sim.clearCalls();
    await wait(30);
    expect(sim.stats().loopDelay.maxMs).toBeLessThan(50);
  });
});

describe('generator', () => {
  it('is deterministic for a seed', () => {
    const dump = (s: FriendStore) => s.accountIds().map((id) => [id, s.truth(id)]);
    const a = generateApp({ accounts: 60, meanFriends: 20, maxFriends: 100, seed: 7 });
    const b = generateApp({ accounts: 60, meanFriends: 20, maxFriends: 100, seed: 7 });
    const c = generateApp({ accounts: 60, meanFriends: 20, maxFriends: 100, seed: 8 });
    expect(dump(a)).toEqual(dump(b));
    expect(dump(a)).not.toEqual(dump(c));
  });

  it('makes a realistic app of the default size quickly', () => {
    const t0 = performance.now();
    const store = generateApp({ seed: 3 });
    const ms = performance.now() - t0;
    expect(ms).toBeLessThan(5_000);
    const ids = store.accountIds();
    expect(ids).toHaveLength(1000);
    for (const odd of ODD_ACCOUNT_IDS) {
      expect(ids).toContain(odd);
      expect(Buffer.byteLength(odd)).toBeLessThanOrEqual(32);
    }
    const counts = ids.map((id) => store.account(id)!.friends.size);
    const mean = counts.reduce((s, c) => s + c, 0) / counts.length;
    expect(mean).toBeGreaterThan(250);
    expect(mean).toBeLessThan(350);
    expect(counts.filter((c) => c === 0).length).toBeGreaterThan(0);
    expect(Math.max(...counts)).toBeLessThanOrEqual(3000);
    expect(counts.filter((c) => c >= 2500).length).toBeGreaterThan(0);
    const sorted = [...counts].sort((x, y) => x - y);
    expect(sorted[500]!).toBeLessThan(mean);

    let friends = 0;
    let mutual = 0;
    let remark = 0;
    let level = 0;
    let beta = 0;
    for (const id of ids.slice(0, 200)) {
      for (const [fid, f] of store.account(id)!.friends) {
        friends++;
        if (store.account(fid)?.friends.has(id)) mutual++;
        expect(typeof f.standard['Tag_SNS_IM_AddSource']).toBe('string');
        expect(Number.isSafeInteger(f.standard['Tag_SNS_IM_AddTime'])).toBe(true);
        if (f.standard['Tag_SNS_IM_Remark'] !== undefined) remark++;
        if (f.custom['Tag_SNS_Custom_Level'] !== undefined) level++;
        const note = f.custom['Tag_SNS_Custom_Note'];
        if (note !== undefined) expect(Buffer.byteLength(note as string)).toBeLessThanOrEqual(500);
        if (f.custom[UNKNOWN_TAG] !== undefined) beta++;
      }
    }
    expect(mutual / friends).toBeGreaterThan(0.4);
    expect(remark / friends).toBeCloseTo(0.4, 1);
    expect(level / friends).toBeCloseTo(0.5, 1);
    expect(beta / friends).toBeCloseTo(0.05, 1);
  });

  it('mutates a fraction of accounts deterministically, in standard-only and custom-only ways', () => {
    const a = generateApp({ accounts: 200, meanFriends: 30, maxFriends: 200, seed: 5 });
    const b = generateApp({ accounts: 200, meanFriends: 30, maxFriends: 200, seed: 5 });
    const before = new Map(a.accountIds().map((id) => [id, a.truth(id)]));
    const changed = a.mutateRandom({ fraction: 0.25, seed: 9 });
    expect(b.mutateRandom({ fraction: 0.25, seed: 9 })).toEqual(changed);
    expect(changed.length).toBeGreaterThanOrEqual(45);
    let standardOnly = 0;
    let customOnly = 0;
    for (const id of a.accountIds()) {
      const old = before.get(id)!;
      const now = a.truth(id);
      expect(now).toEqual(b.truth(id));
      if (!changed.includes(id)) {
        expect(now).toEqual(old);
        continue;
      }
      expect(now).not.toEqual(old);
      const s = now.standardSequence > old.standardSequence;
      const c = now.customSequence > old.customSequence;
      expect(s || c).toBe(true);
      if (s && !c) standardOnly++;
      if (c && !s) customOnly++;
    }
    expect(standardOnly).toBeGreaterThan(0);
    expect(customOnly).toBeGreaterThan(0);
  });
});

describe('control API', () => {
  let sim: Simulator;
  let base: string;
  beforeAll(async () => {
    [sim, base] = await start({ generate: { accounts: 30, meanFriends: 10, maxFriends: 50 } });
  });
  const getJson = async (path: string) => {
    const res = await fetch(`${base}${path}`);
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  };
  const postJson = async (path: string, body: unknown) => {
    const res = await fetch(`${base}${path}`, { method: 'POST', body: JSON.stringify(body) });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  };

  it('lists accounts and reports truth, odd ids included', async () => {
    const { json } = await getJson('/__sim/accounts');
    const accounts = json['accounts'] as string[];
    expect(accounts).toEqual(sim.store.accountIds());
    const odd = accounts.find((id) => !id.startsWith('user_'))!;
    const truth = await getJson(`/__sim/truth?account=${encodeURIComponent(odd)}`);
    expect(truth.json).toEqual(sim.store.truth(odd));
    expect((await getJson('/__sim/truth?account=nobody')).status).toBe(404);
  });

  it('mutates randomly or explicitly', async () => {
    const random = await postJson('/__sim/mutate', { random: { fraction: 0.1, seed: 2 } });
    expect(random.status).toBe(200);
    expect((random.json['changed'] as string[]).length).toBeGreaterThanOrEqual(3);
    const explicit = await postJson('/__sim/mutate', {
      mutations: [
        { op: 'addAccount', account: 'new one' },
        { op: 'addFriend', account: 'new one', friendId: 'x', custom: { Tag_SNS_Custom_Level: '3' } },
        { op: 'setStandardTag', account: 'new one', friendId: 'x', tag: 'Tag_SNS_IM_Remark', value: 'r' },
        { op: 'setCustomTag', account: 'new one', friendId: 'x', tag: 'Tag_SNS_Custom_Level' },
      ],
    });
    expect(explicit.json).toEqual({ changed: ['new one'] });
    const truth = sim.store.truth('new one');
    expect(truth).toMatchObject({ standardSequence: 2, customSequence: 2 });
    expect(truth.friends[0]?.custom).toEqual({});
    const bad = await postJson('/__sim/mutate', {
      mutations: [{ op: 'removeFriend', account: 'nobody', friendId: 'x' }],
    });
    expect(bad.status).toBe(400);
    expect(bad.json['error']).toMatch(/unknown account/);
  });

  it('reconfigures, queues faults and reports stats', async () => {
    const config = await postJson('/__sim/config', { pageSize: 3, sequenceReading: 'omit-friend' });
    expect(config.json['config']).toMatchObject({
      pageSize: 3,
      sequenceReading: 'omit-friend',
      rateLimit: 0,
    });
    expect((await postJson('/__sim/config', { pageSize: 0 })).status).toBe(400);
    expect((await postJson('/__sim/config', { secretKey: 'x' })).status).toBe(400);
    expect((await postJson('/__sim/faults', { kind: 'error:30006', count: 1 })).json).toEqual({ pending: 1 });
    const account = sim.store.accountIds()[0]!;
    expect(await errorCodeOf(base, { From_Account: account, StartIndex: 0 })).toBe(30006);
    const stats = await getJson('/__sim/stats');
    expect(stats.json).toMatchObject({ byFault: { 'error:30006': 1 }, maxCallsInWindow: expect.any(Number) });
    expect((await getJson('/__sim/calls?limit=1')).json['calls']).toHaveLength(1);
    expect((await postJson('/__sim/clear-calls', {})).status).toBe(200);
    expect(sim.calls()).toEqual([]);
    expect((await getJson('/__sim/nothing')).status).toBe(404);
  });
});

describe('close', () => {
  it('ends held and delayed connections promptly', async () => {
    const sim = new Simulator({ store: fixtureStore(), latencyMs: [5_000, 5_000] });
    const base = await sim.listen();
    // Settle at once, so a rejection is never briefly unhandled while close() runs.
    const outcome = () =>
      fetch(apiUrl(base), {
        method: 'POST',
        body: JSON.stringify({ From_Account: 'alice', StartIndex: 0 }),
      }).then(
        () => 'answered',
        () => 'failed',
      );
    const delayed = outcome();
    const alsoDelayed = outcome();
    await new Promise((r) => setTimeout(r, 100));
    expect(sim.stats().inFlight).toBe(2);
    const t0 = Date.now();
    await sim.close();
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(await delayed).toBe('failed');
    expect(await alsoDelayed).toBe('failed');
    await sim.close();
  });

  it('ends a call held by a timeout fault', async () => {
    const sim = new Simulator({ store: fixtureStore() });
    const base = await sim.listen();
    sim.injectFaults('timeout');
    const held = fetch(apiUrl(base), {
      method: 'POST',
      body: JSON.stringify({ From_Account: 'alice', StartIndex: 0 }),
    }).then(
      () => 'answered',
      () => 'failed',
    );
    await new Promise((r) => setTimeout(r, 100));
    await sim.close();
    expect(await held).toBe('failed');
  });
});
