/**
 * `friend-mirror simulate`: the Tencent IM simulator on its own, for trying the mirror (or a load
 * test of a deployment) without a real app. Configured by SIM_* variables; runs until SIGINT/SIGTERM.
 */
import { loadSimControlToken, parseDurationMs } from '../config.js';
import { generateApp, Simulator, warmPageJson } from '../simulator/index.js';
import { sleep } from '../sync/limiter.js';
import { type CommandContext, EXIT, UsageError } from './context.js';

function num(env: CommandContext['env'], name: string, def: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0)
    throw new UsageError(`${name} must be a non-negative number, got ${JSON.stringify(raw)}`);
  return n;
}

/** Runs the simulator until stopped. */
export async function simulateCommand(ctx: CommandContext): Promise<number> {
  const env = ctx.env;
  const reading = env.SIM_SEQUENCE_READING ?? 'empty-value-item';
  if (reading !== 'empty-value-item' && reading !== 'omit-friend') {
    throw new UsageError('SIM_SEQUENCE_READING must be empty-value-item or omit-friend');
  }
  const sdkAppId = num(env, 'TIM_SDKAPPID', 1400000000);
  const secretKey = env.TIM_SECRET_KEY ?? 'sim-secret-key';
  const store = generateApp({
    accounts: num(env, 'SIM_ACCOUNTS', 1000),
    meanFriends: num(env, 'SIM_MEAN_FRIENDS', 300),
    maxFriends: num(env, 'SIM_MAX_FRIENDS', 3000),
    minFriends: num(env, 'SIM_MIN_FRIENDS', 0),
    seed: num(env, 'SIM_SEED', 1),
  });
  // Before listening: the first sweep's pages then cost no more to serve than later ones.
  warmPageJson(store, reading);
  const latency = num(env, 'SIM_LATENCY_MS', 0);
  // Friend webhooks, signed with the same token the mirror checks unless told otherwise.
  const callbackUrl = env.SIM_CALLBACK_URL || undefined;
  const callbackToken = env.SIM_CALLBACK_TOKEN || env.TIM_CALLBACK_TOKEN || undefined;
  const controlToken = loadSimControlToken(env);
  const sim = new Simulator({
    store,
    ...(controlToken ? { controlToken } : {}),
    sdkAppId,
    secretKey,
    pageSize: num(env, 'SIM_PAGE_SIZE', 500),
    sequenceReading: reading,
    rateLimit: num(env, 'SIM_RATE_LIMIT', 200),
    latencyMs: [latency / 2, latency * 1.5],
    faults: {
      rate: num(env, 'SIM_FAULT_RATE', 0),
      kinds: { 'error:30006': 1, 'http-502': 1, reset: 1, truncate: 1 },
    },
  });
  try {
    if (callbackUrl)
      sim.setCallback({ url: callbackUrl, ...(callbackToken ? { token: callbackToken } : {}) });
  } catch (err) {
    throw new UsageError(`SIM_CALLBACK_URL: ${(err as Error).message}`);
  }
  const baseUrl = await sim.listen({ host: env.SIM_HOST ?? '127.0.0.1', port: num(env, 'SIM_PORT', 5080) });
  ctx.out(`simulator listening at ${baseUrl}: ${store.size} accounts, SDKAppID ${sdkAppId}`);
  ctx.out(
    `point the mirror at it with TIM_BASE_URL=${baseUrl} TIM_SDKAPPID=${sdkAppId} TIM_SECRET_KEY=<SIM key>`,
  );
  ctx.out(`account ids: GET ${baseUrl}/__sim/accounts; change data: POST ${baseUrl}/__sim/mutate`);
  ctx.out(
    controlToken
      ? 'control API: loopback clients, and others with Authorization: Bearer $SIM_CONTROL_TOKEN'
      : 'control API: loopback clients only (SIM_CONTROL_TOKEN lets others in)',
  );
  if (sim.callbackTarget) {
    ctx.out(
      `friend webhooks go to ${sim.callbackTarget.url} (${sim.callbackTarget.signed ? 'signed' : 'unsigned: set SIM_CALLBACK_TOKEN'})`,
    );
  }
  const mutateEvery = env.SIM_MUTATE_EVERY ? parseDurationMs(env.SIM_MUTATE_EVERY) : undefined;
  let seed = 1;
  try {
    while (!ctx.signal.aborted) {
      await sleep(mutateEvery ?? 3_600_000, ctx.signal).catch(() => {});
      if (mutateEvery && !ctx.signal.aborted) {
        const changed = store.mutateRandom({ fraction: num(env, 'SIM_MUTATE_FRACTION', 0.01), seed: seed++ });
        ctx.log.info({ changed: changed.length }, 'simulator changed accounts');
      }
    }
  } finally {
    await sim.close();
  }
  return EXIT.ok;
}
