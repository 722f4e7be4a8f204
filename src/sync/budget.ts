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
 * - except when replicas are GONE and nobody new came: a replica already calling raises to its new
 *   share `dropGraceMs` (one limiter window) after it first saw the smaller set, without the settle
 *   wait. Newcomers start at 0 and raise only once everyone agrees, so they never count on a share
 *   the survivors took; the grace lets the gone replica's last calls leave the window. (The shares
 *   of the survivors before the raise plus the gone replica's already add up to the limit, so any
 *   window that straddles the raise holds no more than it.) Survivors watch the registry every
 *   `watchMs` for this, as a death shows there within milliseconds (see db/replicas.ts);
 * - it stops calling altogether when its own heartbeat has not succeeded for `ttlMs - fenceMarginMs`,
 *   before the others can count it as gone and raise theirs.
 * The state lives in Postgres, which every replica needs anyway: if Postgres restarts, replicas
 * fence themselves (no calls are worth making when nothing can be applied); if the table is emptied,
 * the next heartbeats recreate it, and the settle rule keeps anyone from raising meanwhile.
 */
import type { ReplicaView } from '../db/replicas.js';
import { limiterWindowMs } from './limiter.js';

/**
 * How long survivors wait, after seeing a replica gone, before taking its share: the limiter's
 * window for `jitterMs` (so the gone replica's last calls have left it), plus a little for timers
 * that fire late.
 */
export function dropGraceMs(jitterMs: number): number {
  return limiterWindowMs(jitterMs) + 50;
}

/** This replica's share if the budget were divided among `live` (and itself) now. */
function targetShare(me: string, live: readonly ReplicaView[], limit: number) {
  const ids = new Set(live.map((r) => r.replicaId));
  ids.add(me);
  const sorted = [...ids].sort();
  const peers = sorted.length;
  const index = sorted.indexOf(me);
  const target = Math.floor(limit / peers) + (index < limit % peers ? 1 : 0);
  const settled = (settleMs: number) =>
    live.some((r) => r.replicaId === me) && live.every((r) => r.peers === peers && r.settledMs >= settleMs);
  return { target, peers, settled };
}

/** Decides a replica's calls per second from what the registry shows. */
export function decideShare(input: {
  me: string;
  live: readonly ReplicaView[];
  limit: number;
  settleMs: number;
  /** The rate in force now; undefined before the first decision. */
  current: number | undefined;
}): { rate: number; peers: number } {
  const { target, peers, settled } = targetShare(input.me, input.live, input.limit);
  if (settled(input.settleMs)) return { rate: target, peers };
  return { rate: Math.min(input.current ?? 0, target), peers };
}

/** Dependencies of {@link ReplicaBudget}. */
export interface ReplicaBudgetDeps {
  replicaId: string;
  limit: number;
  /** Renews this replica and lists the live ones. */
  heartbeat: (peers: number, callsPerSecond: number) => Promise<ReplicaView[]>;
  /** Lists the live replicas without renewing (polled every `watchMs` to see deaths early); absent: heartbeats only. */
  live?: () => Promise<ReplicaView[]>;
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
  /** How often `live` is polled. Default 250 ms. */
  watchMs?: number;
  /**
   * After replicas are seen gone (and none new), raise to the new share this long after. At least
   * the limiter's window (1 s + its jitter allowance). Default 1,100 ms.
   */
  dropGraceMs?: number;
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
  readonly #d: Required<Omit<ReplicaBudgetDeps, 'onChange' | 'onError' | 'live'>> &
    Pick<ReplicaBudgetDeps, 'onChange' | 'onError' | 'live'>;
  #rate: number | undefined;
  #peers = 1;
  #lastBeatOk = Number.NEGATIVE_INFINITY;
  /** Live replica ids (this one included) at the last decision. */
  #view: Set<string> | undefined;
  /** When a smaller set of replicas (and no new one) was last seen; undefined after a join. */
  #dropSeenAt: number | undefined;
  #dropTimer: NodeJS.Timeout | undefined;
  /** The list the last decision was made from, for the decision the drop timer makes. */
  #lastLive: readonly ReplicaView[] = [];

