/**
 * `v4/sns/friend_get`: request and response types, and the decoder that turns an untrusted body
 * into a typed page. The decoder never returns a partly valid page: any deviation from the
 * documented shape is a {@link TimDecodeError}, and a non-zero `ErrorCode` is a {@link TimApiError}.
 */
import { LONE_SURROGATE } from '../text.js';
import { TimApiError, TimDecodeError } from './errors.js';

/** The request body. Sequences are omitted to ask for everything. */
export interface FriendGetRequest {
  From_Account: string;
  StartIndex: number;
  StandardSequence?: number;
  CustomSequence?: number;
}

/** Any JSON value, as Tencent sent it. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** One `{Tag, Value}` pair of a friend. */
export interface TagValue {
  tag: string;
  value: JsonValue;
}

/** One `UserDataItem`. `values` is undefined when the item had no `ValueItem` at all. */
export interface FriendItem {
  friendId: string;
  values: TagValue[] | undefined;
}

/** A decoded, validated page. */
export interface FriendGetPage {
  items: FriendItem[];
  standardSequence: number;
  customSequence: number;
  /** Tencent's own total; documented as unreliable, so it is informational only. */
  friendNum: number | undefined;
  complete: boolean;
  /** Opaque cursor for the next page; meaningful only when `complete` is false. */
  nextStartIndex: number;
}

/** Tag names of the standard (built-in) friend fields. */
export const STANDARD_TAGS = {
  group: 'Tag_SNS_IM_Group',
  remark: 'Tag_SNS_IM_Remark',
  addSource: 'Tag_SNS_IM_AddSource',
  addWording: 'Tag_SNS_IM_AddWording',
  addTime: 'Tag_SNS_IM_AddTime',
} as const;

/** Prefix of custom friend fields defined in the IM console. */
export const CUSTOM_TAG_PREFIX = 'Tag_SNS_Custom_';
/** Prefix of standard fields; an unknown tag with this prefix belongs to the standard category. */
export const STANDARD_TAG_PREFIX = 'Tag_SNS_IM_';

/**
 * Which sequence covers a tag. Tencent has two categories; a tag we do not know is placed by its
 * prefix, and anything without the standard prefix counts as custom, because custom fields are the
 * ones apps add.
 */
export function tagCategory(tag: string): 'standard' | 'custom' {
  return tag.startsWith(STANDARD_TAG_PREFIX) ? 'standard' : 'custom';
}

function fail(detail: string): never {
  throw new TimDecodeError(detail);
}

/** A well-formed answer with a value the mirror cannot store exactly: asking again will not help. */
function refuse(detail: string): never {
  throw new TimDecodeError(detail, { permanent: true });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function uint(obj: Record<string, unknown>, field: string, optional = false): number | undefined {
  const v = obj[field];
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    fail(`${field} must be a non-negative integer, got ${describe(v)}`);
  }
  return v;
}

