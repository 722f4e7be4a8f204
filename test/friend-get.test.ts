/**
 * `decodeFriendGetResponse`, table-driven: every body either decodes to an exact page, or throws the
 * exact error class a caller branches on. Nothing in between: a page is used whole or not at all.
 */
import { describe, expect, it } from 'vitest';
import {
  classifyTimErrorCode,
  type RetryClass,
  TimApiError,
  TimDecodeError,
  TimHttpError,
} from '../src/tim/errors.js';
import { decodeFriendGetResponse, type FriendGetPage, tagCategory } from '../src/tim/friend-get.js';

/** The sample response of the official page (reference/000_*.txt), with the braces it lost restored. */
const OFFICIAL_SAMPLE = {
  UserDataItem: [
    {
      To_Account: 'id1',
      ValueItem: [
        { Tag: 'Tag_SNS_IM_AddSource', Value: 'AddSource_Type_Android' },
        { Tag: 'Tag_SNS_IM_Remark', Value: 'Remark1' },
        { Tag: 'Tag_SNS_IM_Group' },
        { Tag: 'Tag_SNS_IM_AddTime', Value: 1563867420 },
        { Tag: 'Tag_SNS_Custom_Test', Value: 'CustomData1' },
      ],
    },
    {
      To_Account: 'id2',
      ValueItem: [
        { Tag: 'Tag_SNS_IM_AddSource', Value: 'AddSource_Type_IOS' },
        { Tag: 'Tag_SNS_IM_Group' },
        { Tag: 'Tag_SNS_IM_AddTime', Value: 1563867425 },
      ],
    },
  ],
  StandardSequence: 88,
  CustomSequence: 46,
  FriendNum: 20,
  CompleteFlag: 1,
  NextStartIndex: 0,
  ActionStatus: 'OK',
  ErrorCode: 0,
  ErrorInfo: '',
  ErrorDisplay: '',
};

const OFFICIAL_PAGE: FriendGetPage = {
  items: [
    {
      friendId: 'id1',
      values: [
        { tag: 'Tag_SNS_IM_AddSource', value: 'AddSource_Type_Android' },
        { tag: 'Tag_SNS_IM_Remark', value: 'Remark1' },
        // Value left out for an empty group list: kept visible as null.
        { tag: 'Tag_SNS_IM_Group', value: null },
        { tag: 'Tag_SNS_IM_AddTime', value: 1563867420 },
        { tag: 'Tag_SNS_Custom_Test', value: 'CustomData1' },
      ],
    },
    {
      friendId: 'id2',
      values: [
        { tag: 'Tag_SNS_IM_AddSource', value: 'AddSource_Type_IOS' },
        { tag: 'Tag_SNS_IM_Group', value: null },
        { tag: 'Tag_SNS_IM_AddTime', value: 1563867425 },
      ],
    },
  ],
  standardSequence: 88,
  customSequence: 46,
  friendNum: 20,
  complete: true,
  nextStartIndex: 0,
};

type Json = Record<string, unknown>;

/** A valid incomplete page with one friend, with some fields replaced (`undefined` removes one). */
function page(overrides: Json = {}): string {
  const base: Json = {
    UserDataItem: [{ To_Account: 'f1', ValueItem: [{ Tag: 'Tag_SNS_IM_Remark', Value: 'r' }] }],
    StandardSequence: 5,
    CustomSequence: 7,
    FriendNum: 1,
    CompleteFlag: 0,
    NextStartIndex: 100,
    ActionStatus: 'OK',
    ErrorCode: 0,
    ErrorInfo: '',
  };
  return JSON.stringify({ ...base, ...overrides });
}

/** A page holding one item. */
function withItem(item: unknown): string {
  return page({ UserDataItem: [item] });
}

/** A page holding one friend with these ValueItems. */
function withValues(values: unknown): string {
  return withItem({ To_Account: 'f1', ValueItem: values });
}

/** A page whose only friend has one tag with this value. */
function withTag(tag: string, value: unknown): string {
  return withValues([{ Tag: tag, Value: value }]);
}

/** A failure body as Tencent sends it. */
function failure(errorCode: number, errorInfo = 'something failed'): string {
  return JSON.stringify({
    ActionStatus: 'FAIL',
    ErrorCode: errorCode,
    ErrorInfo: errorInfo,
    ErrorDisplay: '',
  });
}

type Expectation =
  | { page: FriendGetPage | ((p: FriendGetPage) => void) }
  | { decodeError: true }
  | { apiError: { errorCode: number; retryClass: RetryClass; message?: RegExp } };

