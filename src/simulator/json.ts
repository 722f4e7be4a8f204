/**
 * Copy and compare helpers for JSON tag values.
 *
 * The store copies every value it takes in and hands out, so a test that keeps a reference cannot
 * change the simulated data behind the store's back (which would skip the sequence bump). Tag values
 * are small and almost always strings or numbers, so these beat `structuredClone` by a wide margin.
 */
import type { JsonValue } from '../tim/friend-get.js';

/** A deep copy of a JSON value. */
export function cloneJson(value: JsonValue): JsonValue {
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map(cloneJson);
  const out: { [key: string]: JsonValue } = {};
  for (const key of Object.keys(value)) setOwn(out, key, cloneJson(value[key] as JsonValue));
  return out;
}

/** Assigns a key, keeping `__proto__` (which JSON.parse can produce) an ordinary own property. */
function setOwn(target: { [key: string]: JsonValue }, key: string, value: JsonValue): void {
  if (key === '__proto__') {
    Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
  } else {
    target[key] = value;
  }
}

/** A deep copy of a tag record. */
export function cloneRecord(record: Readonly<Record<string, JsonValue>>): Record<string, JsonValue> {
  const out: Record<string, JsonValue> = {};
  for (const key of Object.keys(record)) setOwn(out, key, cloneJson(record[key] as JsonValue));
  return out;
}

/** Structural equality of two JSON values; object key order does not matter. */
export function jsonEqual(a: JsonValue | undefined, b: JsonValue | undefined): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((item, i) => jsonEqual(item, b[i]));
  }
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => Object.hasOwn(b, key) && jsonEqual(a[key], b[key]));
}

/** True when the record has at least one key; avoids allocating a key array on the hot path. */
export function hasKeys(record: object): boolean {
  for (const _ in record) return true;
  return false;
}