/** A short description of a bad value for an error message; never the whole value. */
function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `a string of ${v.length} chars`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v).slice(0, 40)}`;
}

/**
 * Decodes one friend_get response body.
 *
 * @throws TimApiError when the body reports a failure (`ErrorCode` ≠ 0)
 * @throws TimDecodeError when the body is not JSON or not of the documented shape
 */
export function decodeFriendGetResponse(body: string): FriendGetPage {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    fail(`body is not JSON (${body.length} bytes)`);
  }
  if (!isObject(parsed)) fail(`body is ${describe(parsed)}, not an object`);
  // Postgres text and jsonb cannot hold U+0000, and a lone surrogate cannot be written as UTF-8
  // without being replaced: storing either would silently change the data. Both can only arrive as
  // \u escapes, so the cheap scan of the raw text decides whether the full walk is needed.
  if (body.includes('\\u0000') || SURROGATE_ESCAPE.test(body)) checkText(parsed, 'body');

  const errorCode = parsed['ErrorCode'];
  if (typeof errorCode !== 'number' || !Number.isSafeInteger(errorCode)) {
    fail(`ErrorCode must be an integer, got ${describe(errorCode)}`);
  }
  const actionStatus = parsed['ActionStatus'];
  if (errorCode !== 0) {
    const info = parsed['ErrorInfo'];
    throw new TimApiError(errorCode, typeof info === 'string' ? info : '');
  }
  if (actionStatus !== 'OK') fail(`ActionStatus is ${describe(actionStatus)} with ErrorCode 0`);

  const rawItems = parsed['UserDataItem'];
  // Tencent omits empty arrays in some answers; a missing list is an empty page, a mistyped one is not.
  if (rawItems !== undefined && !Array.isArray(rawItems)) fail(`UserDataItem is ${describe(rawItems)}`);
  const count = rawItems === undefined ? 0 : (rawItems as unknown[]).length;
  const items: FriendItem[] = new Array(count);
  for (let i = 0; i < count; i++) items[i] = decodeItem((rawItems as unknown[])[i], i);

  const completeFlag = uint(parsed, 'CompleteFlag')!;
  return {
    items,
    standardSequence: uint(parsed, 'StandardSequence')!,
    customSequence: uint(parsed, 'CustomSequence')!,
    friendNum: uint(parsed, 'FriendNum', true),
    complete: completeFlag !== 0,
    // A complete page may carry NextStartIndex 0 or leave it out; only an incomplete one needs it.
    nextStartIndex:
      completeFlag !== 0 ? (uint(parsed, 'NextStartIndex', true) ?? 0) : uint(parsed, 'NextStartIndex')!,
  };
}

/** 9999-12-31T23:59:59Z. */
const MAX_UNIX_SECONDS = 253_402_300_799;

const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

/** Rejects strings (values and keys, at any depth) that Postgres could not store exactly. */
function checkText(v: unknown, where: string): void {
  if (typeof v === 'string') {
    if (v.includes('\u0000')) {
      refuse(
        `${where} contains a NUL character (U+0000), which Postgres cannot store; nothing from this answer is used`,
      );
    }
    if (LONE_SURROGATE.test(v)) {
      refuse(
        `${where} contains an unpaired UTF-16 surrogate, which has no exact UTF-8 form; nothing from this answer is used`,
      );
    }
  } else if (Array.isArray(v)) {
    for (const [i, x] of v.entries()) checkText(x, `${where}[${i}]`);
  } else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      checkText(k, `${where} key`);
      checkText(x, `${where}.${k.slice(0, 40)}`);
    }
  }
}

/**
 * ValueItem lists at most this long are checked for repeated tags by comparing with the earlier
 * entries; longer ones use a Set. A friend has a handful of tags, and a Set per friend was a large
 * share of decoding (a page of 500 friends made 500 Sets).
 */
const LINEAR_REPEAT_CHECK = 16;

function decodeItem(raw: unknown, i: number): FriendItem {
  if (!isObject(raw)) fail(`UserDataItem[${i}] is ${describe(raw)}`);
  const friendId = raw['To_Account'];
  if (typeof friendId !== 'string' || friendId.length === 0) {
    fail(`UserDataItem[${i}].To_Account must be a non-empty string, got ${describe(friendId)}`);
  }
  const rawValues = raw['ValueItem'];
  if (rawValues === undefined) return { friendId, values: undefined };
  if (!Array.isArray(rawValues)) fail(`UserDataItem[${i}].ValueItem is ${describe(rawValues)}`);
  const n = rawValues.length;
  const values: TagValue[] = new Array(n);
  const seen = n > LINEAR_REPEAT_CHECK ? new Set<string>() : undefined;
  for (let j = 0; j < n; j++) {
    const tv: unknown = rawValues[j];
    if (!isObject(tv)) fail(`UserDataItem[${i}].ValueItem[${j}] is ${describe(tv)}`);
    const tag = tv['Tag'];
    if (typeof tag !== 'string' || tag.length === 0) {
      fail(`UserDataItem[${i}].ValueItem[${j}].Tag must be a non-empty string, got ${describe(tag)}`);
    }
    let repeated = false;
    if (seen) {
      repeated = seen.has(tag);
      seen.add(tag);
    } else {
      for (let k = 0; k < j && !repeated; k++) repeated = values[k]!.tag === tag;
    }
    if (repeated) fail(`UserDataItem[${i}] repeats Tag ${JSON.stringify(tag.slice(0, 64))}`);
    // Tencent leaves Value out of an empty Tag_SNS_IM_Group in its own sample; null keeps that visible.
    const value = tv['Value'] === undefined ? null : (tv['Value'] as JsonValue);
    if (tag.startsWith(STANDARD_TAG_PREFIX)) checkStandardType(tag, value, i);
    values[j] = { tag, value };
  }
  return { friendId, values };
}

/** Standard tags become typed columns, so their JSON types are checked here, not at insert time. */
function checkStandardType(tag: string, value: JsonValue, i: number): void {
  const where = `UserDataItem[${i}] ${tag}`;
  switch (tag) {
    case STANDARD_TAGS.group:
      if (value !== null && !(Array.isArray(value) && value.every((g) => typeof g === 'string'))) {
        fail(`${where} must be an array of strings, got ${describe(value)}`);
      }
      return;
    case STANDARD_TAGS.remark:
    case STANDARD_TAGS.addSource:
    case STANDARD_TAGS.addWording:
      if (value !== null && typeof value !== 'string')
        fail(`${where} must be a string, got ${describe(value)}`);
      return;
    case STANDARD_TAGS.addTime:
      // Beyond year 9999 Postgres timestamptz cannot hold it; refuse here with a reason.
      if (value !== null && (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)) {
        fail(`${where} must be Unix seconds, got ${describe(value)}`);
      }
      if (typeof value === 'number' && value > MAX_UNIX_SECONDS) {
        refuse(`${where} is after the year 9999, which Postgres cannot store, got ${describe(value)}`);
      }
      return;
  }
}
