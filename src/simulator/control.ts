/**
 * The simulator's control API, for users who run it out of process (`friend-mirror simulate`) and
 * want to watch it, change its data, or change its behaviour while a mirror runs against it.
 * Served on the same port under `/__sim/`, to loopback clients only, since it can rewrite the data;
 * other clients (say, a seeding step on a compose network) are let in only when the simulator has a
 * control token (`SIM_CONTROL_TOKEN`) and they send it as `Authorization: Bearer <token>`.
 *
 * | endpoint | does |
 * |---|---|
 * | `GET /__sim/stats` | {@link Simulator.stats} plus `maxCallsInWindow` (busiest 1 s) and `config` |
 * | `GET /__sim/accounts` | `{"accounts": [ids]}` |
 * | `GET /__sim/truth?account=<id>` | {@link FriendStore.truth}, or 404 |
 * | `GET /__sim/calls?limit=<n>` | the last n (default 1000) logged calls, `{"calls": [...]}` |
 * | `POST /__sim/mutate` | `{"random": {"fraction": 0.05, "seed": 2}}` or `{"mutations": [...]}` → `{"changed": [ids]}` |
 * | `POST /__sim/config` | a partial {@link SimulatorConfig} → `{"config": ...}` |
 * | `POST /__sim/faults` | `{"kind": "reset", "count": 3}` → `{"pending": n}` |
 * | `POST /__sim/clear-calls` | empties the call log → `{}` |
 * | `POST /__sim/friends/add` | `{"account", "friendId", "both"?: true, "standard"?, "custom"?}` → `{"changed": [ids]}` |
 * | `POST /__sim/friends/delete` | `{"account", "friendId", "both"?: true}` → `{"changed": [ids]}` |
 * | `GET /__sim/callback` | where webhooks go (never the token) and their counters |
 * | `POST /__sim/callback` | `{"url": "http://…/tim/callback", "token"?: "…"}`, or `{"url": null}` to stop |
 *
 * Adding or deleting friends, through any endpoint (including `mutate`), sends the friend webhook
 * when one is configured. `both` (default true) changes both lists, as Tencent's `Add_Type_Both` and
 * `Delete_Type_Both` do; the other side is skipped when it is not a simulated account.
 *
 * Every answer is JSON; a bad request gets 400 `{"error": "..."}`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { BearerToken } from '../http/bearer-token.js';
import type { JsonValue } from '../tim/friend-get.js';
import type { SimulatorConfig } from './config.js';
import { isFaultKind } from './faults.js';
import { readBody } from './http-body.js';
import type { Simulator } from './server.js';
import type { FriendStore, TagRecord } from './store.js';

/** One explicit change for `POST /__sim/mutate`. A set without `value` clears the tag. */
export type ControlMutation =
  | { op: 'addAccount'; account: string }
  | { op: 'removeAccount'; account: string }
  | { op: 'addFriend'; account: string; friendId: string; standard?: TagRecord; custom?: TagRecord }
  | { op: 'removeFriend'; account: string; friendId: string }
  | { op: 'setStandardTag'; account: string; friendId: string; tag: string; value?: JsonValue }
  | { op: 'setCustomTag'; account: string; friendId: string; tag: string; value?: JsonValue };

const CONTROL_BODY_LIMIT = 1024 * 1024;

class BadRequest extends Error {}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(m: Record<string, unknown>, field: string): string {
  const v = m[field];
  if (typeof v !== 'string') throw new BadRequest(`${field} must be a string`);
  return v;
}

function tags(m: Record<string, unknown>, field: string): TagRecord | undefined {
  const v = m[field];
  if (v === undefined) return undefined;
  if (!isPlainObject(v)) throw new BadRequest(`${field} must be an object of tags`);
  return v as TagRecord;
}

/**
 * Applies one explicit mutation from untrusted JSON.
 *
 * @returns whether the store changed
 * @throws Error with a readable message when the mutation is malformed or refers to missing data
 */
