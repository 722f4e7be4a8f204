/**
 * The webhook receiver: `POST /tim/callback`, Tencent's friend callbacks, on a listener of its own.
 *
 * Why its own listener: Tencent must reach it from the internet, while `/resync` and `/metrics`
 * on the admin server must not be public. This server answers only the callback path (everything
 * else is 404), so exposing its port exposes nothing else.
 *
 * A callback is checked (SdkAppid, then `Sign`/`RequestTime`, both in the URL, before any of the
 * body is read; then the body), its accounts are
 * handed to `enqueue`, and the answer waits for the database write at most `ackWaitMs`; after that
 * it answers OK anyway and the write goes on in the background. Tencent does not retry after-event
 * callbacks, so an error answer would not bring the callback back: it would only be lost for sure.
 * What is at stake is only freshness: the scheduled pulls find every change regardless.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import type { CallbackCommandLabel, CallbackMetrics, CallbackOutcome } from '../metrics.js';
import { decodeUtf8 } from '../text.js';
import type { CallbackSignProblem, CallbackVerifier } from '../tim/callback-sign.js';
import { accountsOfPairs, isFriendCallbackCommand, parseFriendCallback } from '../tim/friend-callback.js';
import { sendJson } from './json-response.js';
import { gracefulCloser, listenHttp } from './listen.js';
import { ClientGoneError, readBody } from './request-body.js';

/** The one path served. Configure `https://<your host>/tim/callback` in the IM console. */
export const CALLBACK_PATH = '/tim/callback';

/** The answer Tencent documents for success. */
export const CALLBACK_OK = Object.freeze({ ActionStatus: 'OK', ErrorInfo: '', ErrorCode: 0 });

/** Largest body read: 1,000 pairs of 32-byte ids fit well within it. */
export const MAX_CALLBACK_BODY_BYTES = 256 * 1024;
/** Tencent gives up after 2 s; slow or stuck clients lose their socket well before anyone waits long. */
const REQUEST_TIMEOUT_MS = 5_000;
/** After close() starts, connections still open after this are cut. */
const CLOSE_GRACE_MS = 2_000;
/** A misconfiguration (wrong token or app) is logged at warn this often at most; the rest at debug. */
const WARN_EVERY_MS = 60_000;

/** Options of {@link startCallbackServer}. */
export interface CallbackServerOptions {
  /** `CALLBACK_HOST`. */
  host: string;
  /** `CALLBACK_PORT`; 0 picks a free port. */
  port: number;
  /** `TIM_SDKAPPID`: callbacks for another app are refused. */
  sdkAppId: number;
  /** Checks `Sign` and `RequestTime` against `TIM_CALLBACK_TOKEN`. */
  verifier: CallbackVerifier;
  /**
   * Marks accounts for a priority resync. Resolves true once written, false if it never will be
   * (shutting down); `dropped` counts ids refused because too many wait.
   */
  enqueue: (accountIds: string[]) => { dropped: number; written: Promise<boolean> };
  /** Told the accounts of every accepted callback, when it arrived (e.g. for `callback_to_sync_seconds`). */
  onAccepted?: (accountIds: string[]) => void;
  /** Longest wait for `enqueue`'s write before answering OK anyway. Default 1,000 ms (Tencent allows 2 s). */
  ackWaitMs?: number;
  log: Logger;
  metrics?: CallbackMetrics;
}

/** A running receiver. */
export interface CallbackServer {
  /** e.g. `http://127.0.0.1:8081`, with the port actually bound (no path). */
  url: string;
  /** Stops accepting, lets answers in flight finish (at most 2 s). Safe to call twice. */
  close(): Promise<void>;
}

/** Why a request was refused: HTTP status, metric outcome, and the message in the body. */
interface Refusal {
  status: number;
  outcome: CallbackOutcome;
  message: string;
  /** Refused before the body was read. */
  unread?: boolean;
}

