/**
 * The simulator's HTTP server: a faithful fake of `POST /v4/sns/friend_get` with Tencent's request
 * checks and error codes, its rate limit, opaque paging cursors, latency, injected faults, a call log,
 * and a small control API under `/__sim/` (see ./control.ts).
 */
import { randomInt } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer, STATUS_CODES } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import { BearerToken } from '../http/bearer-token.js';
import { verifyUserSig } from '../tim/usersig.js';
import type { CallRecord } from './call-log.js';
import { CallLog, maxInWindow } from './call-log.js';
import {
  type CallbackDelivery,
  CallbackSender,
  type CallbackStats,
  type CallbackTarget,
} from './callbacks.js';
import type { ResolvedConfig, SimulatorConfig } from './config.js';
import { DEFAULT_CONFIG, resolveConfig } from './config.js';
import { handleControl } from './control.js';
import { CursorTable } from './cursors.js';
import type { FaultKind } from './faults.js';
import { faultErrorCode, faultHttpStatus, isFaultKind, pickFault } from './faults.js';
import type { GenerateOptions } from './generate.js';
import { generateApp } from './generate.js';
import { readBody } from './http-body.js';
import { buildPageJson } from './page.js';
import { SeededRandom } from './prng.js';
import { SlidingWindowCounter } from './rate-window.js';
import { RecentValues } from './recent-values.js';
import { FriendStore } from './store.js';

/** The one API path the simulator serves. */
export const FRIEND_GET_PATH = '/v4/sns/friend_get';

/** Options of {@link Simulator}. All are optional. */
export interface SimulatorOptions extends Partial<SimulatorConfig> {
  /** The app's SDKAppID. Default 1400000000. */
  sdkAppId?: number;
  /** The key UserSigs must be signed with. Default 'sim-secret-key'. */
  secretKey?: string;
  /** Identifiers allowed to call (app administrators). Default ['administrator']. */
  admins?: readonly string[];
  /** Seed for cursors, latency and fault draws (and `generate` when it has none). Default: random. */
  seed?: number;
  /** The data to serve. Default: generated from `generate` when given, else an empty store. */
  store?: FriendStore;
  /** Generate the data (ignored when `store` is given). */
  generate?: GenerateOptions;
  /** Keep a call log for {@link Simulator.calls}. Default true. */
  callLog?: boolean;
  /** Most calls the log keeps; the oldest are dropped first. Default 1,000,000. */
  callLogLimit?: number;
  /** Serve the `/__sim/` control API (to loopback clients, and to others with `controlToken`). Default true. */
  controlApi?: boolean;
  /**
   * Lets clients that are not on loopback use the control API, with `Authorization: Bearer <token>`.
   * Default: none, loopback clients only (the API can rewrite the data).
   */
  controlToken?: string;
  /** Send friend webhooks here when friendships start or end (see ./callbacks.ts). Default: none. */
  callback?: CallbackTarget;
}

/** What {@link Simulator.onCall} is told about a call that passed every request check. */
export interface SimCall {
  /** `Date.now()` at arrival, ms. */
  at: number;
  account: string;
  /** `StartIndex` as sent (0 or a cursor). */
  startIndex: number;
  /** The position in the friend list that `startIndex` stands for; 0 on a first page. */
  offset: number;
  standardSequence?: number;
  customSequence?: number;
  random: string;
  /** The fault about to be applied to this call, if any. */
  fault?: FaultKind;
}

/** Counters since start (or {@link Simulator.resetStats}). */
export interface SimulatorStats {
  /** Requests to the API path, whatever their outcome (control API requests are not counted). */
  calls: number;
  /** Answers with ErrorCode 0. */
  ok: number;
  /** TIM JSON answers by ErrorCode, including injected `error:<code>` faults, e.g. `{"0": 10, "60007": 2}`. */
  byErrorCode: Record<string, number>;
  /** Answers by HTTP status; calls that got none (reset, timeout) are not counted here. */
  byHttpStatus: Record<string, number>;
  /** Injected faults by kind. */
  byFault: Record<string, number>;
  /** Calls refused with 60007. */
  rateLimited: number;
  /** Calls whose `random` was also used by one of the 10,000 calls before. */
  reusedRandoms: number;
  /** `UserDataItem` entries answered. */
  items: number;
  /** OK answers with CompleteFlag 1 (roughly: finished pulls). */
  completePages: number;
  /** Requests not yet answered or abandoned. */
  inFlight: number;
  /** Records in the call log, and records dropped from it because it was full. */
  loggedCalls: number;
  droppedCalls: number;
  /** `Date.now()` when counting started. */
  since: number;
  /**
   * This process's event-loop delay since the call log was last cleared (or counters reset), ms.
   * Arrivals are stamped when the loop gets to them, so a stamp is late by up to `maxMs`: calls
   * that arrived apart can be logged closer together, and a one-second window can count more.
   */
  loopDelay: { p99Ms: number; maxMs: number };
}

