/**
 * The call thread's entry point (see `call-thread.ts`): a {@link CallLimiter} and an
 * {@link UndiciTransport} on an event loop that does nothing else, so a call goes to the socket the
 * moment the limiter grants it and the limiter's timers fire on time.
 *
 * Each `post` is `limiter.schedule(() => transport.post(...))`; the reply transfers the body's
 * buffer. The path carries the UserSig: it is used for the request and never logged or echoed.
 */
import { getPriority, setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { TimAbortError, TimError } from '../tim/errors.js';
import { UndiciTransport } from '../tim/transport.js';
import {
  type CallThreadSettings,
  type FromCallThread,
  type PriorityReport,
  STATE,
  type ToCallThread,
  toWire,
  type WireError,
} from './call-thread-protocol.js';
import { CallLimiter } from './limiter.js';

/** A call this thread holds: queued in the limiter, or sent. */
interface Call {
  abort: AbortController;
  /** The limiter granted it and the transport has it. */
  sent: boolean;
}

/**
 * Asks for the thread's nice value. On Linux, nice is per thread and `setpriority(PRIO_PROCESS, 0)`
 * (what `os.setPriority` calls with no pid) sets the calling thread's alone, so this raises the call
 * thread over the main thread's decoding and SQL and over other processes (Postgres, on a shared
 * machine) without touching them. Elsewhere it would renice the whole process, so it is not tried.
 * Why it matters: on a busy 2-core machine the thread woke 3–15 ms late for its slots and the sweep
 * lost about 1% of the quota (BENCHMARKS.md). It uses little CPU, so it starves no one.
 */
function applyNice(wanted: number): PriorityReport {
  if (wanted === 0) return { wanted, nice: getPriority() };
  if (process.platform !== 'linux') return { wanted, nice: getPriority(), refused: 'not Linux' };
  try {
    setPriority(wanted);
    return { wanted, nice: getPriority() };
  } catch (err) {
    // A SystemError: `code` is ERR_SYSTEM_ERROR, the errno name (EACCES) is in `info`.
    const e = err as { code?: unknown; info?: { code?: unknown } };
    const code = e.info?.code ?? e.code;
    return { wanted, nice: getPriority(), refused: typeof code === 'string' ? code : 'error' };
  }
}

function serve(port: NonNullable<typeof parentPort>, settings: CallThreadSettings): void {
  port.postMessage({ type: 'priority', report: applyNice(settings.nice) } satisfies FromCallThread);
  const state = new Int32Array(settings.state);
  const calls = new Map<number, Call>();
  let stopping = false;

  const publish = () => {
    Atomics.store(state, STATE.rate, limiter.rate);
    Atomics.store(state, STATE.factorPpm, Math.round(limiter.slowdownFactor * 1_000_000));
    Atomics.store(state, STATE.queued, limiter.queued());
  };
  const limiter = new CallLimiter({
    ratePerSecond: settings.ratePerSecond,
    jitterMs: settings.jitterMs,
    onChange: publish,
  });
  const transport = new UndiciTransport({
    origin: settings.origin,
    timeoutMs: settings.timeoutMs,
    connections: settings.connections,
    maxBodyBytes: settings.maxBodyBytes,
  });
  Atomics.store(state, STATE.received, 0);
  if (settings.holdMs > 0) limiter.pause(settings.holdMs);
  publish();

  /** Answers a call once; later answers for the same id (an abort raced the reply) are dropped. */
  const answer = (id: number, msg: FromCallThread, transfer?: ArrayBuffer[]) => {
    if (!calls.delete(id)) return;
    port.postMessage(msg, transfer ?? []);
  };
  const fail = (id: number, error: WireError) => answer(id, { type: 'error', id, error });

  const post = (id: number, path: string, body: string) => {
    const call: Call = { abort: new AbortController(), sent: false };
    calls.set(id, call);
    if (stopping) return fail(id, { kind: 'stopped' });
    const signal = call.abort.signal;
    limiter
      .schedule(() => {
        call.sent = true;
        publish();
        return transport.post(path, body, signal);
      }, signal)
      .then(
        (reply) => {
          const b = reply.body;
          // The transport gives the body a buffer of its own; copy only if that ever changes.
          const buffer =
            b.byteOffset === 0 && b.byteLength === b.buffer.byteLength
              ? (b.buffer as ArrayBuffer)
              : (b.slice().buffer as ArrayBuffer);
          answer(id, { type: 'reply', id, body: buffer, sentAt: reply.sentAt }, [buffer]);
        },
        (err: unknown) => {
          if (err instanceof TimError) return fail(id, toWire(err));
          // Not from the transport: the limiter refused the call before sending it.
          if (signal.aborted) return fail(id, toWire(new TimAbortError()));
          fail(id, stopping ? { kind: 'stopped' } : toWire(err));
        },
      )
      .finally(publish);
  };

  const stop = async () => {
    stopping = true;
    // Queued calls are dropped (answered 'stopped'); calls already sent finish, within the timeout.
    await limiter.stop();
    await transport.close();
    port.postMessage({ type: 'stopped' } satisfies FromCallThread);
    port.close();
  };

  port.on('message', (msg: ToCallThread) => {
    switch (msg.type) {
      case 'post':
        Atomics.add(state, STATE.received, 1);
        post(msg.id, msg.path, msg.body);
        break;
      case 'abort': {
        const call = calls.get(msg.id);
        if (!call) break;
        call.abort.abort();
        // Not sent yet: answer now rather than when the limiter reaches it in its queue. A sent
        // call is answered by the transport, which aborts the request.
        if (!call.sent) fail(msg.id, { kind: 'abort' });
        break;
      }
      case 'slowDown':
        limiter.slowDown(msg.recoverMs);
        break;
      case 'pause':
        limiter.pause(msg.ms);
        break;
      case 'setRate':
        limiter.setRate(msg.rate);
        break;
      case 'stop':
        void stop();
        break;
    }
    publish();
  });
}

if (!parentPort) throw new Error('call-thread-worker.js runs as a worker thread (see call-thread.ts)');
serve(parentPort, workerData as CallThreadSettings);
