/**
 * The simulator's webhooks: when a friendship starts or ends in the simulated data, POST the
 * signed callback Tencent would send (tim-api.md, "Friend webhooks"), so the mirror's receiver is
 * tested end to end.
 *
 * Like Tencent's after-event callbacks: fire and forget, a 2 s timeout, no retry. Changes made in
 * one synchronous step (one control request, one random mutation round) are sent together, one
 * callback per command with up to 100 pairs, as one batch friend call at Tencent would be.
 */
import { callbackSign } from '../tim/callback-sign.js';
import { FRIEND_CALLBACK_COMMANDS } from '../tim/friend-callback.js';
import type { FriendshipChange } from './store.js';

/** Where callbacks go. Without a token they go unsigned, as from an app whose console has none. */
export interface CallbackTarget {
  url: string;
  token?: string;
}

/** One callback sent (or attempted). */
export interface CallbackDelivery {
  /** `Date.now()` when it was sent. */
  at: number;
  command: string;
  pairs: number;
  /** HTTP status answered; 0 when none came (refused, reset, timed out). */
  status: number;
  /** Milliseconds until the answer (or the failure). */
  ms: number;
}

/** Counters of {@link CallbackSender}. */
export interface CallbackStats {
  /** Callbacks sent. */
  sent: number;
  /** Answered 200 with `ActionStatus: OK`. */
  ok: number;
  /** Anything else: another status, a FAIL body, no answer. */
  failed: number;
  /** Sent and not yet answered. */
  inFlight: number;
}

/** Pairs per callback; Tencent's batch friend calls take at most 100 accounts. */
const PAIRS_PER_CALLBACK = 100;
/** Tencent waits 2 s for an answer. */
const TIMEOUT_MS = 2_000;
/** Deliveries kept for {@link CallbackSender.deliveries}. */
const DELIVERY_LOG = 10_000;

/** Options of {@link friendCallbackUrl}. */
export interface CallbackUrlOptions {
  sdkAppId: number;
  command: string;
  /** When given, `Sign` and `RequestTime` are added. */
  token?: string | undefined;
  /** Unix seconds. Default now. */
  requestTime?: number;
  clientIp?: string;
  optPlatform?: string;
}

/**
 * The URL Tencent POSTs a callback to: the configured URL plus `SdkAppid`, `CallbackCommand`,
 * `contenttype=json`, `ClientIP`, `OptPlatform`, and with a token `Sign` and `RequestTime`.
 */
export function friendCallbackUrl(base: string, opts: CallbackUrlOptions): string {
  const url = new URL(base);
  const q = url.searchParams;
  q.set('SdkAppid', String(opts.sdkAppId));
  q.set('CallbackCommand', opts.command);
  q.set('contenttype', 'json');
  q.set('ClientIP', opts.clientIp ?? '127.0.0.1');
  q.set('OptPlatform', opts.optPlatform ?? 'RESTAPI');
  if (opts.token !== undefined) {
    const time = String(opts.requestTime ?? Math.floor(Date.now() / 1000));
    q.set('RequestTime', time);
    q.set('Sign', callbackSign(opts.token, time));
  }
  return url.toString();
}

/** The body of a friend callback, in Tencent's shape. */
export function friendCallbackBody(op: FriendshipChange['op'], changes: readonly FriendshipChange[]): object {
  if (op === 'delete') {
    return {
      CallbackCommand: FRIEND_CALLBACK_COMMANDS.friendDelete,
      PairList: changes.map((c) => ({ From_Account: c.account, To_Account: c.friendId })),
    };
  }
  return {
    CallbackCommand: FRIEND_CALLBACK_COMMANDS.friendAdd,
    PairList: changes.map((c) => ({
      From_Account: c.account,
      To_Account: c.friendId,
      Initiator_Account: c.account,
    })),
    // What Tencent sends for a friend_add by the admin REST API with forced adding.
    ClientCmd: 'friend_add',
    Admin_Account: 'administrator',
    ForceFlag: 1,
  };
}

