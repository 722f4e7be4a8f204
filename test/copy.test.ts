/**
 * The COPY text encoders (src/db/copy.ts), against the values Postgres itself produces.
 * The round trip through COPY into the real tables is in test/apply.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { copyField, copyTextArray, copyTimestamp } from '../src/db/copy.js';

describe('copyTimestamp', () => {
  it('agrees with Date for the edges and for 100,000 random instants up to 9999-12-31T23:59:59Z', () => {
    const iso = (s: number) => `${new Date(s * 1000).toISOString().slice(0, 19).replace('T', ' ')}+00`;
    const edges = [
      0, 59, 60, 86_399, 86_400, 951_782_400, 951_868_800, 1_700_000_000, 4_107_542_400, 253_402_300_799,
    ];
    for (const s of edges) expect(copyTimestamp(s), String(s)).toBe(iso(s));
    let seed = 7;
    for (let i = 0; i < 100_000; i++) {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      const s = Math.floor((seed / 2 ** 31) * 253_402_300_800);
      if (copyTimestamp(s) !== iso(s)) expect(copyTimestamp(s), String(s)).toBe(iso(s));
    }
    expect(copyTimestamp(null)).toBe('\\N');
  });
});

describe('copyField and copyTextArray', () => {
  it('escape exactly backslash, tab, newline and carriage return', () => {
    expect(copyField('plain, "quoted" {x} NULL')).toBe('plain, "quoted" {x} NULL');
    expect(copyField('a\\b\tc\nd\re')).toBe('a\\\\b\\tc\\nd\\re');
    expect(copyField('\\N')).toBe('\\\\N');
    expect(copyField(null)).toBe('\\N');
  });

  it('quote every array element, so NULL, spaces, commas and braces stay text', () => {
    expect(copyTextArray([])).toBe('{}');
    expect(copyTextArray(['NULL', ' a ', 'b,c', '{d}', ''])).toBe('{"NULL"," a ","b,c","{d}",""}');
    // The element's \ and " are escaped for the array literal, then the literal's \ for COPY.
    expect(copyTextArray(['x"y', 'p\\q'])).toBe('{"x\\\\"y","p\\\\\\\\q"}');
    expect(copyTextArray(null)).toBe('\\N');
  });
});