export function applyMutation(store: FriendStore, mutation: unknown): boolean {
  if (!isPlainObject(mutation)) throw new BadRequest('a mutation must be an object');
  const op = mutation['op'];
  switch (op) {
    case 'addAccount':
      return store.addAccount(str(mutation, 'account'));
    case 'removeAccount':
      return store.removeAccount(str(mutation, 'account'));
    case 'addFriend': {
      const t: { standard?: TagRecord; custom?: TagRecord } = {};
      const standard = tags(mutation, 'standard');
      const custom = tags(mutation, 'custom');
      if (standard) t.standard = standard;
      if (custom) t.custom = custom;
      return store.addFriend(str(mutation, 'account'), str(mutation, 'friendId'), t);
    }
    case 'removeFriend':
      return store.removeFriend(str(mutation, 'account'), str(mutation, 'friendId'));
    case 'setStandardTag':
    case 'setCustomTag': {
      const args = [
        str(mutation, 'account'),
        str(mutation, 'friendId'),
        str(mutation, 'tag'),
        mutation['value'] as JsonValue | undefined,
      ] as const;
      return op === 'setStandardTag' ? store.setStandardTag(...args) : store.setCustomTag(...args);
    }
    default:
      throw new BadRequest(`unknown op ${JSON.stringify(op)}`);
  }
}

/**
 * Starts or ends one friendship: `account`'s list, and with `both` (the default) the friend's list
 * too when the friend is a simulated account.
 *
 * @returns the accounts whose lists changed
 */
function changeFriendship(store: FriendStore, op: 'add' | 'delete', m: Record<string, unknown>): string[] {
  const account = str(m, 'account');
  const friendId = str(m, 'friendId');
  const both = m['both'] ?? true;
  if (typeof both !== 'boolean') throw new BadRequest('both must be true or false');
  const changed: string[] = [];
  const change = (from: string, to: string) => {
    const did =
      op === 'add'
        ? store.addFriend(from, to, {
            ...(tags(m, 'standard') ? { standard: tags(m, 'standard') } : {}),
            ...(tags(m, 'custom') ? { custom: tags(m, 'custom') } : {}),
          })
        : store.removeFriend(from, to);
    if (did) changed.push(from);
  };
  change(account, friendId);
  if (both && store.hasAccount(friendId)) change(friendId, account);
  return changed;
}

function isLoopback(address: string | undefined): boolean {
  return address !== undefined && (address === '::1' || /^(::ffff:)?127\./.test(address));
}

/**
 * Who may use the control API: loopback clients always; any other client only when a token is
 * configured and the request carries it as `Authorization: Bearer <token>`.
 *
 * @returns undefined when allowed, else why not (the 403 answer's message)
 */
export function controlRefusal(
  remoteAddress: string | undefined,
  authorization: string | undefined,
  token: BearerToken | undefined,
): string | undefined {
  if (isLoopback(remoteAddress)) return undefined;
  if (!token) {
    return 'the control API answers loopback clients only (set SIM_CONTROL_TOKEN to let others in with it)';
  }
  if (token.matches(authorization)) return undefined;
  return 'the control API answers other than loopback clients only with Authorization: Bearer <SIM_CONTROL_TOKEN>';
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text, 'utf8'),
  });
  res.end(text);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const text = await readBody(req, CONTROL_BODY_LIMIT);
  if (text === undefined) throw new BadRequest('body too large');
  try {
    return JSON.parse(text);
  } catch {
    throw new BadRequest('body is not JSON');
  }
}

/** Serves one `/__sim/*` request. Never throws; errors become 400/403/404/500 answers. */
export function handleControl(
  sim: Simulator,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  query: URLSearchParams,
): void {
  const refusal = controlRefusal(req.socket.remoteAddress, req.headers.authorization, sim.controlToken);
  if (refusal) {
    sendJson(res, 403, { error: refusal });
    return;
  }
  route(sim, req, res, path, query).catch((err: unknown) => {
    if (res.headersSent) return;
    const message = err instanceof Error ? err.message : String(err);
    // Store and config checks throw Error or RangeError on bad input, the caller's fault; a TypeError
    // or a non-Error is a simulator bug.
    const status = err instanceof Error && !(err instanceof TypeError) ? 400 : 500;
    sendJson(res, status, { error: message });
  });
}