interface Case {
  name: string;
  body: string | (() => string);
  expect: Expectation;
}

const decodeError = { decodeError: true } as const;
const api = (errorCode: number, retryClass: RetryClass, message?: RegExp): Expectation => ({
  apiError: { errorCode, retryClass, ...(message ? { message } : {}) },
});
const ONE_FRIEND = [{ friendId: 'f1', values: [{ tag: 'Tag_SNS_IM_Remark', value: 'r' }] }];
const MB_STRING = 'x'.repeat(1024 * 1024);

const cases: Case[] = [
  // The documented shape.
  {
    name: 'the official sample page',
    body: JSON.stringify(OFFICIAL_SAMPLE),
    expect: { page: OFFICIAL_PAGE },
  },
  {
    name: 'an incomplete page',
    body: page(),
    expect: {
      page: {
        items: ONE_FRIEND,
        standardSequence: 5,
        customSequence: 7,
        friendNum: 1,
        complete: false,
        nextStartIndex: 100,
      },
    },
  },

  // Not a friend_get body at all.
  { name: 'an empty object', body: '{}', expect: decodeError },
  { name: 'an empty body', body: '', expect: decodeError },
  {
    name: 'non-JSON text',
    body: 'upstream connect error or disconnect/reset before headers',
    expect: decodeError,
  },
  { name: 'truncated JSON', body: () => JSON.stringify(OFFICIAL_SAMPLE).slice(0, 120), expect: decodeError },
  {
    name: 'an HTML error page',
    body: '<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>',
    expect: decodeError,
  },
  { name: 'null', body: 'null', expect: decodeError },
  { name: 'an array', body: JSON.stringify([OFFICIAL_SAMPLE]), expect: decodeError },
  { name: 'a number', body: '0', expect: decodeError },

  // ErrorCode and ActionStatus.
  { name: 'ErrorCode missing', body: page({ ErrorCode: undefined }), expect: decodeError },
  { name: 'ErrorCode a string', body: page({ ErrorCode: '0' }), expect: decodeError },
  { name: 'ErrorCode a float', body: page({ ErrorCode: 0.5 }), expect: decodeError },
  { name: 'ErrorCode null', body: page({ ErrorCode: null }), expect: decodeError },
  { name: 'ActionStatus FAIL with ErrorCode 0', body: page({ ActionStatus: 'FAIL' }), expect: decodeError },
  {
    name: 'ActionStatus missing with ErrorCode 0',
    body: page({ ActionStatus: undefined }),
    expect: decodeError,
  },
  { name: '30003 account missing', body: failure(30003), expect: api(30003, 'account-missing') },
  { name: '60007 rate limited', body: failure(60007), expect: api(60007, 'rate-limited') },
  { name: '30006 internal error', body: failure(30006), expect: api(30006, 'retryable') },
  { name: '70001 UserSig expired', body: failure(70001), expect: api(70001, 'usersig-refresh') },
  { name: '70050 UserSig lockout', body: failure(70050), expect: api(70050, 'usersig-lockout') },
  {
    name: '30004 not an administrator, with a fix hint',
    body: failure(30004),
    expect: api(30004, 'fatal-config', /\(fix: TIM_IDENTIFIER must be an app administrator account\)/),
  },
  {
    name: 'a non-zero ErrorCode wins even with ActionStatus OK and no ErrorInfo',
    body: JSON.stringify({ ActionStatus: 'OK', ErrorCode: 60008 }),
    expect: api(60008, 'retryable'),
  },

  // UserDataItem and its items.
  { name: 'UserDataItem an object', body: page({ UserDataItem: { To_Account: 'f1' } }), expect: decodeError },
  { name: 'UserDataItem a string', body: page({ UserDataItem: 'f1' }), expect: decodeError },
  { name: 'UserDataItem null', body: page({ UserDataItem: null }), expect: decodeError },
  { name: 'an item that is a string', body: withItem('f1'), expect: decodeError },
  { name: 'an item that is null', body: withItem(null), expect: decodeError },
  { name: 'an item that is an array', body: withItem([{ To_Account: 'f1' }]), expect: decodeError },
  { name: 'To_Account missing', body: withItem({ ValueItem: [] }), expect: decodeError },
  { name: 'To_Account empty', body: withItem({ To_Account: '' }), expect: decodeError },
  { name: 'To_Account a number', body: withItem({ To_Account: 12345 }), expect: decodeError },
  {
    name: 'ValueItem an object',
    body: withValues({ Tag: 'Tag_SNS_IM_Remark', Value: 'r' }),
    expect: decodeError,
  },
  { name: 'ValueItem null', body: withValues(null), expect: decodeError },
  {
    name: 'a ValueItem entry that is a string',
    body: withValues(['Tag_SNS_IM_Remark']),
    expect: decodeError,
  },
  { name: 'Tag missing', body: withValues([{ Value: 'r' }]), expect: decodeError },
  { name: 'Tag empty', body: withValues([{ Tag: '', Value: 'r' }]), expect: decodeError },
  { name: 'Tag a number', body: withValues([{ Tag: 7, Value: 'r' }]), expect: decodeError },
  {
    name: 'the same Tag twice in one item',
    body: withValues([
      { Tag: 'Tag_SNS_Custom_A', Value: '1' },
      { Tag: 'Tag_SNS_Custom_A', Value: '2' },
    ]),
    expect: decodeError,
  },

  // Types of the standard tags.
  { name: 'Tag_SNS_IM_Group a string', body: withTag('Tag_SNS_IM_Group', 'friends'), expect: decodeError },
  {
    name: 'Tag_SNS_IM_Group with a number',
    body: withTag('Tag_SNS_IM_Group', ['a', 1]),
    expect: decodeError,
  },
  { name: 'Tag_SNS_IM_Group with a null', body: withTag('Tag_SNS_IM_Group', [null]), expect: decodeError },
  { name: 'Tag_SNS_IM_AddTime negative', body: withTag('Tag_SNS_IM_AddTime', -1), expect: decodeError },
  {
    name: 'Tag_SNS_IM_AddTime a float',
    body: withTag('Tag_SNS_IM_AddTime', 1563867420.5),
    expect: decodeError,
  },
  {
    name: 'Tag_SNS_IM_AddTime a string',
    body: withTag('Tag_SNS_IM_AddTime', '1563867420'),
    expect: decodeError,
  },
  { name: 'Tag_SNS_IM_Remark a number', body: withTag('Tag_SNS_IM_Remark', 42), expect: decodeError },
  { name: 'Tag_SNS_IM_AddSource an object', body: withTag('Tag_SNS_IM_AddSource', {}), expect: decodeError },
  {
    name: 'Tag_SNS_IM_AddWording an array',
    body: withTag('Tag_SNS_IM_AddWording', ['hi']),
    expect: decodeError,
  },
  {
    name: 'standard tags with valid values, including an empty group list',
    body: withValues([
      { Tag: 'Tag_SNS_IM_Group', Value: [] },
      { Tag: 'Tag_SNS_IM_Group_Future', Value: 3 },
      { Tag: 'Tag_SNS_IM_AddTime', Value: 0 },
      { Tag: 'Tag_SNS_IM_Remark', Value: '' },
    ]),
    expect: {
      page: (p) =>
        expect(p.items[0]?.values).toEqual([
          { tag: 'Tag_SNS_IM_Group', value: [] },
          { tag: 'Tag_SNS_IM_Group_Future', value: 3 },
          { tag: 'Tag_SNS_IM_AddTime', value: 0 },
          { tag: 'Tag_SNS_IM_Remark', value: '' },
        ]),
    },
  },

  // Sequences and paging fields.
  ...(['StandardSequence', 'CustomSequence'] as const).flatMap((field): Case[] => [
    { name: `${field} negative`, body: page({ [field]: -1 }), expect: decodeError },
    { name: `${field} a float`, body: page({ [field]: 1.5 }), expect: decodeError },
    { name: `${field} above MAX_SAFE_INTEGER`, body: page({ [field]: 2 ** 53 }), expect: decodeError },
    { name: `${field} a string`, body: page({ [field]: '5' }), expect: decodeError },
    { name: `${field} missing`, body: page({ [field]: undefined }), expect: decodeError },
  ]),
  {
    name: 'sequences at MAX_SAFE_INTEGER',
    body: page({ StandardSequence: Number.MAX_SAFE_INTEGER, CustomSequence: Number.MAX_SAFE_INTEGER }),
    expect: {
      page: (p) => {
        expect(p.standardSequence).toBe(Number.MAX_SAFE_INTEGER);
        expect(p.customSequence).toBe(Number.MAX_SAFE_INTEGER);
      },
    },
  },
  { name: 'CompleteFlag missing', body: page({ CompleteFlag: undefined }), expect: decodeError },
  { name: 'CompleteFlag a boolean', body: page({ CompleteFlag: true }), expect: decodeError },
  {
    name: 'NextStartIndex missing on an incomplete page',
    body: page({ NextStartIndex: undefined }),
    expect: decodeError,
  },
  { name: 'NextStartIndex negative', body: page({ NextStartIndex: -5 }), expect: decodeError },
  {
    name: 'NextStartIndex missing on a complete page',
    body: page({ CompleteFlag: 1, NextStartIndex: undefined }),
    expect: { page: (p) => expect(p).toMatchObject({ complete: true, nextStartIndex: 0 }) },
  },
  {
    name: 'any non-zero CompleteFlag means complete',
    body: page({ CompleteFlag: 2 }),
    expect: { page: (p) => expect(p.complete).toBe(true) },
  },
  {
    name: 'FriendNum missing is fine: it is informational',
    body: page({ FriendNum: undefined }),
    expect: { page: (p) => expect(p.friendNum).toBeUndefined() },
  },
  { name: 'FriendNum negative', body: page({ FriendNum: -1 }), expect: decodeError },

  // What must be kept, not rejected.
  {
    name: 'UserDataItem missing is an empty page',
    body: page({ UserDataItem: undefined, CompleteFlag: 1 }),
    expect: {
      page: {
        items: [],
        standardSequence: 5,
        customSequence: 7,
        friendNum: 1,
        complete: true,
        nextStartIndex: 100,
      },
    },
  },
  {
    name: 'an item without ValueItem has values undefined (its data was not sent)',
    body: withItem({ To_Account: 'f1' }),
    expect: { page: (p) => expect(p.items).toEqual([{ friendId: 'f1', values: undefined }]) },
  },
  {
    name: 'an item with an empty ValueItem has no values (not the same as none sent)',
    body: withValues([]),
    expect: { page: (p) => expect(p.items).toEqual([{ friendId: 'f1', values: [] }]) },
  },
  {
    name: 'unknown tags keep their values as sent, objects included',
    body: withValues([
      { Tag: 'Tag_SNS_Custom_Obj', Value: { a: [1, { b: null }], c: 'ü' } },
      { Tag: 'Tag_Future_Flag', Value: true },
      { Tag: 'Tag_SNS_Custom_Num', Value: 3.25 },
    ]),
    expect: {
      page: (p) =>
        expect(p.items[0]?.values).toEqual([
          { tag: 'Tag_SNS_Custom_Obj', value: { a: [1, { b: null }], c: 'ü' } },
          { tag: 'Tag_Future_Flag', value: true },
          { tag: 'Tag_SNS_Custom_Num', value: 3.25 },
        ]),
    },
  },
  {
    name: 'UserIDs are opaque: quotes, spaces, non-ASCII',
    body: withItem({ To_Account: ' "a b"\\ 用户 ', ValueItem: [] }),
    expect: { page: (p) => expect(p.items[0]?.friendId).toBe(' "a b"\\ 用户 ') },
  },
  {
    name: 'a 1 MB string value is kept whole',
    body: () => withTag('Tag_SNS_Custom_Big', MB_STRING),
    expect: { page: (p) => expect(p.items[0]?.values?.[0]?.value).toBe(MB_STRING) },
  },
];