  constructor(deps: ReplicaBudgetDeps) {
    this.#d = {
      heartbeatMs: 1_000,
      ttlMs: 5_000,
      settleMs: 5_000,
      fenceMarginMs: 1_500,
      watchMs: 250,
      dropGraceMs: 1_100,
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
      const first = this.#rate === undefined;
      const alone = live.length === 1 && live[0]!.replicaId === this.#d.replicaId;
      if (first && alone && this.#d.fastStartWhenAlone) {
        this.#observe(live);
        this.#peers = 1;
        this.#apply(this.#d.limit);
      } else {
        this.#decide(live);
      }
    } catch (err) {
      this.#d.onError?.(err);
    }
    this.fenceIfStale();
  }

  /** One look at the registry without renewing: sees a gone replica within `watchMs`. */
  async watch(): Promise<void> {
    if (!this.#d.live || this.#rate === undefined || this.#rate === 0) return;
    try {
      const live = await this.#d.live();
      // A heartbeat may have fenced or re-registered us meanwhile: only a replica calling decides here.
      if (this.#rate > 0) this.#decide(live);
    } catch {
      // The heartbeat reports registry trouble; a failed look changes nothing.
    }
  }

  /**
   * The registry session was lost: the others count us gone from now on (and may take our share),
   * so stop calling at once. The next heartbeat registers again as a newcomer.
   */
  lost(): void {
    this.#lastBeatOk = Number.NEGATIVE_INFINITY;
    this.#view = undefined;
    this.#dropSeenAt = undefined;
    this.#apply(0);
  }

  /** Notes which replicas are live; remembers when some were seen gone with nobody new. */
  #observe(live: readonly ReplicaView[]): void {
    const ids = new Set(live.map((r) => r.replicaId));
    ids.add(this.#d.replicaId);
    const before = this.#view;
    if (before) {
      const joined = [...ids].some((id) => !before.has(id));
      if (joined) this.#dropSeenAt = undefined;
      else if (ids.size < before.size) this.#dropSeenAt = this.#d.now();
    }
    this.#view = ids;
    this.#lastLive = live;
  }

  #decide(live: readonly ReplicaView[]): void {
    this.#observe(live);
    const next = decideShare({
      me: this.#d.replicaId,
      live,
      limit: this.#d.limit,
      settleMs: this.#d.settleMs,
      current: this.#rate,
    });
    this.#peers = next.peers;
    let rate = next.rate;
    const { target } = targetShare(this.#d.replicaId, live, this.#d.limit);
    const registered = live.some((r) => r.replicaId === this.#d.replicaId);
    if (this.#dropSeenAt !== undefined && registered && (this.#rate ?? 0) > 0 && target > rate) {
      const waitMs = this.#dropSeenAt + this.#d.dropGraceMs - this.#d.now();
      if (waitMs <= 0) {
        rate = target;
      } else if (!this.#dropTimer) {
        // Raised when the grace ends, not at the next heartbeat: that could be most of a second later.
        this.#dropTimer = setTimeout(() => {
          this.#dropTimer = undefined;
          if (this.#dropSeenAt !== undefined && (this.#rate ?? 0) > 0) this.#decide(this.#lastLive);
        }, waitMs + 1);
        this.#dropTimer.unref?.();
      }
    }
    this.#apply(rate);
  }

  /**
   * Stops calls when the last good heartbeat is too old for the others to still count us. Before
   * the first decision there is nothing to stop (the limiter starts at 0). Fencing then would also
   * set the rate, and so cost a lone `sync` its fast start whenever its first heartbeat took longer
   * than the fence timer's tick, and leave it waiting out the settle period (bench/notes.md, "a lone
   * `sync` could lose its fast start", has the runs that showed it).
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

  /** Heartbeats (and watches the registry) until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    // Checked on its own timer: a heartbeat stuck on a dead connection must not delay the fence.
    const fence = setInterval(() => this.fenceIfStale(), 250);
    let watching = false;
    const watch = this.#d.live
      ? setInterval(() => {
          if (watching) return;
          watching = true;
          void this.watch().finally(() => {
            watching = false;
          });
        }, this.#d.watchMs)
      : undefined;
    try {
      while (!signal.aborted) {
        await this.tick();
        await this.#d.sleep(this.#d.heartbeatMs, signal).catch(() => {});
      }
    } finally {
      clearInterval(fence);
      if (watch) clearInterval(watch);
      if (this.#dropTimer) clearTimeout(this.#dropTimer);
      this.#dropTimer = undefined;
    }
  }
}
