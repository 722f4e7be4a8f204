/**
 * Tencent's friend webhooks (tim-api.md, "Friend webhooks"): which commands end or start a
 * friendship, and the checker that turns an untrusted callback body into the account pairs it
 * names. Knows nothing of HTTP servers or Postgres; `src/http/callback-server.ts` serves it and
 * the simulator uses the same names to send it.
 *
 * Only the pairs are used: a callback says "these two accounts' lists changed", and the mirror
 * re-reads both from friend_get. The rest of the body (ClientCmd, ForceFlag…) is not needed.
 */
import { accountIdProblem } from '../account-id.js';

/** The callback commands the mirror acts on. */
export const FRIEND_CALLBACK_COMMANDS = {
  friendAdd: 'Sns.CallbackFriendAdd',
  friendDelete: 'Sns.CallbackFriendDelete',
  /**
   * Tencent's after-blocklist-add callback, assumed to carry the same `PairList`. tim-api.md does
   * not describe it: it says a blocklist add that ends a friendship is reported as
   * `Sns.CallbackFriendDelete`. Accepting it costs at most a pull of accounts that are mirrored
   * anyway, and keeps the mirror fresh if an app enables this callback instead.
   */
  blocklistAdd: 'Sns.CallbackBlackListAdd',
} as const;

/** One of {@link FRIEND_CALLBACK_COMMANDS}. */
export type FriendCallbackCommand = (typeof FRIEND_CALLBACK_COMMANDS)[keyof typeof FRIEND_CALLBACK_COMMANDS];

const KNOWN_COMMANDS: ReadonlySet<string> = new Set(Object.values(FRIEND_CALLBACK_COMMANDS));

/** Whether `command` is one the mirror acts on. */
export function isFriendCallbackCommand(command: string): command is FriendCallbackCommand {
  return KNOWN_COMMANDS.has(command);
}

/** Most pairs one callback may name; Tencent's batch friend calls take at most 100 accounts. */
export const MAX_CALLBACK_PAIRS = 1_000;

/** `From_Account` and `To_Account` of one `PairList` entry. */
export interface FriendPair {
  from: string;
  to: string;
}

/** What {@link parseFriendCallback} found. */
export type ParsedFriendCallback =
  /** A friend callback: these pairs' lists changed. */
  | { kind: 'friends'; command: FriendCallbackCommand; pairs: FriendPair[] }
  /** A well-formed callback of a command the mirror does not act on (answered OK, so it is not retried). */
  | { kind: 'ignored'; command: string }
  /** Not a callback we can read; `error` says what was wrong, in our words. */
  | { kind: 'invalid'; error: string };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Client input in an error message: quoted, and short. */
function shown(value: string): string {
  return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
}

/**
 * Checks one callback body (already JSON-parsed) together with the `CallbackCommand` of its URL.
 *
 * The command comes from the URL, the body, or both; when both carry it they must agree. Every
 * `PairList` entry must be an object whose `From_Account` and `To_Account` are valid account ids;
 * one bad entry refuses the whole callback, so nothing half-read is acted on.
 *
 * @example
 * parseFriendCallback('Sns.CallbackFriendDelete',
 *   { CallbackCommand: 'Sns.CallbackFriendDelete', PairList: [{ From_Account: 'a', To_Account: 'b' }] });
 * // → { kind: 'friends', command: 'Sns.CallbackFriendDelete', pairs: [{ from: 'a', to: 'b' }] }
 */
export function parseFriendCallback(urlCommand: string | null, body: unknown): ParsedFriendCallback {
  const invalid = (error: string) => ({ kind: 'invalid' as const, error });
  if (!isObject(body)) return invalid('body must be a JSON object');
  const bodyCommand = body['CallbackCommand'];
  if (bodyCommand !== undefined && typeof bodyCommand !== 'string') {
    return invalid('CallbackCommand in the body must be a string');
  }
  if (urlCommand !== null && bodyCommand !== undefined && urlCommand !== bodyCommand) {
    return invalid(
      `CallbackCommand differs between URL (${shown(urlCommand)}) and body (${shown(bodyCommand)})`,
    );
  }
  const command = urlCommand ?? bodyCommand;
  if (command === undefined || command === '') return invalid('CallbackCommand is missing');
  if (!isFriendCallbackCommand(command)) return { kind: 'ignored', command };

  const list = body['PairList'];
  if (!Array.isArray(list)) return invalid('PairList must be an array');
  if (list.length > MAX_CALLBACK_PAIRS) {
    return invalid(`PairList holds ${list.length} pairs; at most ${MAX_CALLBACK_PAIRS}`);
  }
  const pairs: FriendPair[] = [];
  for (const [i, item] of list.entries()) {
    if (!isObject(item)) return invalid(`PairList[${i}] must be an object`);
    const from = item['From_Account'];
    const to = item['To_Account'];
    for (const [field, id] of [
      ['From_Account', from],
      ['To_Account', to],
    ] as const) {
      if (typeof id !== 'string') return invalid(`PairList[${i}].${field} must be a string`);
      const problem = accountIdProblem(id);
      if (problem !== undefined) {
        return invalid(`PairList[${i}].${field} ${problem === 'empty' ? 'is empty' : problem}`);
      }
    }
    pairs.push({ from: from as string, to: to as string });
  }
  return { kind: 'friends', command, pairs };
}

/** The accounts a list of pairs touches, each once: both sides of every pair. */
export function accountsOfPairs(pairs: readonly FriendPair[]): string[] {
  const ids = new Set<string>();
  for (const p of pairs) {
    ids.add(p.from);
    ids.add(p.to);
  }
  return [...ids];
}