/** Largest request body read; friend_get bodies are tiny, so anything near this is a client bug. */
const MAX_BODY_BYTES = 64 * 1024;
/** How many recent `random` values are compared against. */
const RANDOM_MEMORY = 10_000;
const JSON_TYPE = 'application/json; charset=utf-8';
const HTML_TYPE = 'text/html; charset=utf-8';
const GATEWAY_502 =
  '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n' +
  '<hr><center>stgw</center>\r\n</body>\r\n</html>\r\n';
/** What a proxy or gateway in between answers with a non-200 status, e.g. a 403 from an egress proxy. */
function proxyErrorPage(status: number): string {
  const title = `${status} ${STATUS_CODES[status] ?? 'Error'}`;
  return `<html>\r\n<head><title>${title}</title></head>\r\n<body>\r\n<center><h1>${title}</h1></center>\r\n</body>\r\n</html>\r\n`;
}
const GARBAGE_PAGE =
  '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Service Unavailable</title></head>' +
  '<body><h1>Service temporarily unavailable</h1><p>Please try again later.</p></body></html>\n';

type Checked =
  | { ok: false; errorCode: number; info: string }
  | {
      ok: true;
      account: string;
      startIndex: number;
      offset: number;
      standardSequence?: number;
      customSequence?: number;
    };

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function failBody(errorCode: number, errorInfo: string): string {
  return JSON.stringify({
    ActionStatus: 'FAIL',
    ErrorCode: errorCode,
    ErrorInfo: errorInfo,
    ErrorDisplay: '',
  });
}

function bump(counts: Record<string, number>, key: string | number): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

function freshStats(): Omit<SimulatorStats, 'inFlight' | 'loggedCalls' | 'droppedCalls' | 'loopDelay'> {
  return {
    calls: 0,
    ok: 0,
    byErrorCode: {},
    byHttpStatus: {},
    byFault: {},
    rateLimited: 0,
    reusedRandoms: 0,
    items: 0,
    completePages: 0,
    since: Date.now(),
  };
}

/**
 * An in-process fake of Tencent IM's `friend_get`.
 *
 * Request checks, in order, each answered HTTP 200 with `ActionStatus: FAIL`: `contenttype` (60002),
 * `random` (60002), `sdkappid` numeric (60006) and known (70020), the UserSig (70001/70003/70013/70014),
 * an admin `identifier` (30004), a JSON body (60003), the body fields (30001), a known account (30003),
 * a cursor issued for that account (30001), and the rate limit (60007). Wrong paths get 404 and other
 * methods 405, in plain text, as Tencent's gateway does.
 *
 * @example
 * const sim = new Simulator({ generate: { accounts: 100, meanFriends: 40 }, seed: 1 });
 * const baseUrl = await sim.listen();
 * // ... point the client at baseUrl ...
 * await sim.close();
 */
export class Simulator {
  /** The served data; mutate it freely between and during pulls. */
  readonly store: FriendStore;
  /** The seed in use (the given one, or the random default). */
  readonly seed: number;
  /**
   * Runs after a call passed every check and before its page is built, so a test can change data
   * between the pages of one pull. A hook that throws makes the call answer 30006.
   */
  onCall: ((call: SimCall) => void | Promise<void>) | undefined;

