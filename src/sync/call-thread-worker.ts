/**
 * The call thread's entry point (see `call-thread.ts`): a {@link CallLimiter} and an
 * {@link UndiciTransport} on an event loop that does nothing else, so a call goes to the socket the
 * moment the limiter grants it and the limiter's timers fire on time.
 *
 * Each `post` is `limiter.schedule(() => transport.post(...))`; the reply transfers the body's
 * buffer. The path carries the UserSig: it is used for the request and never logged or echoed.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { TimAbortError, TimError } from '../tim/errors.js';
import { UndiciTransport } from '../tim/transport.js';
import {
  type CallThreadSettings,
  type FromCallThread,
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

function serve(port: NonNullable<typeof parentPort>, settings: CallThreadSettings): void {
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
    onComplaint: (complaint) => {
      // Added to, not stored: the cells outlive a crashed thread, and the counts are the process's.
      Atomics.add(state, complaint.verdict === 'slip' ? STATE.slips : STATE.slowDowns, 1);
      port.postMessage({ type: 'complaint', complaint } satisfies FromCallThread);
    },
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
        limiter.slowDown();
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
