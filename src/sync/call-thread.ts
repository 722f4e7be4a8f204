/**
 * The call thread: friend_get calls paced and sent from a worker thread whose event loop does
 * nothing else (`call-thread-worker.ts`), while this thread decodes pages and writes to Postgres.
 *
 * Why: pacing is timing-critical and the main thread is not. It parses pages of hundreds of KB,
 * builds SQL and collects garbage, blocking its loop for many milliseconds at a time (the bench
 * reports its event-loop delay). A limiter on that loop loses slots when its timers fire late, and a
 * granted call reaches the socket only when the loop gets to it, which can exceed the jitter the
 * rate guarantee allows for. On its own loop the limiter's timers fire on time and a granted call
 * is written at once. The guarantee itself is unchanged: it is the same {@link CallLimiter}, in the
 * thread that sends.
 *
 * A {@link CallThread} is one object with two faces that only work together: {@link CallThread.transport}
 * for the {@link TimClient} (every `post` waits for its turn in the thread's limiter, then is sent),
 * and {@link CallThread.limiter}, the {@link Limiter} that sync code controls. Because pacing happens
 * in the transport, `limiter.schedule(fn)` just runs `fn`: the limiter must only ever be used with a
 * client on this transport, and such a client must never be paced by another limiter (it would not
 * be paced at all). Closing either face stops the thread for both.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { onAbort } from '../abort-listeners.js';
import { TimAbortError, type TimError } from '../tim/errors.js';
import type { HttpReply, HttpTransport } from '../tim/transport.js';
import {
  type CallThreadSettings,
  type FromCallThread,
  fromWire,
  STATE,
  STATE_CELLS,
  TimCallThreadError,
  type ToCallThread,
} from './call-thread-protocol.js';
import {
  type CallLimiter,
  type ComplaintCounts,
  type Limiter,
  limiterWindowMs,
  type RateComplaint,
} from './limiter.js';

export { TimCallThreadError } from './call-thread-protocol.js';

/** Options of {@link openCallThread}. */
export interface CallThreadOptions {
  /** Tencent IM's base URL; its origin is what the thread connects to. */
  baseUrl: string;
  /** Whole-call timeout, ms. */
  timeoutMs: number;
  /** Keep-alive connections to the host. */
  connections: number;
  /** Largest body accepted. Default 32 MiB. */
  maxBodyBytes?: number;
  /** Initial calls per second (0 holds every call until {@link Limiter.setRate}). */
  ratePerSecond: number;
  /** As {@link CallLimiter}'s `jitterMs`. */
  jitterMs: number;
  /** Told about each complaint the thread's limiter counted (see {@link CallLimiter.slowDown}). */
  onComplaint?: (complaint: RateComplaint) => void;
  /** Told when the thread dies unexpectedly (to log it); see {@link CallThreadCrash}. */
  onCrash?: (crash: CallThreadCrash) => void;
  /** Unexpected exits within a minute that are restarted; one more and the thread gives up. Default 3. */
  maxRestartsPerMinute?: number;
  /** The worker entry; default the compiled `call-thread-worker.js` (see {@link openCallThread}). */
  workerUrl?: URL;
}

/** What {@link CallThreadOptions.onCrash} is told. Never carries a request path or the UserSig. */
export interface CallThreadCrash {
  /** The uncaught error's class and message (UserSigs blanked), or the exit code. */
  reason: string;
  /** Calls that were waiting or in flight; each failed with a retryable {@link TimCallThreadError}. */
  failedCalls: number;
  /** A new thread is starting; false when the thread gave up and every call now fails. */
  restarting: boolean;
}

/**
 * The worker entry is compiled JavaScript: `call-thread-worker.js` next to this module. When this
 * module runs from its TypeScript source (vitest), there is no such file beside it; the worker is
 * then the one compiled from the same sources into `dist/`, which the test run builds before any
 * test starts (test/support/global-setup.ts), so the tests run the call thread as shipped.
 */
