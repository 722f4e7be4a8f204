/**
 * The friend callback body checker: the documented bodies of each command, a table of malformed
 * ones (each refused with a reason naming the field), and commands the mirror ignores.
 */
import { describe, expect, it } from 'vitest';
import { accountsOfPairs, MAX_CALLBACK_PAIRS, parseFriendCallback } from '../src/tim/friend-callback.js';

const ADD = 'Sns.CallbackFriendAdd';
const DEL = 'Sns.CallbackFriendDelete';
const BLOCK = 'Sns.CallbackBlackListAdd';

describe('parseFriendCallback: bodies Tencent documents', () => {
  it('Sns.CallbackFriendAdd', () => {
    const body = {
      CallbackCommand: ADD,
      PairList: [
        { From_Account: 'alice', To_Account: 'bob', Initiator_Account: 'alice' },
        { From_Account: 'bob', To_Account: 'alice', Initiator_Account: 'alice' },
      ],
      ClientCmd: 'friend_add',
      Admin_Account: 'administrator',
      ForceFlag: 1,
    };
    expect(parseFriendCallback(ADD, body)).toEqual({
      kind: 'friends',
      command: ADD,
      pairs: [
        { from: 'alice', to: 'bob' },
        { from: 'bob', to: 'alice' },
      ],
    });
  });

  it('Sns.CallbackFriendDelete, with ids Tencent allows (quotes, spaces, non-ASCII, 32 bytes)', () => {
    const odd = 'a "quoted" id ✓';
    const long = 'x'.repeat(32);
    const r = parseFriendCallback(DEL, {
      CallbackCommand: DEL,
      PairList: [{ From_Account: odd, To_Account: long }],
    });
    expect(r).toEqual({ kind: 'friends', command: DEL, pairs: [{ from: odd, to: long }] });
  });

  it('the blocklist callback, and a command given only in the URL or only in the body', () => {
    const pairs = [{ From_Account: 'a', To_Account: 'b' }];
    expect(parseFriendCallback(BLOCK, { CallbackCommand: BLOCK, PairList: pairs }).kind).toBe('friends');
    expect(parseFriendCallback(DEL, { PairList: pairs })).toMatchObject({ kind: 'friends', command: DEL });
    expect(parseFriendCallback(null, { CallbackCommand: DEL, PairList: pairs })).toMatchObject({
      kind: 'friends',
      command: DEL,
    });
  });

  it('an empty PairList is valid and names nobody', () => {
    expect(parseFriendCallback(DEL, { CallbackCommand: DEL, PairList: [] })).toEqual({
      kind: 'friends',
      command: DEL,
      pairs: [],
    });
  });

  it('commands the mirror does not act on are ignored, not refused', () => {
    expect(
      parseFriendCallback('Sns.CallbackPrevFriendAdd', { CallbackCommand: 'Sns.CallbackPrevFriendAdd' }),
    ).toEqual({
      kind: 'ignored',
      command: 'Sns.CallbackPrevFriendAdd',
    });
    expect(parseFriendCallback('C2C.CallbackAfterSendMsg', { anything: [1, 2] }).kind).toBe('ignored');
  });
});

describe('parseFriendCallback: malformed bodies', () => {
  const pair = { From_Account: 'a', To_Account: 'b' };
  const cases: [string, string | null, unknown, RegExp][] = [
    ['a JSON array', DEL, [pair], /body must be a JSON object/],
    ['a JSON string', DEL, 'PairList', /body must be a JSON object/],
    ['null', DEL, null, /body must be a JSON object/],
    ['no command anywhere', null, { PairList: [pair] }, /CallbackCommand is missing/],
    ['an empty command', '', { PairList: [pair] }, /CallbackCommand is missing/],
    ['a numeric command in the body', null, { CallbackCommand: 7, PairList: [pair] }, /must be a string/],
    [
      'URL and body commands that differ',
      DEL,
      { CallbackCommand: ADD, PairList: [pair] },
      /differs between URL/,
    ],
    ['no PairList', DEL, { CallbackCommand: DEL }, /PairList must be an array/],
    ['PairList as an object', DEL, { PairList: { 0: pair } }, /PairList must be an array/],
    ['a pair that is a string', DEL, { PairList: ['a,b'] }, /PairList\[0\] must be an object/],
    ['a null pair after a good one', DEL, { PairList: [pair, null] }, /PairList\[1\] must be an object/],
    [
      'no From_Account',
      DEL,
      { PairList: [{ To_Account: 'b' }] },
      /PairList\[0\]\.From_Account must be a string/,
    ],
    [
      'a numeric To_Account',
      DEL,
      { PairList: [{ From_Account: 'a', To_Account: 12 }] },
      /To_Account must be a string/,
    ],
    [
      'an empty To_Account',
      DEL,
      { PairList: [{ From_Account: 'a', To_Account: '' }] },
      /To_Account is empty/,
    ],
    ['an id of 33 bytes', DEL, { PairList: [{ From_Account: 'x'.repeat(33), To_Account: 'b' }] }, /33 bytes/],
    ['an id with NUL', DEL, { PairList: [{ From_Account: 'a\u0000', To_Account: 'b' }] }, /NUL/],
    [
      'an id with a lone surrogate',
      DEL,
      { PairList: [{ From_Account: 'a\uD800', To_Account: 'b' }] },
      /surrogate/,
    ],
    [
      'too many pairs',
      DEL,
      { PairList: Array.from({ length: MAX_CALLBACK_PAIRS + 1 }, () => pair) },
      /at most 1000/,
    ],
  ];
  it.each(cases)('refuses %s', (_what, urlCommand, body, error) => {
    const r = parseFriendCallback(urlCommand, body);
    expect(r.kind).toBe('invalid');
    expect(r.kind === 'invalid' && r.error).toMatch(error);
  });

  it('quotes and shortens a command echoed in an error', () => {
    const r = parseFriendCallback(DEL, { CallbackCommand: `${'z'.repeat(100)}\n`, PairList: [] });
    expect(r.kind === 'invalid' && r.error).toContain(`"${'z'.repeat(40)}…"`);
  });
});

describe('accountsOfPairs', () => {
  it('lists both sides of every pair, each once', () => {
    expect(
      accountsOfPairs([
        { from: 'a', to: 'b' },
        { from: 'b', to: 'a' },
        { from: 'a', to: 'c' },
      ]),
    ).toEqual(['a', 'b', 'c']);
  });
});
