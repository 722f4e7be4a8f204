/**
 * Sharing one call budget (`TIM_RATE_LIMIT`, e.g. 200/s for the whole app) among replicas.
 *
 * Each replica heartbeats into `tim.replicas` and paces its own calls at its share: the limit
 * divided by the number of live replicas (the remainder goes to the first ids). Shares only ever
 * add up to the limit because of three rules:
 * - a replica LOWERS its share as soon as it sees more replicas;
 * - it RAISES its share (including from 0, when it first starts) only once every live replica has
 *   reported the same count for `settleMs`, which is longer than a limiter window plus a few
 *   heartbeats, so everyone else has lowered and their windows have drained;
 * - it stops calling altogether when its own heartbeat has not succeeded for `ttlMs - fenceMarginMs`,
 *   before the others can count it as gone and raise theirs.
 * The state lives in Postgres, which every replica needs anyway: if Postgres restarts, replicas
 * fence themselves (no calls are worth making when nothing can be applied); if the table is emptied,
 * the next heartbeats recreate it, and the settle rule keeps anyone from raising meanwhile.
 */
import type { ReplicaView } from '../db/replicas.js';

/** Decides a replica's calls per second from what the registry shows. */
export function decideShare(input: {
  me: string;
  live: readonly ReplicaView[];
  limit: number;
  settleMs: number;
  /** The rate in force now; undefined before the first decision. */
  current: number | undefined;
}): { rate: number; peers: number } {
  const ids = new Set(input.live.map((r) => r.replicaId));
  ids.add(input.me);
  const sorted = [...ids].sort();
  const peers = sorted.length;
  const index = sorted.indexOf(input.me);
  const target = Math.floor(input.limit / peers) + (index < input.limit % peers ? 1 : 0);
  const settled =
    input.live.some((r) => r.replicaId === input.me) &&
    input.live.every((r) => r.peers === peers && r.settledMs >= input.settleMs);
  if (settled) return { rate: target, peers };
  return { rate: Math.min(input.current ?? 0, target), peers };
}

/** Dependencies of {@link ReplicaBudget}. */
export interface ReplicaBudgetDeps {
  replicaId: string;
  limit: number;
  /** Renews this replica and lists the live ones. */
  heartbeat: (peers: number, callsPerSecond: number) => Promise<ReplicaView[]>;
  /** Applies a new rate to this process's limiter. */
  setRate: (rate: number) => void;
  /** Monotonic milliseconds. */
  now: () => number;
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  heartbeatMs?: number;
  ttlMs?: number;
  settleMs?: number;
  /** Fence this long before the registry would expire us. Default 1,500 ms. */
  fenceMarginMs?: number;
  /**
   * Take the whole budget at once when the first heartbeat finds no other replica, instead of
   * waiting `settleMs`. Safe against replicas starting together (each registers before it looks,
   * so at least one sees the other); not against one starting just after the table was emptied,
   * which is why only the one-shot `sync` uses it.
   */
  fastStartWhenAlone?: boolean;
  onChange?: (rate: number, peers: number) => void;
  onError?: (err: unknown) => void;
}

/** Keeps this replica's limiter at its share of the budget until stopped. */
export class ReplicaBudget {
  readonly #d: Required<Omit<ReplicaBudgetDeps, 'onChange' | 'onError'>> &
    Pick<ReplicaBudgetDeps, 'onChange' | 'onError'>;
  #rate: number | undefined;
  #peers = 1;
  #lastBeatOk = Number.NEGATIVE_INFINITY;

  constructor(deps: ReplicaBudgetDeps) {
    this.#d = {
      heartbeatMs: 1_000,
      ttlMs: 5_000,
      settleMs: 5_000,
      fenceMarginMs: 1_500,
      fastStartWhenAlone: false,
      ...deps,
    };
  }

  /** The rate in force (0 until the first settled decision). */
  get rate(): number {
    return this.#rate ?? 0;
  }

  /** Replicas sharing the budget, as last seen. */
  get peers(): number {
    return this.#peers;
  }

  /** One heartbeat and decision; exposed for tests. */
  async tick(): Promise<void> {
    const started = this.#d.now();
    try {
      const live = await this.#d.heartbeat(this.#peers, this.rate);
      this.#lastBeatOk = started;
      const next = decideShare({
        me: this.#d.replicaId,
        live,
        limit: this.#d.limit,
        settleMs: this.#d.settleMs,
        current: this.#rate,
      });
      this.#peers = next.peers;
      const alone = live.length === 1 && live[0]!.replicaId === this.#d.replicaId;
      this.#apply(
        this.#rate === undefined && alone && this.#d.fastStartWhenAlone ? this.#d.limit : next.rate,
      );
    } catch (err) {
      this.#d.onError?.(err);
    }
    this.fenceIfStale();
  }

  /**
   * Stops calls when the last good heartbeat is too old for the others to still count us. Before
   * the first decision there is nothing to stop (the limiter starts at 0). Fencing then would also
   * set the rate, and so cost a lone `sync` its fast start whenever its first heartbeat took longer
   * than the fence timer's 250 ms: the bench saw it wait the 5 s settle period in 2 of 6 passes.
   */
  fenceIfStale(): void {
    if (this.#rate === undefined) return;
    if (this.#d.now() - this.#lastBeatOk > this.#d.ttlMs - this.#d.fenceMarginMs && this.#rate !== 0) {
      this.#apply(0);
    }
  }

  #apply(rate: number): void {
    if (rate === this.#rate) return;
    this.#rate = rate;
    this.#d.setRate(rate);
    this.#d.onChange?.(rate, this.#peers);
  }

  /** Heartbeats until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    // Checked on its own timer: a heartbeat stuck on a dead connection must not delay the fence.
    const fence = setInterval(() => this.fenceIfStale(), 250);
    try {
      while (!signal.aborted) {
        await this.tick();
        await this.#d.sleep(this.#d.heartbeatMs, signal).catch(() => {});
      }
    } finally {
      clearInterval(fence);
    }
  }
}