  readonly #sdkAppId: number;
  readonly #secretKey: string;
  readonly #admins: ReadonlySet<string>;
  readonly #controlApi: boolean;
  /** See {@link SimulatorOptions.controlToken}; undefined: loopback clients only. */
  readonly controlToken: BearerToken | undefined;
  readonly #rng: SeededRandom;
  readonly #cursors: CursorTable;
  readonly #window = new SlidingWindowCounter(1000);
  readonly #randoms = new RecentValues(RANDOM_MEMORY);
  readonly #log: CallLog | undefined;
  readonly #faultQueue: FaultKind[] = [];
  readonly #sleeps = new Set<{ timer: NodeJS.Timeout; resolve: () => void }>();
  readonly #callbacks: CallbackSender;
  #config: ResolvedConfig;
  #stats = freshStats();
  #inFlight = 0;
  /** Sampled every 5 ms while listening: how late the loop (and so each arrival stamp) ran. */
  readonly #loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 5 });
  #server: Server | undefined;
  #url: string | undefined;
  #closed = false;

  constructor(options: SimulatorOptions = {}) {
    this.#sdkAppId = options.sdkAppId ?? 1_400_000_000;
    if (!Number.isSafeInteger(this.#sdkAppId) || this.#sdkAppId <= 0) {
      throw new RangeError('sdkAppId must be a positive integer');
    }
    this.#secretKey = options.secretKey ?? 'sim-secret-key';
    if (typeof this.#secretKey !== 'string' || this.#secretKey.length === 0) {
      throw new RangeError('secretKey must be a non-empty string');
    }
    this.#admins = new Set(options.admins ?? ['administrator']);
    this.#controlApi = options.controlApi ?? true;
    this.controlToken = options.controlToken ? new BearerToken(options.controlToken) : undefined;
    this.seed = options.seed ?? randomInt(2 ** 32 - 1);
    this.#rng = new SeededRandom(this.seed);
    this.#cursors = new CursorTable(this.#rng);
    this.#log = (options.callLog ?? true) ? new CallLog(options.callLogLimit ?? 1_000_000) : undefined;
    this.#config = resolveConfig(DEFAULT_CONFIG, {
      pageSize: options.pageSize,
      sequenceReading: options.sequenceReading,
      rateLimit: options.rateLimit,
      latencyMs: options.latencyMs,
      faults: options.faults,
    });
    this.store =
      options.store ??
      (options.generate ? generateApp({ seed: this.seed, ...options.generate }) : new FriendStore());
    this.#callbacks = new CallbackSender(this.#sdkAppId, options.callback);
    this.store.onFriendship = (change) => this.#callbacks.friendship(change);
  }

  /**
   * Sets (or, with undefined, stops) the friend webhooks: every friend added or removed from now on
   * is POSTed, signed when `token` is given, like Tencent's callbacks.
   *
   * @throws RangeError for a URL that is not http(s) or an empty token
   */
  setCallback(target: CallbackTarget | undefined): void {
    this.#callbacks.setTarget(target);
  }

  /** Where webhooks go (never the token), or undefined when off. */
  get callbackTarget(): { url: string; signed: boolean } | undefined {
    return this.#callbacks.target;
  }

  /** Webhook counters since start. */
  callbackStats(): CallbackStats {
    return this.#callbacks.stats();
  }

  /** The last `n` webhooks sent, oldest first. */
  callbackDeliveries(n?: number): CallbackDelivery[] {
    return this.#callbacks.deliveries(n);
  }

  /** Resolves when every webhook sent so far has been answered or has failed. */
  callbacksIdle(): Promise<void> {
    return this.#callbacks.idle();
  }

  /** The SDKAppID calls must carry. */
  get sdkAppId(): number {
    return this.#sdkAppId;
  }

  /** The base URL once listening, e.g. `http://127.0.0.1:39211`. */
  get url(): string | undefined {
    return this.#url;
  }

  /**
   * Starts serving and returns the base URL. Port 0 (the default) picks a free port.
   *
   * @throws when already listening, closed, or the port cannot be bound
   */
  async listen(options: { port?: number; host?: string } = {}): Promise<string> {
    if (this.#server || this.#closed) throw new Error('the simulator is already listening or closed');
    const server = createServer({ noDelay: true }, (req, res) => this.#onRequest(req, res));
    // Clients are told to pool keep-alive connections; a short server timeout would defeat the pool.
    server.keepAliveTimeout = 60_000;
    server.headersTimeout = 65_000;
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#loopDelay.enable();
    const address = server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    this.#url = `http://${host}:${address.port}`;
    return this.#url;
  }

  /**
   * Stops serving: closes every connection (keep-alive ones and calls held by a `timeout` fault) and
   * cancels pending latency delays. Safe to call twice.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#loopDelay.disable();
    this.#callbacks.close();
    for (const sleep of this.#sleeps) {
      clearTimeout(sleep.timer);
      sleep.resolve();
    }
    this.#sleeps.clear();
    const server = this.#server;
    if (!server?.listening) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  /** Changes runtime options; unspecified ones keep their value. @throws RangeError for a bad value */
  configure(patch: Partial<SimulatorConfig>): void {
    this.#config = resolveConfig(this.#config, patch);
  }

  /** The current runtime options. */
  get config(): SimulatorConfig {
    const { pageSize, sequenceReading, rateLimit, latencyMs, faults } = this.#config;
    return {
      pageSize,
      sequenceReading,
      rateLimit,
      latencyMs: [latencyMs[0], latencyMs[1]],
      faults: { ...faults, ...(faults.kinds ? { kinds: { ...faults.kinds } } : {}) },
    };
  }

  /**
   * Makes the next `count` calls that pass the request checks fail with `kind`, before any random fault.
   *
   * @throws RangeError for an unknown kind or a bad count
   */
  injectFaults(kind: FaultKind, count = 1): void {
    if (!isFaultKind(kind)) throw new RangeError(`unknown fault kind ${JSON.stringify(kind)}`);
    if (!Number.isSafeInteger(count) || count < 0)
      throw new RangeError('count must be a non-negative integer');
    for (let i = 0; i < count; i++) this.#faultQueue.push(kind);
  }

  /** Number of queued faults not yet applied. */
  get pendingFaults(): number {
    return this.#faultQueue.length;
  }

  /** Copies of the logged calls, in arrival order (empty when the log is off). */
  calls(): CallRecord[] {
    return this.#log?.all() ?? [];
  }

  /** Copies of the last `n` logged calls. */
  lastCalls(n: number): CallRecord[] {
    return this.#log?.last(n) ?? [];
  }

  /** Empties the call log (counters in {@link stats} are kept). */
  clearCalls(): void {
    this.#log?.clear();
    this.#loopDelay.reset();
  }

  /** The most logged calls whose arrival falls in any window `[t, t + windowMs)`. */
  maxCallsInWindow(windowMs = 1000): number {
    return this.#log ? maxInWindow(this.#log.times(), windowMs) : 0;
  }

  /** Counters since start or the last {@link resetStats}. */
  stats(): SimulatorStats {
    const s = this.#stats;
    return {
      ...s,
      byErrorCode: { ...s.byErrorCode },
      byHttpStatus: { ...s.byHttpStatus },
      byFault: { ...s.byFault },
      inFlight: this.#inFlight,
      loggedCalls: this.#log?.length ?? 0,
      droppedCalls: this.#log?.dropped ?? 0,
      loopDelay: {
        // The histogram reads NaN/huge values before its first sample.
        p99Ms: this.#loopDelay.count > 0 ? this.#loopDelay.percentile(99) / 1e6 : 0,
        maxMs: this.#loopDelay.count > 0 ? this.#loopDelay.max / 1e6 : 0,
      },
    };
  }

  /** Zeroes the counters of {@link stats}. */
  resetStats(): void {
    this.#stats = freshStats();
    this.#loopDelay.reset();
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
    if (this.#controlApi && path.startsWith('/__sim/')) {
      handleControl(this, req, res, path, query);
      return;
    }
    const record: CallRecord = { at: Date.now(), errorCode: -1, httpStatus: 0, items: 0 };
    this.#log?.push(record);
    this.#stats.calls += 1;
    if (path !== FRIEND_GET_PATH) {
      this.#send(res, record, 404, 'text/plain; charset=utf-8', 'Not Found\n');
      return;
    }
    if (req.method !== 'POST') {
      res.setHeader('Allow', 'POST');
      this.#send(res, record, 405, 'text/plain; charset=utf-8', 'Method Not Allowed\n');
      return;
    }
    this.#inFlight += 1;
    res.once('close', () => {
      this.#inFlight -= 1;
    });
    this.#handleFriendGet(req, res, query, record).catch((err: unknown) => {
      // A client that went away mid-body has no one left to answer; anything else is a simulator bug,
      // answered 500 so that it shows instead of passing for a Tencent error.
      if (res.headersSent || res.destroyed) return;
      this.#send(res, record, 500, 'text/plain; charset=utf-8', `simulator error: ${String(err)}\n`);
    });
  }

  async #handleFriendGet(
    req: IncomingMessage,
    res: ServerResponse,
    query: URLSearchParams,
    record: CallRecord,
  ): Promise<void> {
    const random = query.get('random');
    if (random !== null) {
      record.random = random;
      if (this.#randoms.record(random)) this.#stats.reusedRandoms += 1;
    }
    const body = await readBody(req, MAX_BODY_BYTES);
    const checked = this.#check(query, body, record);
    const [minMs, maxMs] = this.#config.latencyMs;
    if (maxMs > 0) await this.#sleep(minMs + this.#rng.next() * (maxMs - minMs));
    if (this.#closed || res.destroyed) return;
    if (!checked.ok) {
      this.#sendTim(res, record, checked.errorCode, failBody(checked.errorCode, checked.info));
      return;
    }

    const fault = this.#faultQueue.shift() ?? pickFault(this.#rng, this.#config.faultPlan);
    if (fault) {
      record.fault = fault;
      bump(this.#stats.byFault, fault);
    }
    if (this.onCall) {
      const call: SimCall = {
        at: record.at,
        account: checked.account,
        startIndex: checked.startIndex,
        offset: checked.offset,
        random: random ?? '',
      };
      if (checked.standardSequence !== undefined) call.standardSequence = checked.standardSequence;
      if (checked.customSequence !== undefined) call.customSequence = checked.customSequence;
      if (fault) call.fault = fault;
      try {
        await this.onCall(call);
      } catch {
        this.#sendTim(res, record, 30006, failBody(30006, 'internal server error (onCall hook threw)'));
        return;
      }
      if (this.#closed || res.destroyed) return;
    }

    if (fault && fault !== 'truncate') {
      this.#sendFault(req, res, record, fault);
      return;
    }
    const config = this.#config;
    const page = buildPageJson(
      this.store,
      {
        accountId: checked.account,
        offset: checked.offset,
        standardSequence: checked.standardSequence,
        customSequence: checked.customSequence,
      },
      { pageSize: config.pageSize, reading: config.sequenceReading },
    );
    if (!page) {
      // The account was removed by a hook or a concurrent mutation after the check.
      this.#sendTim(res, record, 30003, failBody(30003, 'the requested account does not exist'));
      return;
    }
    const complete = page.nextOffset === undefined;
    const next = complete ? 0 : this.#cursors.issue(checked.account, page.nextOffset!, Date.now());
    // The items go in as JSON already; the rest is serialized here, in Tencent's key order.
    const rest = JSON.stringify({
      StandardSequence: page.standardSequence,
      CustomSequence: page.customSequence,
      FriendNum: page.friendNum,
      CompleteFlag: complete ? 1 : 0,
      NextStartIndex: next,
      ActionStatus: 'OK',
      ErrorCode: 0,
      ErrorInfo: '',
      ErrorDisplay: '',
    });
    const text = `{"UserDataItem":[${page.itemsJson}],${rest.slice(1)}`;
    if (fault === 'truncate') {
      this.#sendTruncated(res, record, text);
      return;
    }
    record.items = page.count;
    this.#stats.items += page.count;
    if (complete) this.#stats.completePages += 1;
    this.#sendTim(res, record, 0, text);
  }

  /** The request checks, in Tencent's order; fills the record with what the request carried. */
  #check(query: URLSearchParams, body: string | undefined, record: CallRecord): Checked {
    const fail = (errorCode: number, info: string): Checked => ({ ok: false, errorCode, info });
    if (query.get('contenttype') !== 'json') return fail(60002, 'HTTP parse error: contenttype must be json');
    const random = query.get('random') ?? '';
    if (!/^\d{1,10}$/.test(random) || Number(random) > 4_294_967_295) {
      return fail(60002, 'HTTP parse error: random must be an unsigned 32-bit integer');
    }
    const sdkAppIdText = query.get('sdkappid') ?? '';
    if (!/^\d{1,15}$/.test(sdkAppIdText)) return fail(60006, 'SDKAppID is invalid');
    const sdkAppId = Number(sdkAppIdText);
    if (sdkAppId !== this.#sdkAppId) return fail(70020, 'SDKAppID not found');
    const identifier = query.get('identifier') ?? '';
    const verdict = verifyUserSig(query.get('usersig') ?? '', {
      secretKey: this.#secretKey,
      sdkAppId,
      identifier,
    });
    if (!verdict.ok) return fail(verdict.errorCode, verdict.reason);
    if (!this.#admins.has(identifier))
      return fail(30004, 'the request requires app administrator permissions');

    if (body === undefined) return fail(60003, 'JSON parse error: body too large');
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return fail(60003, 'JSON parse error');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      return fail(30001, 'request body must be a JSON object');
    }
    const fields = parsed as Record<string, unknown>;
    const account = fields['From_Account'];
    const startIndex = fields['StartIndex'];
    const standardSequence = fields['StandardSequence'];
    const customSequence = fields['CustomSequence'];
    if (typeof account === 'string') record.account = account;
    if (isUint(startIndex)) record.startIndex = startIndex;
    if (isUint(standardSequence)) record.standardSequence = standardSequence;
    if (isUint(customSequence)) record.customSequence = customSequence;
    if (typeof account !== 'string' || account.length === 0) {
      return fail(30001, 'From_Account must be a non-empty string');
    }
    if (!isUint(startIndex)) return fail(30001, 'StartIndex must be a non-negative integer');
    if (standardSequence !== undefined && !isUint(standardSequence)) {
      return fail(30001, 'StandardSequence must be a non-negative integer');
    }
    if (customSequence !== undefined && !isUint(customSequence)) {
      return fail(30001, 'CustomSequence must be a non-negative integer');
    }
    if (!this.store.hasAccount(account)) return fail(30003, 'the requested account does not exist');
    let offset = 0;
    if (startIndex !== 0) {
      const resolved = this.#cursors.resolve(account, startIndex, Date.now());
      if (resolved === undefined)
        return fail(30001, 'StartIndex is not a NextStartIndex issued for this account');
      offset = resolved;
    }
    const { rateLimit } = this.#config;
    if (rateLimit > 0 && this.#window.hit(record.at) > rateLimit) {
      this.#stats.rateLimited += 1;
      return fail(60007, 'REST API call rate exceeded');
    }
    const ok: Checked = { ok: true, account, startIndex, offset };
    if (standardSequence !== undefined) ok.standardSequence = standardSequence;
    if (customSequence !== undefined) ok.customSequence = customSequence;
    return ok;
  }

  #sendFault(req: IncomingMessage, res: ServerResponse, record: CallRecord, fault: FaultKind): void {
    const code = faultErrorCode(fault);
    if (code !== undefined) {
      this.#sendTim(res, record, code, failBody(code, `simulated fault ${fault}`));
      return;
    }
    const status = faultHttpStatus(fault);
    if (status !== undefined) {
      const page = status === 502 ? GATEWAY_502 : proxyErrorPage(status);
      this.#send(res, record, status, HTML_TYPE, page);
      return;
    }
    switch (fault) {
      case 'garbage':
        this.#send(res, record, 200, HTML_TYPE, GARBAGE_PAGE);
        return;
      case 'reset':
        req.socket.destroy();
        return;
      case 'timeout':
        // Hold the call open without a timer; the client's timeout or close() ends it.
        return;
    }
  }

  #sendTruncated(res: ServerResponse, record: CallRecord, text: string): void {
    const bytes = Buffer.from(text, 'utf8');
    record.httpStatus = 200;
    bump(this.#stats.byHttpStatus, 200);
    res.writeHead(200, { 'Content-Type': JSON_TYPE, 'Content-Length': bytes.length });
    // Ending the socket rather than the response: the declared length is never met, as when a proxy dies.
    res.write(bytes.subarray(0, bytes.length >> 1), () => res.socket?.end());
  }

  #sendTim(res: ServerResponse, record: CallRecord, errorCode: number, text: string): void {
    record.errorCode = errorCode;
    bump(this.#stats.byErrorCode, errorCode);
    if (errorCode === 0) this.#stats.ok += 1;
    this.#send(res, record, 200, JSON_TYPE, text);
  }

  #send(res: ServerResponse, record: CallRecord, status: number, contentType: string, text: string): void {
    record.httpStatus = status;
    bump(this.#stats.byHttpStatus, status);
    res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text, 'utf8') });
    res.end(text);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const entry = {
        timer: setTimeout(() => {
          this.#sleeps.delete(entry);
          resolve();
        }, ms),
        resolve,
      };
      this.#sleeps.add(entry);
    });
  }
}
