/**
 * Realistic tag values for generated and randomly mutated friends: remarks and notes that mix ASCII,
 * CJK and emoji (so byte and character lengths differ), a small set of groups, and an unknown tag
 * whose value is an object, which a mirror must keep without understanding it.
 */
import type { JsonValue } from '../tim/friend-get.js';
import { STANDARD_TAGS } from '../tim/friend-get.js';
import { SeededRandom } from './prng.js';
import type { TagRecord } from './store.js';

/** Custom tag names the generator uses. */
export const CUSTOM_TAGS = {
  level: 'Tag_SNS_Custom_Level',
  note: 'Tag_SNS_Custom_Note',
} as const;

/** A tag no client knows about; the simulator covers it with the custom sequence. */
export const UNKNOWN_TAG = 'Tag_SNS_Beta_Flag';

/** Mobile sources first and repeated, since most friends are added from phones. */
const ADD_SOURCES = [
  'AddSource_Type_Android',
  'AddSource_Type_Android',
  'AddSource_Type_Android',
  'AddSource_Type_IOS',
  'AddSource_Type_IOS',
  'AddSource_Type_IOS',
  'AddSource_Type_Web',
  'AddSource_Type_Windows',
  'AddSource_Type_Mac',
  'AddSource_Type_Search',
  'AddSource_Type_QRCode',
] as const;

/** Group names are at most 30 bytes each. */
const GROUPS = [
  'Family',
  'Friends',
  'Work',
  'School',
  'Close friends',
  'Gaming',
  '家人',
  '同事',
  'VIP',
] as const;

const NAMES = [
  'Alex',
  'Sam',
  'Wei',
  'Li Na',
  'Mina',
  'Jun',
  'Priya',
  'Omar',
  'Lena',
  'Kai',
  'Yuki',
  'Carlos',
  'Zoë',
  "D'Arcy",
  '老王',
  '小李',
  '张伟',
  '王芳',
  '阿杰',
] as const;

const CONTEXTS = [
  'work',
  'gym',
  'college',
  'neighbour',
  'cousin',
  'dentist',
  '📚 book club',
  '🎮 team',
  '⚽ Sunday league',
  '同事',
  '同学',
  '邻居',
] as const;

const LEVELS = ['1', '2', '3', '4', '5', '7', '10', 'bronze', 'silver', 'gold', 'platinum'] as const;

const NOTE_WORDS = [
  'owes',
  'me',
  'lunch',
  'call',
  'back',
  'after',
  'the',
  'meeting',
  'birthday',
  'in',
  'May',
  'allergic',
  'to',
  'peanuts',
  'prefers',
  'email',
  '"quoted"',
  "it's",
  'tab\there',
  'back\\slash',
  '下周',
  '见面',
  '生日快乐',
  '🎂',
  '👍',
  'ok',
] as const;
const NOTE_WORD_BYTES = NOTE_WORDS.map((w) => Buffer.byteLength(w, 'utf8'));

/** Custom values are at most 500 bytes. */
const MAX_NOTE_BYTES = 500;

/*
 * Generated values come from precomputed pools and shared frozen objects: a default app has 300,000
 * friends, and allocating a fresh string or array for each made garbage collection the main cost.
 * The store never changes a stored value in place, so sharing is safe.
 */

const REMARKS_WITH_CONTEXT = NAMES.map((name) => CONTEXTS.map((ctx) => `${name} (${ctx})`));
const WORDINGS = [
  ...NAMES.map((name) => `Hi, I'm ${name}`),
  ...CONTEXTS.map((ctx) => `Hi! We met at ${ctx}, add me?`),
];
const NOTE_POOL_SIZE = 1024;
let notePool: readonly string[] | undefined;
/** Group lists by bit mask of GROUPS indices. */
const groupCache: (readonly string[] | undefined)[] = [];
const BETA_FLAGS = [1, 2, 3].flatMap((v) => [false, true].map((on) => Object.freeze({ v, on })));

/** A shared, frozen empty record for friends without custom tags. */
export const EMPTY_TAGS: TagRecord = Object.freeze({}) as TagRecord;

/** Seconds since the epoch somewhere in 2017–2025; fixed range so output does not depend on the clock. */
export function makeAddTime(rng: SeededRandom): number {
  return 1_500_000_000 + rng.int(250_000_000);
}

/** An `AddSource_Type_*` value, mostly mobile. */
export function makeAddSource(rng: SeededRandom): string {
  return rng.pick(ADD_SOURCES);
}