const DEFAULT_WORKER_URL = import.meta.url.endsWith('.ts')
  ? new URL('../../dist/src/sync/call-thread-worker.js', import.meta.url)
  : new URL('./call-thread-worker.js', import.meta.url);

/**
 * Starts a call thread, or says why it cannot: the compiled worker entry is missing (a packaging
 * fault, or sources that were never built); the caller then paces and sends in this thread instead.
 */
export function openCallThread(opts: CallThreadOptions): { thread: CallThread } | { unavailable: string } {
  const url = opts.workerUrl ?? DEFAULT_WORKER_URL;
  if (url.protocol !== 'file:' || !existsSync(fileURLToPath(url))) {
    return { unavailable: `no compiled worker at ${url.href}` };
  }
  return { thread: new CallThread(opts, url) };
}

interface Pending {
  resolve: (reply: HttpReply) => void;
  reject: (err: TimError) => void;
  /** Stops watching the caller's signal for this call. */
  cancelAbort: (() => void) | undefined;
}

/** One minute, the span {@link CallThreadOptions.maxRestartsPerMinute} counts crashes in. */
const RESTART_SPAN_MS = 60_000;

/**
 * The main thread's handle on the call thread. Make it with {@link openCallThread}.
 *
 * If the thread dies unexpectedly, the calls it held fail at once with a retryable
 * {@link TimCallThreadError} and a new thread starts. The new thread cannot know which calls the
 * old one made in the last second, so it holds every call for one window (1 s + jitter) first: the
 * rate guarantee holds across the restart. After more than `maxRestartsPerMinute` crashes in a
 * minute it gives up: every call then fails with a fatal {@link TimCallThreadError}, which stops
 * passes (the daemon stays up, not ready, and says why).
 */
export class CallThread {
  /** The pacing controls; see the module comment for why `schedule` runs its function at once. */
  readonly limiter: Limiter;
  /** Sends calls through the thread: each waits for its turn in the thread's limiter. */
  readonly transport: HttpTransport;

  readonly #opts: CallThreadOptions;
  readonly #url: URL;
  readonly #state = new Int32Array(new SharedArrayBuffer(STATE_CELLS * Int32Array.BYTES_PER_ELEMENT));
  readonly #pending = new Map<number, Pending>();
  readonly #windowMs: number;
  #worker: Worker;
  #refed = false;
  #nextId = 1;
  /** What the limiter was last told, to start a replacement thread the same way. */
  #rate: number;
  #pausedUntil = 0;
  #crashes: number[] = [];
  #lastError: string | undefined;
  /** Why every call fails now (stopped, or gave up restarting); undefined while running. */
  #deadReason: string | undefined;
  #closing: Promise<void> | undefined;
  /** Set as soon as closing starts (before {@link CallThread.close}'s promise exists). */
  #closed = false;
  #stopped: (() => void) | undefined;