async function route(
  sim: Simulator,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  query: URLSearchParams,
): Promise<void> {
  const endpoint = `${req.method} ${path}`;
  switch (endpoint) {
    case 'GET /__sim/stats':
      sendJson(res, 200, {
        ...sim.stats(),
        maxCallsInWindow: sim.maxCallsInWindow(1000),
        config: sim.config,
      });
      return;
    case 'GET /__sim/accounts':
      sendJson(res, 200, { accounts: sim.store.accountIds() });
      return;
    case 'GET /__sim/truth': {
      const account = query.get('account');
      if (account === null || !sim.store.hasAccount(account)) {
        sendJson(res, 404, { error: 'unknown account' });
        return;
      }
      sendJson(res, 200, sim.store.truth(account));
      return;
    }
    case 'GET /__sim/calls': {
      const limit = Number(query.get('limit') ?? 1000);
      if (!Number.isSafeInteger(limit) || limit < 0)
        throw new BadRequest('limit must be a non-negative integer');
      sendJson(res, 200, { calls: sim.lastCalls(limit) });
      return;
    }
    case 'POST /__sim/mutate': {
      const body = await readJson(req);
      if (isPlainObject(body) && isPlainObject(body['random'])) {
        const r = body['random'];
        const fraction = r['fraction'];
        const seed = r['seed'] ?? Date.now();
        if (typeof fraction !== 'number' || typeof seed !== 'number') {
          throw new BadRequest('random needs a numeric fraction (and seed)');
        }
        sendJson(res, 200, { changed: sim.store.mutateRandom({ fraction, seed }) });
        return;
      }
      const list = Array.isArray(body) ? body : isPlainObject(body) ? body['mutations'] : undefined;
      if (!Array.isArray(list)) throw new BadRequest('expected {"random": {...}} or {"mutations": [...]}');
      const changed = new Set<string>();
      for (const [i, m] of list.entries()) {
        try {
          if (applyMutation(sim.store, m)) changed.add((m as { account: string }).account);
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err);
          throw new BadRequest(`mutations[${i}]: ${message} (earlier mutations were applied)`);
        }
      }
      sendJson(res, 200, { changed: [...changed] });
      return;
    }
    case 'POST /__sim/config': {
      const body = await readJson(req);
      if (!isPlainObject(body)) throw new BadRequest('expected an object of options');
      sim.configure(body as Partial<SimulatorConfig>);
      sendJson(res, 200, { config: sim.config });
      return;
    }
    case 'POST /__sim/faults': {
      const body = await readJson(req);
      const kind = isPlainObject(body) ? body['kind'] : undefined;
      const count = isPlainObject(body) ? (body['count'] ?? 1) : 1;
      if (!isFaultKind(kind))
        throw new BadRequest('kind must be a fault kind, e.g. "reset" or "error:30006"');
      if (typeof count !== 'number') throw new BadRequest('count must be a number');
      sim.injectFaults(kind, count);
      sendJson(res, 200, { pending: sim.pendingFaults });
      return;
    }
    case 'POST /__sim/friends/add':
    case 'POST /__sim/friends/delete': {
      const body = await readJson(req);
      if (!isPlainObject(body)) throw new BadRequest('expected {"account": ..., "friendId": ...}');
      sendJson(res, 200, {
        changed: changeFriendship(sim.store, path.endsWith('/add') ? 'add' : 'delete', body),
      });
      return;
    }
    case 'GET /__sim/callback':
      sendJson(res, 200, { target: sim.callbackTarget ?? null, stats: sim.callbackStats() });
      return;
    case 'POST /__sim/callback': {
      const body = await readJson(req);
      if (!isPlainObject(body) || (body['url'] !== null && typeof body['url'] !== 'string')) {
        throw new BadRequest(
          'expected {"url": "http://host:port/tim/callback", "token": "..."} or {"url": null}',
        );
      }
      const token = body['token'];
      if (token !== undefined && typeof token !== 'string') throw new BadRequest('token must be a string');
      sim.setCallback(body['url'] === null ? undefined : { url: body['url'], ...(token ? { token } : {}) });
      sendJson(res, 200, { target: sim.callbackTarget ?? null, stats: sim.callbackStats() });
      return;
    }
    case 'POST /__sim/clear-calls':
      sim.clearCalls();
      sendJson(res, 200, {});
      return;
    default:
      sendJson(res, 404, { error: `no control endpoint ${endpoint}` });
  }
}