/** A remark (≤ 96 bytes), e.g. `Wei (📚 book club)`. */
export function makeRemark(rng: SeededRandom): string {
  const i = rng.int(NAMES.length);
  return rng.chance(0.6) ? rng.pick(REMARKS_WITH_CONTEXT[i]!) : NAMES[i]!;
}

/** An add wording (≤ 256 bytes). */
export function makeWording(rng: SeededRandom): string {
  return rng.pick(WORDINGS);
}

/** 0–3 distinct groups, mostly few, in table order; equal lists are one shared frozen array. */
export function makeGroups(rng: SeededRandom): readonly string[] {
  const r = rng.next();
  const count = r < 0.4 ? 0 : r < 0.75 ? 1 : r < 0.92 ? 2 : 3;
  let mask = 0;
  for (let have = 0; have < count; ) {
    const bit = 1 << rng.int(GROUPS.length);
    if ((mask & bit) === 0) {
      mask |= bit;
      have++;
    }
  }
  let shared = groupCache[mask];
  if (!shared) {
    shared = Object.freeze(GROUPS.filter((_, i) => mask & (1 << i)));
    groupCache[mask] = shared;
  }
  return shared;
}

/** A `Tag_SNS_Custom_Level` value. */
export function makeLevel(rng: SeededRandom): string {
  return rng.pick(LEVELS);
}

/** Builds one note of 1–500 UTF-8 bytes, sometimes long, with quotes, tabs and emoji. */
function composeNote(rng: SeededRandom): string {
  const target = rng.chance(0.1) ? rng.between(400, MAX_NOTE_BYTES) : rng.between(5, 120);
  const words: string[] = [];
  let bytes = 0;
  for (;;) {
    const i = rng.int(NOTE_WORDS.length);
    const add = NOTE_WORD_BYTES[i]! + (words.length > 0 ? 1 : 0);
    if (bytes + add > target && words.length > 0) break;
    if (bytes + add > MAX_NOTE_BYTES) break;
    words.push(NOTE_WORDS[i]!);
    bytes += add;
  }
  return words.join(' ');
}

/** A `Tag_SNS_Custom_Note` value (≤ 500 bytes), drawn from a fixed pool of 1,024 varied notes. */
export function makeNote(rng: SeededRandom): string {
  if (!notePool) {
    // Its own fixed seed, so the pool is the same whatever was generated first.
    const poolRng = new SeededRandom(0x5eed);
    notePool = Array.from({ length: NOTE_POOL_SIZE }, () => composeNote(poolRng));
  }
  return rng.pick(notePool);
}

/** A `Tag_SNS_Beta_Flag` value: mostly an object, sometimes a bare number or boolean. */
export function makeBetaFlag(rng: SeededRandom): JsonValue {
  const r = rng.next();
  if (r < 0.8) return rng.pick(BETA_FLAGS);
  if (r < 0.9) return rng.between(0, 100);
  return rng.chance(0.5);
}

/**
 * Standard tags of a new friend: AddSource and AddTime always, a remark for ~40%, an add wording for
 * ~30%, 0–3 groups. Source and time are passed in so both sides of a mutual friendship share them.
 */
export function makeStandardTags(rng: SeededRandom, addSource: string, addTime: number): TagRecord {
  const tags: TagRecord = { [STANDARD_TAGS.addSource]: addSource };
  if (rng.chance(0.4)) tags[STANDARD_TAGS.remark] = makeRemark(rng);
  const groups = makeGroups(rng);
  if (groups.length > 0) tags[STANDARD_TAGS.group] = groups as string[];
  tags[STANDARD_TAGS.addTime] = addTime;
  if (rng.chance(0.3)) tags[STANDARD_TAGS.addWording] = makeWording(rng);
  return tags;
}

/**
 * Custom tags of a new friend: Level for ~50%, Note for ~20%, the unknown Beta flag for ~5%.
 * A friend with none gets the shared {@link EMPTY_TAGS}.
 */
export function makeCustomTags(rng: SeededRandom): TagRecord {
  const level = rng.chance(0.5) ? makeLevel(rng) : undefined;
  const note = rng.chance(0.2) ? makeNote(rng) : undefined;
  const flag = rng.chance(0.05) ? makeBetaFlag(rng) : undefined;
  if (level === undefined && note === undefined && flag === undefined) return EMPTY_TAGS;
  const tags: TagRecord = {};
  if (level !== undefined) tags[CUSTOM_TAGS.level] = level;
  if (note !== undefined) tags[CUSTOM_TAGS.note] = note;
  if (flag !== undefined) tags[UNKNOWN_TAG] = flag;
  return tags;
}