/** Collects friendship changes and sends them as callbacks. See the module comment. */
export class CallbackSender {
  readonly #sdkAppId: number;
  #target: CallbackTarget | undefined;
  #batch: FriendshipChange[] = [];
  #scheduled = false;
  readonly #inFlight = new Set<Promise<void>>();
  readonly #deliveries: CallbackDelivery[] = [];
  readonly #abort = new AbortController();
  #stats = { sent: 0, ok: 0, failed: 0 };

  constructor(sdkAppId: number, target?: CallbackTarget) {
    this.#sdkAppId = sdkAppId;
    this.setTarget(target);
  }

  /** Sets or (with undefined) clears where callbacks go. @throws RangeError for a URL that is not http(s) */
  setTarget(target: CallbackTarget | undefined): void {
    if (target) {
      let url: URL;
      try {
        url = new URL(target.url);
      } catch {
        throw new RangeError('callback url must be an absolute http:// or https:// URL');
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new RangeError('callback url must be an absolute http:// or https:// URL');
      }
      if (target.token !== undefined && (typeof target.token !== 'string' || target.token === '')) {
        throw new RangeError('callback token must be a non-empty string');
      }
    }
    this.#target = target ? { ...target } : undefined;
  }

  /** Where callbacks go, without the token. */
  get target(): { url: string; signed: boolean } | undefined {
    return this.#target ? { url: this.#target.url, signed: this.#target.token !== undefined } : undefined;
  }

  /** Counters since start. */
  stats(): CallbackStats {
    return { ...this.#stats, inFlight: this.#inFlight.size };
  }

  /** Copies of the last `n` deliveries, oldest first. */
  deliveries(n = DELIVERY_LOG): CallbackDelivery[] {
    return this.#deliveries.slice(Math.max(0, this.#deliveries.length - n)).map((d) => ({ ...d }));
  }

  /** Takes one change; it is sent with the others of the same synchronous step. */
  friendship(change: FriendshipChange): void {
    if (!this.#target) return;
    this.#batch.push(change);
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      const batch = this.#batch;
      this.#batch = [];
      for (const op of ['add', 'delete'] as const) {
        const changes = batch.filter((c) => c.op === op);
        for (let i = 0; i < changes.length; i += PAIRS_PER_CALLBACK) {
          this.#send(op, changes.slice(i, i + PAIRS_PER_CALLBACK));
        }
      }
    });
  }

  /** Resolves when every callback sent so far has been answered or has failed. */
  async idle(): Promise<void> {
    // A microtask turn first, so changes of the current step have been sent.
    await Promise.resolve();
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
  }

  /** Abandons callbacks in flight; no more are sent. */
  close(): void {
    this.#target = undefined;
    this.#abort.abort();
  }

  #send(op: FriendshipChange['op'], changes: FriendshipChange[]): void {
    const target = this.#target;
    if (!target || changes.length === 0) return;
    const body = friendCallbackBody(op, changes) as { CallbackCommand: string };
    const url = friendCallbackUrl(target.url, {
      sdkAppId: this.#sdkAppId,
      command: body.CallbackCommand,
      token: target.token,
    });
    const delivery: CallbackDelivery = {
      at: Date.now(),
      command: body.CallbackCommand,
      pairs: changes.length,
      status: 0,
      ms: 0,
    };
    if (this.#deliveries.length >= DELIVERY_LOG) this.#deliveries.splice(0, DELIVERY_LOG / 10);
    this.#deliveries.push(delivery);
    this.#stats.sent++;
    const started = performance.now();
    const p = (async () => {
      let ok = false;
      try {
        const res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
          signal: AbortSignal.any([this.#abort.signal, AbortSignal.timeout(TIMEOUT_MS)]),
        });
        delivery.status = res.status;
        const answer = (await res.json().catch(() => undefined)) as { ActionStatus?: unknown } | undefined;
        ok = res.status === 200 && answer?.ActionStatus === 'OK';
      } catch {
        // No retry, as Tencent does for after-event callbacks: the mirror's scheduled pulls cover it.
      }
      delivery.ms = performance.now() - started;
      if (ok) this.#stats.ok++;
      else this.#stats.failed++;
    })();
    this.#inFlight.add(p);
    void p.finally(() => this.#inFlight.delete(p));
  }
}
