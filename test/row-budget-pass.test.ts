/**
 * The row budget in real passes (simulator → pull → apply → Postgres): a budget smaller than one
 * account still syncs every account exactly; with many accounts in flight the rows held never
 * exceed the budget plus one account; failed and aborted accounts give their rows back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApp } from '../src/simulator/index.js';
import { RowBudget } from '../src/sync/row-budget.js';
import { type MirrorFixture, mirrorFixture } from './fixtures/mirror.js';

/** Accounts of 1,000–3,000 friends: 2–6 pages of 500 each. */
const app = (accounts: number, seed: number) =>
  generateApp({ accounts, minFriends: 1000, meanFriends: 2000, maxFriends: 3000, seed, oddIds: true });

const mostFriends = (f: MirrorFixture) =>
  Math.max(...f.store.accountIds().map((id) => f.store.account(id)!.friends.size));

/** Nothing held, nothing waiting, no hold left open. */
const drained = (b: RowBudget) => ({ held: b.held, waiting: b.waiting, holds: b.holds });
const EMPTY = { held: 0, waiting: 0, holds: 0 };

describe('a row budget smaller than one account', () => {
  let f: MirrorFixture;
  beforeAll(async () => {
    f = await mirrorFixture('row_budget_small', { store: app(8, 181), pageSize: 500 });
    await f.addAllAccounts();
  });
  afterAll(async () => {
    await f?.close();
  });

  it('syncs every account exactly: the oldest account in flight always proceeds', {
    timeout: 30_000,
  }, async () => {
    expect(
      Math.min(...f.store.accountIds().map((id) => f.store.account(id)!.friends.size)),
    ).toBeGreaterThanOrEqual(1000);
    const budget = new RowBudget(100);
    const s = await f.syncAll({ rowBudget: budget, concurrency: 8 });
    expect(s.failed).toBe(0);
    expect(s.changed).toBe(8);
    expect(await f.diffAll()).toEqual([]);
    expect(await f.sequenceMismatches()).toEqual([]);
    expect(drained(budget)).toEqual(EMPTY);
    expect(budget.peak).toBeLessThanOrEqual(100 + mostFriends(f));
  });

  it('gives back the rows of accounts that fail mid-pull', async () => {
    await f.db.updateTable('tim.accounts').set({ standard_sequence: null, custom_sequence: null }).execute();
    const budget = new RowBudget(5_000);
    // Once the first account is done, the next calls fail while the others hold pages; one try
    // each, so those accounts fail this round.
    let failedNext = 0;
    const s = await f.syncAll({
      rowBudget: budget,
      concurrency: 8,
      retryAttempts: 1,
      onAccount: () => {
        if (failedNext++ === 0) f.sim.injectFaults('http-502', 4);
      },
    });
    expect(s.failed).toBeGreaterThan(0);
    expect(drained(budget)).toEqual(EMPTY);
    // The next pass repairs them.
    const again = await f.syncAll({ rowBudget: budget, concurrency: 8 });
    expect(again.failed).toBe(0);
    expect(await f.diffAll()).toEqual([]);
    expect(drained(budget)).toEqual(EMPTY);
  });

  it('wakes the waiting pulls when the pass is stopped, and gives every row back', {
    timeout: 30_000,
  }, async () => {
    await f.db.updateTable('tim.accounts').set({ standard_sequence: null, custom_sequence: null }).execute();
    const budget = new RowBudget(100);
    const stop = new AbortController();
    const s = await f.syncAll({
      rowBudget: budget,
      concurrency: 8,
      signal: stop.signal,
      // After the first account, the other seven are in flight, most of them waiting for room.
      onAccount: () => {
        if (budget.waiting > 0) stop.abort(new Error('stop'));
      },
    });
    expect(s.stoppedBy).toBeDefined();
    expect(s.done).toBeLessThan(8);
    expect(drained(budget)).toEqual(EMPTY);
  });
});

describe('a row budget with many accounts in flight', () => {
  let f: MirrorFixture;
  beforeAll(async () => {
    f = await mirrorFixture('row_budget_many', { store: app(40, 182), pageSize: 500 });
    await f.addAllAccounts();
  });
  afterAll(async () => {
    await f?.close();
  });

  it('never holds more than the budget plus one account, and the mirror equals the source', async () => {
    const limit = 5_000;
    const budget = new RowBudget(limit);
    let sawWaiting = false;
    const failures: string[] = [];
    const s = await f.syncAll({
      rowBudget: budget,
      concurrency: 16,
      onAccount: (o) => {
        sawWaiting ||= budget.waiting > 0;
        if (o.error) failures.push(`${o.accountId}: ${o.error.message}`);
      },
    });
    expect(failures).toEqual([]);
    expect(s.changed).toBe(40);
    expect(await f.diffAll()).toEqual([]);
    // 16 accounts of 1,000–3,000 friends at once would hold far more without the budget.
    expect(budget.peak).toBeLessThanOrEqual(limit + mostFriends(f));
    expect(sawWaiting).toBe(true);
    expect(drained(budget)).toEqual(EMPTY);
  });

  it('unchanged accounts still cost one call each, and hold nothing afterwards', async () => {
    const budget = new RowBudget(5_000);
    f.sim.clearCalls();
    const s = await f.syncAll({ rowBudget: budget, concurrency: 16 });
    expect(s.unchanged).toBe(40);
    expect(s.calls).toBe(40);
    expect(drained(budget)).toEqual(EMPTY);
  });
});
