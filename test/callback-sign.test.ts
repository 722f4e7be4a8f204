/**
 * The webhook signature: Tencent's documented example, the checks on Sign and RequestTime, the
 * freshness window in both directions, and that the comparison goes through timingSafeEqual.
 */
import * as crypto from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { CallbackVerifier, callbackSign } from '../src/tim/callback-sign.js';

vi.mock('node:crypto', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:crypto')>();
  return { ...actual, timingSafeEqual: vi.fn(actual.timingSafeEqual) };
});

const TOKEN = 'xxxxyyyy';
const NOW = 1_669_872_112;

function verifier(maxSkewSeconds = 300, now = NOW): CallbackVerifier {
  return new CallbackVerifier({ token: TOKEN, maxSkewSeconds, nowSeconds: () => now });
}

describe('callbackSign', () => {
  it("matches tim-api.md's example", () => {
    expect(callbackSign('xxxxyyyy', 1669872112)).toBe(
      '17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061',
    );
    expect(callbackSign('xxxxyyyy', '1669872112')).toBe(callbackSign('xxxxyyyy', 1669872112));
  });
});

describe('CallbackVerifier', () => {
  const good = callbackSign(TOKEN, NOW);

  it('accepts the right Sign for a fresh RequestTime, in either hex case', () => {
    expect(verifier().check(good, String(NOW))).toBeUndefined();
    expect(verifier().check(good.toUpperCase(), String(NOW))).toBeUndefined();
  });

  it.each([
    ['no Sign', null, String(NOW), 'unsigned'],
    ['no RequestTime', good, null, 'unsigned'],
    ['empty Sign', '', String(NOW), 'unsigned'],
    ['RequestTime in milliseconds-with-dot', good, `${NOW}.5`, 'bad-time'],
    ['negative RequestTime', good, `-${NOW}`, 'bad-time'],
    ['RequestTime with spaces', good, ` ${NOW}`, 'bad-time'],
    ['RequestTime of 13 digits', good, '1669872112000', 'bad-time'],
    ['Sign one character short', good.slice(1), String(NOW), 'bad-sign'],
    ['Sign not hex', `${good.slice(0, 63)}g`, String(NOW), 'bad-sign'],
    ['Sign of another token', callbackSign('other-token', NOW), String(NOW), 'bad-sign'],
    ['Sign of another time', callbackSign(TOKEN, NOW + 1), String(NOW), 'bad-sign'],
    [
      'Sign with the token alone',
      crypto.createHash('sha256').update(TOKEN).digest('hex'),
      String(NOW),
      'bad-sign',
    ],
  ] as const)('refuses %s', (_what, sign, time, problem) => {
    expect(verifier().check(sign, time)).toBe(problem);
  });

  it('refuses a RequestTime outside the window, in the past or the future, and accepts its edges', () => {
    const at = (t: number) => verifier(300).check(callbackSign(TOKEN, t), String(t));
    expect(at(NOW - 300)).toBeUndefined();
    expect(at(NOW + 300)).toBeUndefined();
    expect(at(NOW - 301)).toBe('stale');
    expect(at(NOW + 301)).toBe('stale');
    expect(at(0)).toBe('stale');
  });

  it('checks the signature before the time, so an unsigned caller learns nothing about the window', () => {
    expect(verifier().check(callbackSign('guess', 1), '1')).toBe('bad-sign');
  });

  it('compares with crypto.timingSafeEqual', () => {
    const spy = vi.mocked(crypto.timingSafeEqual);
    spy.mockClear();
    expect(verifier().check(callbackSign('other-token', NOW), String(NOW))).toBe('bad-sign');
    expect(spy).toHaveBeenCalledTimes(1);
    const [a, b] = spy.mock.calls[0]!;
    expect((a as Buffer).length).toBe(32);
    expect((b as Buffer).length).toBe(32);
  });

  it('refuses an empty token at construction', () => {
    expect(() => new CallbackVerifier({ token: '', maxSkewSeconds: 60 })).toThrow(RangeError);
  });
});
