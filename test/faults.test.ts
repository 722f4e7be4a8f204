/**
 * Fault injection: ≥10% of calls fail in every way the network and Tencent can fail, and data
 * changes in the middle of pulls. Whatever happens, nothing wrong is ever committed, and repeated
 * passes converge to a mirror that equals the source exactly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApp } from '../src/simulator/index.js';
import { diffAccount } from '../src/verify.js';
import { type MirrorFixture, mirrorFixture } from './fixtures/mirror.js';

describe('fault injection', () => {
  let f: MirrorFixture;

  beforeAll(async () => {
    const store = generateApp({ accounts: 60, meanFriends: 30, maxFriends: 120, seed: 42, oddIds: true });
    // A short client timeout keeps injected timeouts from dominating the run time.
    f = await mirrorFixture('faults', { store, pageSize: 10 }, { timeoutMs: 400 });
    await f.addAllAccounts();
  });
  afterAll(async () => {
    await f?.close();
  });

  it('converges to the exact source through errors, timeouts, resets, truncation and moving data', async () => {
    f.sim.configure({
      faults: {
        rate: 0.15,
        kinds: {
          'error:30006': 2,
          'error:30007': 1,
          'error:70169': 1,
          'error:60007': 1,
          'http-502': 2,
          reset: 2,
          truncate: 2,
          garbage: 1,
          timeout: 1,
        },
      },
    });
    // Mid-pull changes: on 4% of calls, the account being pulled changes under the puller.
    let mutations = 0;
    let mutate = true;
    let seed = 1;
    f.sim.onCall = (call) => {
      if (!mutate || !call.account || (call.startIndex ?? 0) === 0 || Math.random() >= 0.04) return;
      const changed = f.store.mutateRandom({ fraction: 1 / 60, seed: seed++ });
      mutations += changed.length;
    };

    const rounds: string[] = [];
    for (let round = 1; round <= 40; round++) {
      if (round === 6) mutate = false;
      const s = await f.syncAll({ retryAttempts: 3, concurrency: 8 });
      rounds.push(`${s.changed}c/${s.unchanged}u/${s.failed}f`);
      // Never wrong, even mid-storm: any account whose stored sequences match the source's must
      // match it exactly (sequences never ahead of the data).
      const seqOk = new Set(
        (
          await f.db
            .selectFrom('tim.accounts')
            .select(['account_id', 'standard_sequence', 'custom_sequence'])
            .execute()
        )
          .filter((r) => {
            const t = f.store.truth(r.account_id);
            return r.standard_sequence === t.standardSequence && r.custom_sequence === t.customSequence;
          })
          .map((r) => r.account_id),
      );
      // Each of them, not just the first few diffAll would report before it stops.
      const wrong: string[] = [];
      for (const id of seqOk) wrong.push(...(await diffAccount(f.db, id, f.store.truth(id).friends, 3)));
      expect(wrong, `round ${round}`).toEqual([]);
      if (!mutate && s.failed === 0 && (await f.sequenceMismatches()).length === 0) break;
    }
    f.sim.onCall = undefined;
    f.sim.configure({ faults: { rate: 0 } });

    const stats = f.sim.stats();
    const faults = Object.values(stats.byFault).reduce((a, b) => a + b, 0);
    expect(faults / stats.calls, JSON.stringify(stats.byFault)).toBeGreaterThanOrEqual(0.1);
    expect(Object.keys(stats.byFault).length).toBeGreaterThanOrEqual(8);
    expect(mutations).toBeGreaterThan(0);
    expect(await f.diffAll(), rounds.join(' ')).toEqual([]);
    expect(await f.sequenceMismatches()).toEqual([]);
    console.log(
      `fault injection: ${stats.calls} calls, ${faults} faults (${((100 * faults) / stats.calls).toFixed(1)}%), ` +
        `${mutations} mid-pull changes, converged after ${rounds.length} passes: ${rounds.join(' ')}`,
    );
  });
});