describe('decodeFriendGetResponse', () => {
  it.each(cases)('$name', ({ body, expect: want }) => {
    const text = typeof body === 'function' ? body() : body;
    if ('page' in want) {
      const got = decodeFriendGetResponse(text);
      if (typeof want.page === 'function') want.page(got);
      else expect(got).toEqual(want.page);
      return;
    }
    let thrown: unknown;
    try {
      decodeFriendGetResponse(text);
    } catch (err) {
      thrown = err;
    }
    if ('decodeError' in want) {
      expect(thrown).toBeInstanceOf(TimDecodeError);
      expect(thrown).toMatchObject({ code: 'TIM_ERR_DECODE', retryClass: 'bad-response' });
      // Messages describe the problem; they never echo the body.
      expect((thrown as Error).message.length).toBeLessThan(200);
    } else {
      expect(thrown).toBeInstanceOf(TimApiError);
      const err = thrown as TimApiError;
      expect(err).toMatchObject({ code: 'TIM_ERR_API', ...want.apiError, message: expect.any(String) });
      if (want.apiError.message) expect(err.message).toMatch(want.apiError.message);
    }
  });

  it('keeps ErrorInfo, cut to 300 characters', () => {
    const long = 'e'.repeat(1000);
    expect(() => decodeFriendGetResponse(failure(30001, long))).toThrow(
      expect.objectContaining({ errorCode: 30001, errorInfo: 'e'.repeat(300) }),
    );
    expect(() => decodeFriendGetResponse(failure(30001, 'bad From_Account'))).toThrow(
      expect.objectContaining({ errorInfo: 'bad From_Account' }),
    );
  });

  it('decodes 100,000 items', () => {
    const items = Array.from({ length: 100_000 }, (_, i) => ({
      To_Account: `u${i}`,
      ValueItem: [{ Tag: 'Tag_SNS_IM_AddTime', Value: i }],
    }));
    const got = decodeFriendGetResponse(page({ UserDataItem: items, CompleteFlag: 1 }));
    expect(got.items).toHaveLength(100_000);
    expect(got.items[99_999]).toEqual({
      friendId: 'u99999',
      values: [{ tag: 'Tag_SNS_IM_AddTime', value: 99_999 }],
    });
  });
});

