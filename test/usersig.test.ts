/**
 * UserSig: conformance with Tencent's own `tls-sig-api-v2` package, Tencent's verdicts, and the
 * providers' caching. Whole sig strings are never compared: they depend on JSON key order and on the
 * zlib level, which Tencent does not fix. Decoded fields and the HMAC are what the server checks.
 */
import { createRequire } from 'node:module';
import { inspect } from 'node:util';
import { deflateSync, inflateSync } from 'node:zlib';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  decodeUserSig,
  generateUserSig,
  SigningUserSig,
  StaticUserSig,
  type UserSigDocument,
  userSigHmac,
  verifyUserSig,
} from '../src/tim/usersig.js';

/** The parts of the untyped CommonJS package that these tests use. */
interface TlsSigApiV2 {
  Api: new (
    sdkappid: number,
    key: string,
  ) => {
    /** Reads the clock with `Date.now()`. */
    genUserSig(userid: string, expire: number): string;
    /** Private in spirit, but it is the package's own HMAC over the four `TLS.*` lines. */
    _hmacsha256(identifier: string, currTime: number, expire: number, base64UserBuf: string | null): string;
  };
}
const TLSSigAPIv2 = createRequire(import.meta.url)('tls-sig-api-v2') as TlsSigApiV2;

/** The key from the package's own example (TLSSigAPITest.js). */
const KEY = '5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e';
const SDKAPPID = 1400000000;
const NOW = 1_700_000_000;

/**
 * Decodes a sig without our code, as the package would encode it: undo the `*-_` substitution,
 * base64, inflate, JSON. So our decoder is not the only judge of the package's output.
 */
function decodeIndependently(sig: string): Record<string, unknown> {
  const b64 = sig.replaceAll('*', '+').replaceAll('-', '/').replaceAll('_', '=');
  return JSON.parse(inflateSync(Buffer.from(b64, 'base64')).toString('utf8'));
}

/** Encodes any document the way a sig is encoded, to build tampered sigs. */
function encode(doc: unknown): string {
  return deflateSync(Buffer.from(JSON.stringify(doc)))
    .toString('base64')
    .replaceAll('+', '*')
    .replaceAll('/', '-')
    .replaceAll('=', '_');
}

/** A sig made by the package at the pinned time `now` (Unix seconds). */
function packageSig(opts: {
  key?: string;
  sdkAppId?: number;
  identifier: string;
  expire: number;
  now: number;
}) {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(opts.now * 1000);
  try {
    return new TLSSigAPIv2.Api(opts.sdkAppId ?? SDKAPPID, opts.key ?? KEY).genUserSig(
      opts.identifier,
      opts.expire,
    );
  } finally {
    vi.useRealTimers();
  }
}

afterEach(() => {
  vi.useRealTimers();
});

describe('conformance with tls-sig-api-v2', () => {
  it('the pinned clock really reaches the package', () => {
    const a = decodeIndependently(packageSig({ identifier: 'administrator', expire: 60, now: NOW }));
    const b = decodeIndependently(packageSig({ identifier: 'administrator', expire: 60, now: NOW + 1234 }));
    expect(a['TLS.time']).toBe(NOW);
    expect(b['TLS.time']).toBe(NOW + 1234);
  });

  const cases = [
    { identifier: 'administrator', sdkAppId: SDKAPPID, expire: 86_400 },
    { identifier: 'admin_01-x', sdkAppId: 20_000_001, expire: 180 * 86_400 },
    { identifier: 'ユーザー 管理', sdkAppId: SDKAPPID, expire: 1 },
    { identifier: 'quote"back\\slash', sdkAppId: 1_600_000_123, expire: 3_600 },
  ];

  it.each(cases)(
    'same fields and HMAC for $identifier / $sdkAppId / $expire s',
    ({ identifier, sdkAppId, expire }) => {
      const theirs = packageSig({ identifier, sdkAppId, expire, now: NOW });
      const ours = generateUserSig({ secretKey: KEY, sdkAppId, identifier, expireSeconds: expire, now: NOW });

      const expected: UserSigDocument = {
        'TLS.ver': '2.0',
        'TLS.identifier': identifier,
        'TLS.sdkappid': sdkAppId,
        'TLS.time': NOW,
        'TLS.expire': expire,
        'TLS.sig': new TLSSigAPIv2.Api(sdkAppId, KEY)._hmacsha256(identifier, NOW, expire, null),
      };
      // Every field, and no others (no TLS.userbuf), on both sides and with both decoders.
      expect(decodeUserSig(theirs)).toEqual(expected);
      expect(decodeIndependently(theirs)).toEqual(expected);
      expect(decodeUserSig(ours)).toEqual(expected);
      expect(decodeIndependently(ours)).toEqual(expected);
      expect(userSigHmac(KEY, identifier, sdkAppId, NOW, expire)).toBe(expected['TLS.sig']);

      // The package offers no verify or decode; our verifier accepts its sigs.
      expect(verifyUserSig(theirs, { secretKey: KEY, sdkAppId, identifier, now: NOW })).toEqual({ ok: true });
      expect(verifyUserSig(ours, { secretKey: KEY, sdkAppId, identifier, now: NOW })).toEqual({ ok: true });
    },
  );

  it('keeps JSON numbers as numbers, as the package does', () => {
    const doc = decodeIndependently(
      generateUserSig({ secretKey: KEY, sdkAppId: 1, identifier: 'a', expireSeconds: 5 }),
    );
    expect(typeof doc['TLS.sdkappid']).toBe('number');
    expect(typeof doc['TLS.time']).toBe('number');
    expect(typeof doc['TLS.expire']).toBe('number');
  });
});

