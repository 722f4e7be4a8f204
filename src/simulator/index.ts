/**
 * A faithful HTTP fake of Tencent IM's `POST /v4/sns/friend_get`, for tests, the demo, the benchmark
 * and `friend-mirror simulate`.
 *
 * @example
 * import { Simulator } from './simulator/index.js';
 * const sim = new Simulator({ generate: { accounts: 1000 }, seed: 1 });
 * const baseUrl = await sim.listen({ port: 0 });
 */
export type { CallRecord } from './call-log.js';
export { maxInWindow } from './call-log.js';
export type { CallbackDelivery, CallbackStats, CallbackTarget, CallbackUrlOptions } from './callbacks.js';
export { friendCallbackBody, friendCallbackUrl } from './callbacks.js';
export type { SimulatorConfig } from './config.js';
export { DEFAULT_CONFIG } from './config.js';
export type { ControlMutation } from './control.js';
export { applyMutation } from './control.js';
export type { FaultKind, FaultOptions } from './faults.js';
export { DEFAULT_FAULT_KINDS, isFaultKind } from './faults.js';
export type { GenerateOptions } from './generate.js';
export { generateApp, ODD_ACCOUNT_IDS } from './generate.js';
export type {
  BuiltPage,
  BuiltPageJson,
  PageQuery,
  SequenceReading,
  WireTagValue,
  WireUserDataItem,
} from './page.js';
export { buildPage, buildPageJson, warmPageJson } from './page.js';
export { SeededRandom } from './prng.js';
export type { SimCall, SimulatorOptions, SimulatorStats } from './server.js';
export { FRIEND_GET_PATH, Simulator } from './server.js';
export type {
  AccountTruth,
  CategoryFilter,
  FriendEntry,
  FriendshipChange,
  FriendTruth,
  MutateRandomOptions,
  SimAccount,
  SimFriend,
  TagRecord,
} from './store.js';
export { FriendStore, MAX_USER_ID_BYTES } from './store.js';
export { CUSTOM_TAGS, UNKNOWN_TAG } from './vocabulary.js';
