/**
 * Hostile input from the wire that is well-formed JSON: NUL characters, unpaired surrogates,
 * invalid UTF-8, 1 MB strings. Each is either stored losslessly or refused with a typed error, and a
 * refused answer writes nothing and only holds back the account it belongs to.
 */
import { createServer } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FriendStore } from '../src/simulator/index.js';
import { TimClient } from '../src/tim/client.js';
import { TimDecodeError } from '../src/tim/errors.js';
import { decodeFriendGetResponse } from '../src/tim/friend-get.js';
import { StaticUserSig } from '../src/tim/usersig.js';
import { type MirrorFixture, mirrorFixture, rowVersions } from './fixtures/mirror.js';

const ok = (items: string) =>
  `{"UserDataItem":[${items}],"StandardSequence":1,"CustomSequence":1,"FriendNum":1,"CompleteFlag":1,"NextStartIndex":0,"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`;

describe('decoder: text Postgres cannot store exactly', () => {
  it.each([
    [
      'NUL in a remark',
      '{"To_Account":"a","ValueItem":[{"Tag":"Tag_SNS_IM_Remark","Value":"x\\u0000y"}]}',
      /NUL/,
    ],
    ['NUL in a friend id', '{"To_Account":"a\\u0000","ValueItem":[]}', /NUL/],
    [
      'NUL deep in an unknown tag',
      '{"To_Account":"a","ValueItem":[{"Tag":"T","Value":{"k":["\\u0000"]}}]}',
      /NUL/,
    ],
    ['NUL in an object key', '{"To_Account":"a","ValueItem":[{"Tag":"T","Value":{"\\u0000":1}}]}', /NUL/],
    [
      'a lone high surrogate',
      '{"To_Account":"a","ValueItem":[{"Tag":"Tag_SNS_Custom_X","Value":"\\ud800"}]}',
      /surrogate/,
    ],
    ['a lone low surrogate', '{"To_Account":"\\udc00b","ValueItem":[]}', /surrogate/],
  ])('refuses %s', (_name, item, message) => {
    expect(() => decodeFriendGetResponse(ok(item))).toThrow(TimDecodeError);
    expect(() => decodeFriendGetResponse(ok(item))).toThrow(message);
  });

  it('refuses an AddTime beyond what timestamptz holds, and keeps the largest one it can', () => {
    const at = (t: number) => `{"To_Account":"a","ValueItem":[{"Tag":"Tag_SNS_IM_AddTime","Value":${t}}]}`;
    expect(() => decodeFriendGetResponse(ok(at(253_402_300_800)))).toThrow(/after the year 9999/);
    expect(() => decodeFriendGetResponse(ok(at(Number.MAX_SAFE_INTEGER)))).toThrow(TimDecodeError);
    // The same answer would come back: not worth a retry.
    expect(() => decodeFriendGetResponse(ok(at(253_402_300_800)))).toThrow(
      expect.objectContaining({ retryClass: 'fatal' }),
    );
    expect(() => decodeFriendGetResponse('{"ActionStatus":"OK","ErrorCode":0,"UserDataItem":[')).toThrow(
      expect.objectContaining({ retryClass: 'bad-response' }),
    );
    expect(decodeFriendGetResponse(ok(at(253_402_300_799))).items[0]!.values![0]!.value).toBe(
      253_402_300_799,
    );
  });

  it.each([
    ['an escaped surrogate pair (emoji)', '{"To_Account":"\\ud83d\\ude00","ValueItem":[]}', '😀'],
    [
      'the literal text \\u0000 (an escaped backslash)',
      '{"To_Account":"\\\\u0000","ValueItem":[]}',
      '\\u0000',
    ],
    ['raw non-ASCII', '{"To_Account":"用户 😀","ValueItem":[]}', '用户 😀'],
  ])('keeps %s exactly', (_name, item, id) => {
    expect(decodeFriendGetResponse(ok(item)).items[0]!.friendId).toBe(id);
  });
});

describe('client: invalid UTF-8', () => {
  it('refuses a body that is not valid UTF-8 instead of storing U+FFFD', async () => {
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        Buffer.concat([
          Buffer.from('{"UserDataItem":[{"To_Account":"a'),
          Buffer.from([0xff, 0xfe]),
          Buffer.from('","ValueItem":[]}]}'),
        ]),
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    const client = new TimClient({
      baseUrl: `http://127.0.0.1:${port}`,
      sdkAppId: 1,
      identifier: 'admin',
      userSig: new StaticUserSig('sig'),
    });
    try {
      await expect(client.friendGet({ From_Account: 'x', StartIndex: 0 })).rejects.toThrow(/not valid UTF-8/);
    } finally {
      await client.close();
      server.close();
    }
  });
});

describe('sync: a refused answer holds back only its account, and writes nothing', () => {
  let f: MirrorFixture;
  const big = 'é'.repeat(512 * 1024); // 1 MB of UTF-8

  beforeAll(async () => {
    const store = new FriendStore();
    for (const id of ['clean', 'poisoned']) store.addAccount(id);
    for (const id of ['clean', 'poisoned']) {
      for (const friend of ['f1', 'f2', 'f3']) {
        store.addFriend(id, friend, {
          standard: { Tag_SNS_IM_AddTime: 1_700_000_000, Tag_SNS_IM_Remark: `remark of ${friend}` },
          custom: { Tag_SNS_Custom_Note: 'ok' },
        });
      }
    }
    f = await mirrorFixture('hostile', { store, pageSize: 2 });
    await f.addAllAccounts();
    expect((await f.syncAll()).failed).toBe(0);
  });
  afterAll(async () => {
    await f?.close();
  });

  it('refuses a NUL, keeps the rest of the mirror, and recovers when the data is fixed', async () => {
    f.store.setStandardTag('poisoned', 'f1', 'Tag_SNS_IM_Remark', 'changed');
    f.store.setCustomTag('poisoned', 'f3', 'Tag_SNS_Custom_Note', 'bad\u0000value');
    f.store.setStandardTag('clean', 'f2', 'Tag_SNS_IM_Remark', big);
    const before = await rowVersions(f.db, 'poisoned');
    f.sim.clearCalls();
    const s = await f.syncAll({ retryAttempts: 4 });
    expect(s.failed).toBe(1);
    // Two pages, each asked once: a value Postgres cannot store comes back the same on a retry.
    expect(f.sim.calls().filter((c) => c.account === 'poisoned')).toHaveLength(2);
    expect(s.changed).toBe(1);
    expect(await rowVersions(f.db, 'poisoned')).toEqual(before);
    const row = await f.db
      .selectFrom('tim.accounts')
      .selectAll()
      .where('account_id', '=', 'poisoned')
      .executeTakeFirstOrThrow();
    expect(row.status).toBe('failing');
    expect(row.last_error).toMatch(/TIM_ERR_DECODE: .*NUL/);
    // The 1 MB remark of the clean account was stored exactly.
    const remark = await f.db
      .selectFrom('tim.friends')
      .select('remark')
      .where('account_id', '=', 'clean')
      .where('friend_id', '=', 'f2')
      .executeTakeFirstOrThrow();
    expect(remark.remark).toBe(big);

    f.store.setCustomTag('poisoned', 'f3', 'Tag_SNS_Custom_Note', 'fixed');
    expect((await f.syncAll()).failed).toBe(0);
    expect(await f.diffAll()).toEqual([]);
  });
});
