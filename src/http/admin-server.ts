/**
 * The admin HTTP server: liveness, readiness, Prometheus metrics and the resync endpoint, on
 * `node:http`. It knows neither Postgres nor Tencent: everything it reports or changes comes in as
 * a function, so it can be run and tested alone.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { decodeUtf8 } from '../text.js';
import { BearerToken } from './bearer-token.js';
import { sendError, sendJson } from './json-response.js';
import { gracefulCloser, listenHttp } from './listen.js';
import { ClientGoneError, readBody } from './request-body.js';
import { parseResyncRequest, type ResyncRequest } from './resync-request.js';
import { renderStatusPage } from './status-page.js';

/** What `readiness` answers, and what `GET /readyz` returns. */
export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail?: string }>;
}

/** Options of {@link startAdminServer}. */
export interface AdminServerOptions {
  /** `HTTP_HOST`; the caller decides the default (127.0.0.1). */
  host: string;
  /** `HTTP_PORT`; 0 picks any free port. */
  port: number;
  /**
   * `ADMIN_TOKEN`. When unset, mutating endpoints are disabled (403 saying to set it), never open:
   * a forgotten variable must not expose resync to anyone who can reach the port.
   */
  adminToken?: string;
  log: Logger;
  metrics: Metrics;
  /** Whether the process can do its work (database reachable, migrations applied…). */
  readiness: () => Promise<Readiness>;
  /** Makes accounts due now; answers how many were marked and which listed ids are not mirrored. */
  resync: (req: ResyncRequest) => Promise<{ marked: number; unknown: string[] }>;
  /** How long `/readyz` waits for `readiness()` before answering 503. Default 2,000 ms. */
  readinessTimeoutMs?: number;
  /**
   * The status page's data (`GET /status.json`), any JSON-serialisable object. Without it, `/` and
   * `/status.json` are 404.
   */
  status?: () => Promise<object>;
}

/** A running admin server. */
export interface AdminServer {
  /** e.g. `http://127.0.0.1:9464`, with the port actually bound. */
  url: string;
  /** Stops accepting, lets requests in flight finish (at most {@link CLOSE_GRACE_MS}), resolves when done. Safe to call twice. */
  close(): Promise<void>;
}

/** Largest `POST /resync` body: 100,000 ids of a few bytes each fit well within it. */
export const MAX_BODY_BYTES = 1024 * 1024;
/** A body over the limit but under this is read and dropped so the client gets a clean 413. */
const DRAIN_LIMIT_BYTES = 8 * MAX_BODY_BYTES;
/** Whole-request and headers deadline, so slow clients cannot pin sockets. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Node stops enforcing request timeouts once closing; after this, open connections are cut. */
const CLOSE_GRACE_MS = 10_000;
/** Logged paths are client input: keep them short. */
const MAX_LOGGED_PATH = 200;

class ReadinessTimeout extends Error {}

type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;
interface Route {
  methods: readonly string[];
  handle: Handler;
}

/**
 * Starts the admin server and resolves once it listens.
 *
 * Routes: `GET /healthz` (liveness, no I/O), `GET /readyz` (200/503), `GET /metrics` (Prometheus
 * text; runs the readiness check first, so `ready` is fresh), `POST /resync` (bearer token;
 * `{"ids": [...]}` or `{"all": true}`, optional `"full": true`), and, with `status`, the status page
 * `GET /` and its data `GET /status.json` (bearer token when `adminToken` is set: it lists account
 * ids and errors). Everything else is 404. Each request is logged once at debug level with
 * method, path (no query), status and milliseconds; headers, tokens and bodies are never logged.
 *
 * @example
 * const admin = await startAdminServer({ host: '127.0.0.1', port: 9464, adminToken, log, metrics,
 *   readiness: () => checkDb(db), resync: (r) => markDue(db, r) });
 * // curl -X POST -H "Authorization: Bearer $ADMIN_TOKEN" -d '{"ids":["alice"]}' $URL/resync
 * await admin.close();
 */