const SIGN_REFUSALS: Record<CallbackSignProblem, Refusal> = {
  unsigned: {
    status: 401,
    outcome: 'unauthorized',
    message:
      'Sign and RequestTime are missing: set the callback token in the IM console to TIM_CALLBACK_TOKEN',
  },
  'bad-time': { status: 401, outcome: 'unauthorized', message: 'RequestTime must be Unix seconds' },
  'bad-sign': { status: 401, outcome: 'unauthorized', message: 'Sign does not match TIM_CALLBACK_TOKEN' },
  stale: {
    status: 401,
    outcome: 'stale',
    message: 'RequestTime is too far from the receiver clock (CALLBACK_MAX_SKEW)',
  },
};

/**
 * Starts the receiver and resolves once it listens.
 *
 * Answers: 200 with {@link CALLBACK_OK} for a friend callback (accounts marked or queued) and for
 * a well-signed callback of any other command (ignored, so Tencent does not retry it); 400 for a
 * wrong `SdkAppid` or an unreadable body; 401 for a missing, wrong or stale signature; 413 for a
 * body over {@link MAX_CALLBACK_BODY_BYTES}; 404/405 for anything but `POST /tim/callback`. Errors
 * carry `{"ActionStatus":"FAIL","ErrorCode":<status>,"ErrorInfo":"<what was wrong>"}`. Nothing is
 * changed for a refused callback. The query (which carries `Sign`) and the token are never logged.
 *
 * @example
 * const receiver = await startCallbackServer({ host: '0.0.0.0', port: 8081, sdkAppId,
 *   verifier: new CallbackVerifier({ token, maxSkewSeconds: 300 }), enqueue: (ids) => queue.add(ids), log });
 */
