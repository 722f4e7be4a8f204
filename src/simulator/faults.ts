/**
 * Fault injection: the ways a call to Tencent goes wrong in production, so a client's retry,
 * timeout and decode paths can be exercised on demand.
 */
import type { SeededRandom } from './prng.js';

/**
 * What an injected fault does to one call:
 * - `error:<code>`: a well-formed `FAIL` answer with that ErrorCode (e.g. 30006, 30007, 60008, 70169);
 * - `http-502`: HTTP 502 with an HTML body, as a gateway in between answers;
 * - `http-<status>`, any other status from 400 to 599: the same from a proxy or gateway, e.g.
 *   `http-403` for a proxy that refuses the call, `http-404` for a wrong path, `http-503`. Tencent
 *   itself answers 200 (tim-api.md), so these only ever come from something in between;
 * - `timeout`: never answers; the connection stays open until the client gives up;
 * - `reset`: destroys the connection without an answer;
 * - `truncate`: declares the full Content-Length, sends the first half of a valid body, then closes;
 * - `garbage`: HTTP 200 with an HTML error page instead of JSON.
 */
export type FaultKind = `error:${number}` | `http-${number}` | 'timeout' | 'reset' | 'truncate' | 'garbage';

/** Random fault injection: each call is faulted with probability `rate`, the kind drawn by weight. */
export interface FaultOptions {
  /** Probability 0..1 that a call is faulted. */
  rate: number;
  /** Relative weights of fault kinds. Default {@link DEFAULT_FAULT_KINDS}. */
  kinds?: Partial<Record<FaultKind, number>>;
}

/** The mix used when `faults.kinds` is not given: mostly retryable errors, some network failures. */
export const DEFAULT_FAULT_KINDS: Readonly<Partial<Record<FaultKind, number>>> = {
  'error:30006': 3,
  'error:30007': 1,
  'error:60008': 1,
  'error:70169': 1,
  'http-502': 1,
  reset: 1,
  truncate: 1,
  garbage: 1,
  timeout: 1,
};

const SIMPLE_KINDS = new Set(['timeout', 'reset', 'truncate', 'garbage']);

/** True when `kind` names a fault, e.g. `reset`, `http-403` or `error:30006`. */
export function isFaultKind(kind: unknown): kind is FaultKind {
  return (
    typeof kind === 'string' &&
    (SIMPLE_KINDS.has(kind) || /^error:[1-9]\d{0,8}$/.test(kind) || /^http-[45]\d\d$/.test(kind))
  );
}

/** The HTTP status of an `http-<status>` fault, or undefined for other kinds. */
export function faultHttpStatus(kind: FaultKind): number | undefined {
  return kind.startsWith('http-') ? Number(kind.slice(5)) : undefined;
}

/** The ErrorCode of an `error:<code>` fault, or undefined for other kinds. */
export function faultErrorCode(kind: FaultKind): number | undefined {
  return kind.startsWith('error:') ? Number(kind.slice(6)) : undefined;
}

/** Fault options checked and flattened for drawing. */
export interface FaultPlan {
  rate: number;
  kinds: readonly (readonly [FaultKind, number])[];
  totalWeight: number;
}

/**
 * Checks fault options and prepares them for {@link pickFault}.
 *
 * @throws RangeError for a rate outside 0..1, an unknown kind, or a negative weight
 */
export function planFaults(options: FaultOptions): FaultPlan {
  const { rate } = options;
  if (typeof rate !== 'number' || !(rate >= 0 && rate <= 1))
    throw new RangeError('faults.rate must be in 0..1');
  const kinds: [FaultKind, number][] = [];
  for (const [kind, weight] of Object.entries(options.kinds ?? DEFAULT_FAULT_KINDS)) {
    if (!isFaultKind(kind)) throw new RangeError(`unknown fault kind ${JSON.stringify(kind)}`);
    if (typeof weight !== 'number' || !(weight >= 0) || !Number.isFinite(weight)) {
      throw new RangeError(`fault weight of ${kind} must be a finite number ≥ 0`);
    }
    if (weight > 0) kinds.push([kind, weight]);
  }
  const totalWeight = kinds.reduce((sum, [, w]) => sum + w, 0);
  if (rate > 0 && totalWeight === 0)
    throw new RangeError('faults.kinds needs a positive weight when rate > 0');
  return { rate, kinds, totalWeight };
}

/** Draws the fault for one call, or undefined for none. */
export function pickFault(rng: SeededRandom, plan: FaultPlan): FaultKind | undefined {
  if (plan.rate === 0 || rng.next() >= plan.rate) return undefined;
  let r = rng.next() * plan.totalWeight;
  for (const [kind, weight] of plan.kinds) {
    r -= weight;
    if (r < 0) return kind;
  }
  return plan.kinds[plan.kinds.length - 1]?.[0];
}