describe('verifyUserSig verdicts', () => {
  const expected = { secretKey: KEY, sdkAppId: SDKAPPID, identifier: 'administrator' };
  const sig = generateUserSig({ ...expected, expireSeconds: 600, now: NOW });
  const doc = decodeUserSig(sig)!;

  it('accepts a valid sig up to and including its last second', () => {
    expect(verifyUserSig(sig, { ...expected, now: NOW })).toEqual({ ok: true });
    expect(verifyUserSig(sig, { ...expected, now: NOW + 600 })).toEqual({ ok: true });
  });

  it('70001 once expired', () => {
    expect(verifyUserSig(sig, { ...expected, now: NOW + 601 })).toMatchObject({
      ok: false,
      errorCode: 70001,
    });
  });

  it('70003 for a tampered HMAC, tampered fields, or the wrong key', () => {
    const flipped = doc['TLS.sig'].startsWith('A')
      ? `B${doc['TLS.sig'].slice(1)}`
      : `A${doc['TLS.sig'].slice(1)}`;
    for (const bad of [
      encode({ ...doc, 'TLS.sig': flipped }),
      encode({ ...doc, 'TLS.expire': 10 * 365 * 86_400 }),
      encode({ ...doc, 'TLS.time': NOW + 3_600 }),
    ]) {
      expect(verifyUserSig(bad, { ...expected, now: NOW })).toMatchObject({ ok: false, errorCode: 70003 });
    }
    expect(verifyUserSig(sig, { ...expected, secretKey: `${KEY}0`, now: NOW })).toMatchObject({
      ok: false,
      errorCode: 70003,
    });
  });

  it('70003 for garbage', () => {
    const garbage = [
      '',
      'not a usersig',
      '!!!',
      encode({ hello: 'world' }),
      encode([1, 2]),
      sig.slice(0, 20),
    ];
    for (const bad of garbage) {
      expect(verifyUserSig(bad, { ...expected, now: NOW })).toMatchObject({ ok: false, errorCode: 70003 });
    }
  });

  it('70013 for another identifier, 70014 for another SDKAppID', () => {
    expect(verifyUserSig(sig, { ...expected, identifier: 'someone_else', now: NOW })).toMatchObject({
      ok: false,
      errorCode: 70013,
    });
    expect(verifyUserSig(sig, { ...expected, sdkAppId: SDKAPPID + 1, now: NOW })).toMatchObject({
      ok: false,
      errorCode: 70014,
    });
  });
});

describe('UserSig providers', () => {
  function signing(opts: { expireSeconds?: number; renewBeforeSeconds?: number } = {}) {
    let now = NOW;
    const provider = new SigningUserSig({
      secretKey: KEY,
      sdkAppId: SDKAPPID,
      identifier: 'administrator',
      clock: () => now,
      ...opts,
    });
    return {
      provider,
      setNow: (t: number) => {
        now = t;
      },
    };
  }
  const timeOf = (sig: string) => decodeUserSig(sig)?.['TLS.time'];

  it('reuses the sig while fresh and makes a new one at renewAt, while the old one is still valid', () => {
    const { provider, setNow } = signing({ expireSeconds: 86_400, renewBeforeSeconds: 100 });
    const first = provider.current();
    expect(timeOf(first)).toBe(NOW);
    setNow(NOW + 86_400 - 101);
    expect(provider.current()).toBe(first);

    setNow(NOW + 86_400 - 100);
    const second = provider.current();
    expect(second).not.toBe(first);
    expect(timeOf(second)).toBe(NOW + 86_400 - 100);
    // Renewed well before expiry: the old sig would still have been accepted.
    expect(
      verifyUserSig(first, {
        secretKey: KEY,
        sdkAppId: SDKAPPID,
        identifier: 'administrator',
        now: NOW + 86_300,
      }),
    ).toEqual({ ok: true });
  });

  it('renews by default an hour before a 24 h expiry', () => {
    const { provider, setNow } = signing();
    const first = provider.current();
    expect(decodeUserSig(first)?.['TLS.expire']).toBe(86_400);
    setNow(NOW + 86_400 - 3_601);
    expect(provider.current()).toBe(first);
    setNow(NOW + 86_400 - 3_600);
    expect(provider.current()).not.toBe(first);
  });

  it('never waits past half the validity, whatever renewBeforeSeconds says', () => {
    const { provider, setNow } = signing({ expireSeconds: 100, renewBeforeSeconds: 3_600 });
    const first = provider.current();
    setNow(NOW + 49);
    expect(provider.current()).toBe(first);
    setNow(NOW + 50);
    expect(provider.current()).not.toBe(first);
  });

  it('invalidate() forces a new sig even while the cached one is fresh', () => {
    const { provider, setNow } = signing();
    const first = provider.current();
    setNow(NOW + 1);
    expect(provider.current()).toBe(first);
    expect(provider.invalidate()).toBe(true);
    const second = provider.current();
    expect(second).not.toBe(first);
    expect(timeOf(second)).toBe(NOW + 1);
  });

  it('StaticUserSig returns its sig and cannot renew it', () => {
    const provider = new StaticUserSig('fixed-sig');
    expect(provider.current()).toBe('fixed-sig');
    expect(provider.invalidate()).toBe(false);
    expect(provider.current()).toBe('fixed-sig');
  });

  it('neither provider shows the key or the sig in JSON or util.inspect', () => {
    const { provider } = signing();
    const sig = provider.current();
    const fixed = new StaticUserSig(sig);
    for (const shown of [JSON.stringify({ provider, fixed }), inspect(provider), inspect(fixed)]) {
      expect(shown).not.toContain(KEY);
      expect(shown).not.toContain(sig);
    }
  });
});