describe('classifyTimErrorCode', () => {
  /** Every code in tim-api.md's tables, with what the caller must do. */
  const table: [RetryClass, number[]][] = [
    // friend_get's own codes.
    ['fatal', [30001]],
    ['account-missing', [30003]],
    ['fatal-config', [30004]],
    ['retryable', [30006, 30007]],
    // Public codes.
    ['rate-limited', [60007, 60011, 60018, 60019]],
    ['retryable', [60008, 70169, 70202, 70500]],
    ['usersig-refresh', [70001, 70052]],
    ['usersig-lockout', [70050]],
    [
      'fatal-config',
      [60002, 60004, 60005, 60006, 60010, 70403, 70003, 70005, 70009, 70013, 70014, 70016, 70020],
    ],
    // Fixed in the IM console, not in our settings: calls pause and are tried again, no restart.
    ['refused', [60016, 60020, 60021]],
    // The request JSON rejected: only the account id varies in it, so it is about that account.
    ['fatal', [60003]],
    // "Account not imported" is about the account, not the setup: it is marked missing like 30003.
    ['account-missing', [70107]],
    // Codes not in the tables.
    ['fatal', [1, 12345, 80001, 99999]],
  ];

  it.each(table.flatMap(([retryClass, codes]) => codes.map((code) => ({ code, retryClass }))))(
    '$code → $retryClass',
    ({ code, retryClass }) => {
      expect(classifyTimErrorCode(code)).toBe(retryClass);
      expect(new TimApiError(code, '').retryClass).toBe(retryClass);
    },
  );

  it('every fatal-config code names the variable to fix; every refusal says where to fix it', () => {
    const codes = (cls: RetryClass) => table.filter(([c]) => c === cls).flatMap(([, codes]) => codes);
    for (const code of codes('fatal-config')) {
      expect(new TimApiError(code, '').message).toMatch(/\(fix: .*\bTIM_[A-Z_]+\b.*\)/);
    }
    for (const code of codes('refused')) expect(new TimApiError(code, '').message).toMatch(/\(fix: .+\)/);
  });

  it('an HTTP status other than 200 comes from something in between: 5xx retried, 429 slows down, other 4xx refuse', () => {
    expect(new TimHttpError(502).retryClass).toBe('retryable');
    expect(new TimHttpError(429).retryClass).toBe('rate-limited');
    for (const status of [400, 403, 404, 407]) {
      const err = new TimHttpError(status);
      expect(err.retryClass).toBe('refused');
      expect(err.message).toMatch(/TIM_BASE_URL/);
    }
  });
});

describe('tagCategory', () => {
  it.each([
    ['Tag_SNS_IM_Group', 'standard'],
    ['Tag_SNS_IM_Remark', 'standard'],
    ['Tag_SNS_IM_AddSource', 'standard'],
    ['Tag_SNS_IM_AddWording', 'standard'],
    ['Tag_SNS_IM_AddTime', 'standard'],
    ['Tag_SNS_IM_SomethingNew', 'standard'],
    ['Tag_SNS_Custom_Test', 'custom'],
    ['Tag_SNS_Custom_', 'custom'],
    ['Tag_Profile_IM_Nick', 'custom'],
    ['tag_sns_im_remark', 'custom'],
    ['', 'custom'],
  ] as const)('%s → %s', (tag, category) => {
    expect(tagCategory(tag)).toBe(category);
  });
});