export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const { log, metrics } = opts;
  const token = opts.adminToken ? new BearerToken(opts.adminToken) : undefined;
  const readinessTimeoutMs = opts.readinessTimeoutMs ?? 2_000;

  const healthz: Handler = async (_req, res) => sendJson(res, 200, { status: 'ok' });

  /** Runs the readiness check (never rejects) and sets the `ready` gauge from its answer. */
  async function checkReadiness(): Promise<Readiness> {
    let answer: Readiness;
    try {
      const r = await withTimeout(opts.readiness(), readinessTimeoutMs);
      answer = { ready: r.ready, checks: r.checks };
    } catch (err) {
      // Readiness is the one place a failure is an answer, not a 500: whatever went wrong, the
      // process is not ready. The detail stays generic because /readyz needs no token.
      const timedOut = err instanceof ReadinessTimeout;
      if (!timedOut) log.error({ err: { message: messageOf(err) } }, 'readiness check failed');
      answer = {
        ready: false,
        checks: {
          readiness: { ok: false, detail: timedOut ? 'readiness check timed out' : 'readiness check failed' },
        },
      };
    }
    metrics.setReady(answer.ready);
    return answer;
  }

  const readyz: Handler = async (_req, res) => {
    const answer = await checkReadiness();
    sendJson(res, answer.ready ? 200 : 503, answer);
  };

  const metricsRoute: Handler = async (_req, res) => {
    // The `ready` gauge must not depend on something else probing /readyz: a daemon without an
    // orchestrator would otherwise report 0 forever, and the "not ready" alert would never clear.
    await checkReadiness();
    const { contentType, body } = await metrics.render();
    res.writeHead(200, {
      'content-type': contentType,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
    });
    res.end(body);
  };

  const resync: Handler = async (req, res) => {
    if (!token) {
      sendError(res, 403, 'mutating admin endpoints are disabled; set ADMIN_TOKEN to enable them');
      return;
    }
    if (!token.matches(req.headers.authorization)) {
      sendError(res, 401, 'missing or wrong bearer token', { 'www-authenticate': 'Bearer' });
      return;
    }
    const body = await readBody(req, MAX_BODY_BYTES, DRAIN_LIMIT_BYTES);
    if (body.kind === 'too-large') {
      sendError(
        res,
        413,
        `body is over ${MAX_BODY_BYTES} bytes`,
        body.drained ? {} : { connection: 'close' },
      );
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(decodeUtf8(body.bytes));
    } catch {
      sendError(res, 400, 'body must be UTF-8 JSON: {"ids": [...]} or {"all": true}');
      return;
    }
    const parsed = parseResyncRequest(json);
    if (!parsed.ok) {
      sendError(res, 400, parsed.error);
      return;
    }
    const result = await opts.resync(parsed.value);
    // A mutating action leaves a trace at info level: counts only, never the ids.
    log.info(
      {
        ids: parsed.value.ids?.length ?? 0,
        all: parsed.value.all === true,
        full: parsed.value.full === true,
        marked: result.marked,
        unknown: result.unknown.length,
      },
      'resync requested via the admin API',
    );
    sendJson(res, 202, { marked: result.marked, unknown: result.unknown });
  };

  // The page itself holds no data, so it needs no token: its script asks for one when
  // status.json answers 401, and sends it as a bearer header like any other admin client.
  const statusPage: Handler = async (_req, res) => {
    const page = renderStatusPage();
    res.writeHead(200, { ...page.headers, 'content-length': Buffer.byteLength(page.html) });
    res.end(page.html);
  };

  const statusJson: Handler = async (req, res) => {
    if (token && !token.matches(req.headers.authorization)) {
      sendError(res, 401, 'missing or wrong bearer token', { 'www-authenticate': 'Bearer' });
      return;
    }
    sendJson(res, 200, await opts.status!());
  };

  const routes = new Map<string, Route>([
    ['/healthz', { methods: ['GET', 'HEAD'], handle: healthz }],
    ['/readyz', { methods: ['GET', 'HEAD'], handle: readyz }],
    ['/metrics', { methods: ['GET', 'HEAD'], handle: metricsRoute }],
    ['/resync', { methods: ['POST'], handle: resync }],
  ]);
  if (opts.status) {
    routes.set('/', { methods: ['GET', 'HEAD'], handle: statusPage });
    routes.set('/status.json', { methods: ['GET', 'HEAD'], handle: statusJson });
  }

  async function dispatch(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const route = routes.get(path);
    if (!route) {
      sendError(res, 404, 'not found');
      return;
    }
    if (!route.methods.includes(req.method ?? '')) {
      sendError(res, 405, 'method not allowed', { allow: route.methods.join(', ') });
      return;
    }
    await route.handle(req, res);
  }

  const server = createServer(
    {
      requestTimeout: REQUEST_TIMEOUT_MS,
      headersTimeout: REQUEST_TIMEOUT_MS,
      // Node checks those deadlines on this interval (30 s by default, which would triple them).
      connectionsCheckingInterval: 1_000,
    },
    (req, res) => {
      const started = performance.now();
      const path = pathOf(req.url);
      const loggedPath = path.length > MAX_LOGGED_PATH ? `${path.slice(0, MAX_LOGGED_PATH)}…` : path;
      closer.track(res);
      res.once('close', () => {
        log.debug(
          {
            method: req.method,
            path: loggedPath,
            status: res.statusCode,
            ms: Math.round((performance.now() - started) * 10) / 10,
            ...(res.writableFinished ? {} : { aborted: true }),
          },
          'admin request',
        );
      });
      dispatch(req, res, path).catch((err: unknown) => {
        if (err instanceof ClientGoneError) {
          res.destroy();
          return;
        }
        log.error(
          { err: { message: messageOf(err) }, method: req.method, path: loggedPath },
          'admin request failed',
        );
        if (res.headersSent) res.destroy();
        else sendError(res, 500, 'internal error');
      });
    },
  );

  const closer = gracefulCloser(server, CLOSE_GRACE_MS);
  const url = await listenHttp(server, opts.host, opts.port);
  log.info({ url, resync: token ? 'enabled' : 'disabled (ADMIN_TOKEN unset)' }, 'admin server listening');

  return { url, close: () => closer.close() };
}

/** The path without the query string: queries may carry signatures (webhooks) and are never routed on. */
function pathOf(url: string | undefined): string {
  const raw = url ?? '/';
  const q = raw.indexOf('?');
  return q === -1 ? raw : raw.slice(0, q);
}

/** Rejects with {@link ReadinessTimeout} when `p` takes longer than `ms`. */
async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new ReadinessTimeout()), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