export async function startCallbackServer(opts: CallbackServerOptions): Promise<CallbackServer> {
  const { log, metrics } = opts;
  const ackWaitMs = opts.ackWaitMs ?? 1_000;
  const lastWarn = new Map<CallbackOutcome, number>();

  const refuse = (res: ServerResponse, command: CallbackCommandLabel, r: Refusal) => {
    metrics?.observeCallback(command, r.outcome);
    // The usual cause of a steady stream of these is a wrong token or app id: say so, but not per request.
    const now = performance.now();
    const loud =
      (r.outcome === 'unauthorized' || r.outcome === 'wrong_app' || r.outcome === 'stale') &&
      now - (lastWarn.get(r.outcome) ?? Number.NEGATIVE_INFINITY) >= WARN_EVERY_MS;
    if (loud) lastWarn.set(r.outcome, now);
    log[loud ? 'warn' : 'debug']({ status: r.status, outcome: r.outcome }, `callback refused: ${r.message}`);
    sendJson(
      res,
      r.status,
      { ActionStatus: 'FAIL', ErrorCode: r.status, ErrorInfo: r.message },
      // A body left unread (too large, or refused before reading) would have to be drained
      // before the connection could carry another request: close it instead.
      r.status === 413 || r.unread ? { connection: 'close' } : {},
    );
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const [path, search] = splitUrl(req.url);
    if (path !== CALLBACK_PATH) {
      sendJson(res, 404, {
        ActionStatus: 'FAIL',
        ErrorCode: 404,
        ErrorInfo: `only POST ${CALLBACK_PATH} is served`,
      });
      return;
    }
    if (req.method !== 'POST') {
      sendJson(
        res,
        405,
        { ActionStatus: 'FAIL', ErrorCode: 405, ErrorInfo: 'method not allowed' },
        { allow: 'POST' },
      );
      return;
    }
    const query = new URLSearchParams(search);
    const urlCommand = query.get('CallbackCommand');
    let label = commandLabel(urlCommand);

    // Both checks need only the URL: whoever lacks the token never gets us to buffer a body.
    const app = query.get('SdkAppid');
    if (app === null || app !== String(opts.sdkAppId)) {
      refuse(res, label, {
        unread: true,
        status: 400,
        outcome: 'wrong_app',
        message:
          app === null
            ? 'SdkAppid is missing from the URL'
            : 'SdkAppid is not this mirror’s app (TIM_SDKAPPID)',
      });
      return;
    }
    const problem = opts.verifier.check(query.get('Sign'), query.get('RequestTime'));
    if (problem) {
      refuse(res, label, { ...SIGN_REFUSALS[problem], unread: true });
      return;
    }
    const body = await readBody(req, MAX_CALLBACK_BODY_BYTES, MAX_CALLBACK_BODY_BYTES);
    if (body.kind === 'too-large') {
      refuse(res, label, {
        status: 413,
        outcome: 'too_large',
        message: `body is over ${MAX_CALLBACK_BODY_BYTES} bytes`,
      });
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(decodeUtf8(body.bytes));
    } catch {
      refuse(res, label, { status: 400, outcome: 'bad_request', message: 'body must be UTF-8 JSON' });
      return;
    }
    const parsed = parseFriendCallback(urlCommand, json);
    if (parsed.kind === 'invalid') {
      refuse(res, label, { status: 400, outcome: 'bad_request', message: parsed.error });
      return;
    }
    if (parsed.kind === 'ignored') {
      metrics?.observeCallback('other', 'ignored');
      log.debug(
        { command: parsed.command.slice(0, 60) },
        'callback of a command the mirror does not act on: ignored',
      );
      sendJson(res, 200, CALLBACK_OK);
      return;
    }
    label = parsed.command;
    const ids = accountsOfPairs(parsed.pairs);
    if (ids.length === 0) {
      metrics?.observeCallback(label, 'marked');
      sendJson(res, 200, CALLBACK_OK);
      return;
    }
    opts.onAccepted?.(ids);
    const { dropped, written } = opts.enqueue(ids);
    const inTime = await within(written, ackWaitMs);
    const outcome: CallbackOutcome = dropped > 0 ? 'dropped' : inTime ? 'marked' : 'queued';
    metrics?.observeCallback(label, outcome);
    log.debug(
      { command: label, pairs: parsed.pairs.length, accounts: ids.length, outcome },
      'callback accepted',
    );
    if (dropped > 0)
      log.warn(
        { dropped },
        'resync mark queue is full: some callback accounts wait for their scheduled sync',
      );
    sendJson(res, 200, CALLBACK_OK);
  }

  const server = createServer(
    {
      requestTimeout: REQUEST_TIMEOUT_MS,
      headersTimeout: REQUEST_TIMEOUT_MS,
      connectionsCheckingInterval: 1_000,
    },
    (req, res) => {
      closer.track(res);
      handle(req, res).catch((err: unknown) => {
        if (err instanceof ClientGoneError) {
          res.destroy();
          return;
        }
        log.error(
          { err: { message: err instanceof Error ? err.message : String(err) } },
          'callback handling failed',
        );
        if (res.headersSent) res.destroy();
        else sendJson(res, 500, { ActionStatus: 'FAIL', ErrorCode: 500, ErrorInfo: 'internal error' });
      });
    },
  );
  const closer = gracefulCloser(server, CLOSE_GRACE_MS);
  const url = await listenHttp(server, opts.host, opts.port);
  log.info({ url: `${url}${CALLBACK_PATH}` }, 'webhook receiver listening');

  return { url, close: () => closer.close() };
}

/** The metric label for a URL's command: a fixed string, never the raw input. */
function commandLabel(command: string | null): CallbackCommandLabel {
  if (command === null || command === '') return 'none';
  return isFriendCallbackCommand(command) ? command : 'other';
}

function splitUrl(url: string | undefined): [string, string] {
  const raw = url ?? '/';
  const q = raw.indexOf('?');
  return q === -1 ? [raw, ''] : [raw.slice(0, q), raw.slice(q + 1)];
}

/** `p`'s value, or false when it takes longer than `ms`. */
async function within(p: Promise<boolean>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<false>((resolve) => (timer = setTimeout(resolve, ms, false)))]);
  } finally {
    clearTimeout(timer);
  }
}
