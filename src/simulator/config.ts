/**
 * The simulator's options that can change while it runs (`Simulator.configure`, `POST /__sim/config`),
 * with their defaults and checks. Checked up front so a bad value fails where it is set, not on the
 * next call.
 */
import type { FaultOptions, FaultPlan } from './faults.js';
import { planFaults } from './faults.js';
import type { SequenceReading } from './page.js';

/** The options that {@link Simulator.configure} accepts. */
export interface SimulatorConfig {
  /** Friends per page. Default 500, what Tencent documents today. */
  pageSize: number;
  /** How a friend with nothing to return is answered. Default 'empty-value-item'. */
  sequenceReading: SequenceReading;
  /** Calls allowed per sliding 1-second window, 0 for no limit. Default 200, Tencent's quota. */
  rateLimit: number;
  /** Uniform random delay `[min, max]` ms before each answer. Default `[0, 0]`. */
  latencyMs: readonly [number, number];
  /** Random fault injection. Default `{ rate: 0 }`. */
  faults: FaultOptions;
}

/** Defaults of {@link SimulatorConfig}. */
export const DEFAULT_CONFIG: Readonly<SimulatorConfig> = {
  pageSize: 500,
  sequenceReading: 'empty-value-item',
  rateLimit: 200,
  latencyMs: [0, 0],
  faults: { rate: 0 },
};

/** A checked configuration with the fault plan ready for drawing. */
export interface ResolvedConfig extends SimulatorConfig {
  faultPlan: FaultPlan;
}

/**
 * Applies `patch` over `base` and checks the result.
 *
 * @throws RangeError naming the first bad field
 */
export function resolveConfig(base: SimulatorConfig, patch: Partial<SimulatorConfig>): ResolvedConfig {
  const defined = Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined));
  const next: SimulatorConfig = { ...base, ...defined };
  for (const key of Object.keys(defined)) {
    if (!Object.hasOwn(DEFAULT_CONFIG, key))
      throw new RangeError(`unknown or fixed option ${JSON.stringify(key)}`);
  }
  if (!Number.isSafeInteger(next.pageSize) || next.pageSize < 1) {
    throw new RangeError('pageSize must be a positive integer');
  }
  if (next.sequenceReading !== 'empty-value-item' && next.sequenceReading !== 'omit-friend') {
    throw new RangeError("sequenceReading must be 'empty-value-item' or 'omit-friend'");
  }
  if (!Number.isSafeInteger(next.rateLimit) || next.rateLimit < 0) {
    throw new RangeError('rateLimit must be a non-negative integer (0 = no limit)');
  }
  const latency = next.latencyMs;
  if (
    !Array.isArray(latency) ||
    latency.length !== 2 ||
    !latency.every((v) => typeof v === 'number' && Number.isFinite(v) && v >= 0) ||
    latency[0] > latency[1]
  ) {
    throw new RangeError('latencyMs must be [min, max] with 0 ≤ min ≤ max');
  }
  if (typeof next.faults !== 'object' || next.faults === null)
    throw new RangeError('faults must be an object');
  const faultPlan = planFaults(next.faults);
  return {
    ...next,
    latencyMs: [latency[0], latency[1]],
    faults: { ...next.faults, ...(next.faults.kinds ? { kinds: { ...next.faults.kinds } } : {}) },
    faultPlan,
  };
}