  /** @internal use {@link openCallThread} */
  constructor(opts: CallThreadOptions, url: URL) {
    this.#opts = opts;
    this.#url = url;
    this.#windowMs = limiterWindowMs(opts.jitterMs);
    this.#rate = Math.max(0, Math.floor(opts.ratePerSecond));
    this.#worker = this.#spawn(0);
    this.limiter = new ThreadLimiter(this);
    this.transport = { post: (p, b, s) => this.#post(p, b, s), close: () => this.close() };
  }

  /** The worker running now (a crash replaces it). Exposed for tests and diagnostics. */
  get worker(): Worker {
    return this.#worker;
  }

  /** Drops queued calls, lets calls in flight finish (within the timeout), and ends the thread. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  #spawn(holdMs: number): Worker {
    const s = this.#state;
    Atomics.store(s, STATE.rate, holdMs > 0 ? 0 : this.#rate);
    Atomics.store(s, STATE.factorPpm, 1_000_000);
    Atomics.store(s, STATE.queued, 0);
    Atomics.store(s, STATE.posted, 0);
    Atomics.store(s, STATE.received, 0);
    const settings: CallThreadSettings = {
      origin: new URL(this.#opts.baseUrl).origin,
      timeoutMs: this.#opts.timeoutMs,
      connections: this.#opts.connections,
      maxBodyBytes: this.#opts.maxBodyBytes ?? 32 * 1024 * 1024,
      ratePerSecond: this.#rate,
      jitterMs: this.#opts.jitterMs,
      holdMs,
      state: s.buffer as SharedArrayBuffer,
    };
    const worker = new Worker(this.#url, {
      workerData: settings,
      name: 'tim-call-thread',
      // The thread holds little at a time (requests in flight; bodies are transferred out as they
      // arrive), but V8 sizes a new isolate's young generation like a main thread's and let it grow
      // far past that under the churn of a body per call, which showed in the full sweep's peak RSS
      // (BENCHMARKS.md). Bodies are ArrayBuffers, outside these limits.
      resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 },
    });
    worker.on('message', (msg: FromCallThread) => this.#onMessage(msg));
    // Without an 'error' listener an uncaught error in the thread would crash this process.
    worker.on('error', (err) => {
      this.#lastError = `${err.name}: ${redact(err.message)}`;
    });
    worker.on('exit', (code) => this.#onExit(worker, code));
    // Referenced only while calls are pending: an idle thread never keeps the process alive.
    worker.unref();
    this.#refed = false;
    this.#updateRef(worker);
    return worker;
  }

  #updateRef(worker = this.#worker): void {
    const want = this.#pending.size > 0 || this.#closed;
    if (want === this.#refed) return;
    this.#refed = want;
    if (want) worker.ref();
    else worker.unref();
  }

  #send(msg: ToCallThread): void {
    this.#worker.postMessage(msg);
  }

  #post(path: string, body: string, signal?: AbortSignal): Promise<HttpReply> {
    if (this.#deadReason !== undefined) {
      return Promise.reject(new TimCallThreadError(this.#deadReason, { permanent: true }));
    }
    if (signal?.aborted) return Promise.reject(new TimAbortError({ cause: signal.reason }));
    const id = this.#nextId++;
    return new Promise<HttpReply>((resolve, reject) => {
      // Every call of a pass shares its signal; a listener each would pile up (dozens in flight).
      const cancelAbort = signal ? onAbort(signal, () => this.#send({ type: 'abort', id })) : undefined;
      this.#pending.set(id, { resolve, reject, cancelAbort });
      this.#updateRef();
      Atomics.add(this.#state, STATE.posted, 1);
      this.#send({ type: 'post', id, path, body });
    });
  }

  #settle(id: number): Pending | undefined {
    const p = this.#pending.get(id);
    if (!p) return undefined;
    this.#pending.delete(id);
    p.cancelAbort?.();
    this.#updateRef();
    return p;
  }

  #onMessage(msg: FromCallThread): void {
    switch (msg.type) {
      case 'reply':
        this.#settle(msg.id)?.resolve({ body: new Uint8Array(msg.body), sentAt: msg.sentAt });
        break;
      case 'error':
        this.#settle(msg.id)?.reject(fromWire(msg.error));
        break;
      case 'complaint':
        this.#opts.onComplaint?.(msg.complaint);
        break;
      case 'stopped':
        this.#stopped?.();
        break;
    }
  }

  #onExit(worker: Worker, code: number): void {
    if (worker !== this.#worker || this.#closed) return;
    const reason = this.#lastError ?? `exit code ${code}`;
    this.#lastError = undefined;
    const now = performance.now();
    this.#crashes = this.#crashes.filter((t) => now - t < RESTART_SPAN_MS);
    this.#crashes.push(now);
    const restarting = this.#crashes.length <= (this.#opts.maxRestartsPerMinute ?? 3);
    if (restarting) {
      // The old thread's calls of the last window are unknown: hold a whole window, or the pause.
      this.#worker = this.#spawn(Math.max(this.#windowMs, this.#pausedUntil - now));
    } else {
      this.#deadReason =
        `the call thread crashed ${this.#crashes.length} times within a minute (last: ${reason}); ` +
        'restart the process';
      Atomics.store(this.#state, STATE.rate, 0);
    }
    const failed = [...this.#pending.keys()];
    for (const id of failed) {
      this.#settle(id)?.reject(
        new TimCallThreadError(`the call thread stopped unexpectedly (${reason}); the call got no answer`),
      );
    }
    this.#opts.onCrash?.({ reason, failedCalls: failed.length, restarting });
  }

  /** Closing has started: no call can be made any more. */
  get closed(): boolean {
    return this.#closed;
  }

  async #shutdown(): Promise<void> {
    this.#closed = true;
    const worker = this.#worker;
    const running = this.#deadReason === undefined;
    this.#deadReason ??= 'the call thread is stopped';
    Atomics.store(this.#state, STATE.rate, 0);
    if (running) {
      // Referenced until it has answered: `await close()` must not be cut short by the process exiting.
      this.#updateRef();
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.#stopped = resolve;
        worker.once('exit', () => resolve());
        // Calls in flight end within the timeout; a thread that does not answer by then is ended.
        timer = setTimeout(resolve, this.#opts.timeoutMs + 2_000);
        this.#send({ type: 'stop' });
      });
      clearTimeout(timer);
    }
    await worker.terminate();
    for (const id of [...this.#pending.keys()]) {
      this.#settle(id)?.reject(new TimCallThreadError('the call thread is stopped', { permanent: true }));
    }
  }

  /** @internal for {@link ThreadLimiter} */
  control(msg: ToCallThread & { type: 'slowDown' | 'pause' | 'setRate' }): void {
    if (msg.type === 'setRate') this.#rate = Math.max(0, Math.floor(msg.rate));
    if (msg.type === 'pause') this.#pausedUntil = Math.max(this.#pausedUntil, performance.now() + msg.ms);
    if (this.#deadReason === undefined) this.#send(msg);
  }

  /** @internal for {@link ThreadLimiter} */
  read(cell: number): number {
    return Atomics.load(this.#state, cell);
  }

  /** @internal for {@link ThreadLimiter} */
  get dead(): boolean {
    return this.#deadReason !== undefined;
  }
}

/**
 * The {@link Limiter} face of a {@link CallThread}. Control calls are forwarded to the thread and
 * take effect there within a message hop; `rate`, `slowdownFactor` and `queued()` read the state
 * the thread publishes, so they show a change once the thread has applied it.
 */
class ThreadLimiter implements Limiter {
  readonly #thread: CallThread;

  constructor(thread: CallThread) {
    this.#thread = thread;
  }

  /**
   * Runs `fn` at once: its call is paced by the thread's transport. Once the thread is closed it
   * refuses, as a stopped {@link CallLimiter} does, so nothing is started that cannot be sent.
   */
  schedule<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#thread.closed) return Promise.reject(new Error('limiter stopped'));
    return fn();
  }

  slowDown(): void {
    this.#thread.control({ type: 'slowDown' });
  }

  pause(ms: number): void {
    this.#thread.control({ type: 'pause', ms });
  }

  setRate(ratePerSecond: number): void {
    this.#thread.control({ type: 'setRate', rate: ratePerSecond });
  }

  get rate(): number {
    return this.#thread.dead ? 0 : this.#thread.read(STATE.rate);
  }

  get slowdownFactor(): number {
    return this.#thread.read(STATE.factorPpm) / 1_000_000;
  }

  get complaints(): Readonly<ComplaintCounts> {
    return { slips: this.#thread.read(STATE.slips), slowDowns: this.#thread.read(STATE.slowDowns) };
  }

  /** Calls the thread's limiter holds, plus calls on their way to it. */
  queued(): number {
    const inTransit = this.#thread.read(STATE.posted) - this.#thread.read(STATE.received);
    return this.#thread.read(STATE.queued) + Math.max(0, inTransit);
  }

  stop(): Promise<void> {
    return this.#thread.close();
  }
}

/** Blanks anything that looks like a UserSig query parameter. */
function redact(text: string): string {
  return text.replace(/usersig=[^&\s"']*/gi, 'usersig=(hidden)').slice(0, 300);
}
