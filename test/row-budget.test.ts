/**
 * The row budget on its own: waiting for room, oldest hold first, the oldest hold never waiting,
 * rows given back on release and on abort, and no deadlock among many holds; plus its setting and
 * its metrics.
 */
import { setImmediate as tick } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_ROW_BUDGET, loadSyncConfig } from '../src/config.js';
import { createMetrics } from '../src/metrics.js';
import { SeededRandom } from '../src/simulator/prng.js';
import { RowBudget } from '../src/sync/row-budget.js';

/** The reservation's state after pending callbacks have run. */
async function settled(p: Promise<void>): Promise<'granted' | 'waiting' | Error> {
  let state: 'granted' | 'waiting' | Error = 'waiting';
  p.then(
    () => {
      state = 'granted';
    },
    (err: Error) => {
      state = err;
    },
  );
  await tick();
  return state;
}

describe('RowBudget', () => {
  it('grants what fits at once and makes the rest wait for room', async () => {
    const budget = new RowBudget(10);
    const a = budget.open();
    const b = budget.open();
    await a.reserve(6);
    const waiting = b.reserve(6);
    expect(await settled(waiting)).toBe('waiting');
    expect(budget.waiting).toBe(1);
    expect(budget.held).toBe(6);
    // The page came in smaller than reserved: the rest is given back, and that is room enough.
    a.set(4);
    expect(await settled(waiting)).toBe('granted');
    expect(budget.held).toBe(10);
    expect(budget.waiting).toBe(0);
    expect(budget.peak).toBe(10);
  });

  it('serves waiters oldest hold first, and no younger hold overtakes an older one that waits', async () => {
    const budget = new RowBudget(10);
    const [h1, h2, h3, h4] = [budget.open(), budget.open(), budget.open(), budget.open()];
    await h1.reserve(8);
    // h3 asks before h2, but h2's hold is older: h2 is served first.
    const p3 = h3.reserve(5);
    const p2 = h2.reserve(5);
    // h4's 1 row would fit, but older holds wait: it queues behind them.
    const p4 = h4.reserve(1);
    expect(await settled(p4)).toBe('waiting');
    expect(budget.waiting).toBe(3);
    const order: string[] = [];
    void p2.then(() => order.push('h2'));
    void p3.then(() => order.push('h3'));
    void p4.then(() => order.push('h4'));
    // Room for h2 only; h3 does not fit, and h4 stays behind it though it would.
    h1.set(4);
    await tick();
    expect(order).toEqual(['h2']);
    expect(budget.held).toBe(9);
    h1.release();
    await tick();
    expect(order).toEqual(['h2', 'h3']);
    h2.release();
    await tick();
    expect(order).toEqual(['h2', 'h3', 'h4']);
    expect(budget.held).toBe(6);
  });

  it('lets the oldest open hold go over the limit, so an account bigger than the budget still syncs', async () => {
    const budget = new RowBudget(100);
    const big = budget.open();
    const next = budget.open();
    await big.reserve(500);
    await big.reserve(500);
    expect(budget.held).toBe(1000);
    const p = next.reserve(1);
    expect(await settled(p)).toBe('waiting');
    big.release();
    // `next` is the oldest open hold now: it proceeds even though it would not have to wait anyway.
    expect(await settled(p)).toBe('granted');
    await next.reserve(700);
    expect(budget.held).toBe(701);
    expect(budget.peak).toBe(1000);
  });

  it('the oldest hold proceeds when it becomes the oldest, even over the limit', async () => {
    const budget = new RowBudget(100);
    const [h1, h2, h3] = [budget.open(), budget.open(), budget.open()];
    await h1.reserve(90);
    const p2 = h2.reserve(500);
    const p3 = h3.reserve(50);
    expect(await settled(p2)).toBe('waiting');
    h1.release();
    expect(await settled(p2)).toBe('granted');
    // h3 is not the oldest, and 500 + 50 is over the limit: it waits for h2.
    expect(await settled(p3)).toBe('waiting');
    h2.release();
    expect(await settled(p3)).toBe('granted');
  });

  it('gives every row back on release, once, and wakes the waiters', async () => {
    const budget = new RowBudget(10);
    const a = budget.open();
    const b = budget.open();
    await a.reserve(10);
    const p = b.reserve(10);
    a.release();
    a.release();
    expect(await settled(p)).toBe('granted');
    expect(budget.held).toBe(10);
    b.release();
    expect(budget.held).toBe(0);
    expect(budget.holds).toBe(0);
    await expect(b.reserve(1)).rejects.toThrow(/after release/);
  });

  it('an abort ends the wait with TIM_ERR_ABORTED, adds nothing, and lets the waiters behind it in', async () => {
    const budget = new RowBudget(10);
    const [h1, h2, h3] = [budget.open(), budget.open(), budget.open()];
    await h1.reserve(8);
    const stop = new AbortController();
    const p2 = h2.reserve(5, stop.signal);
    const p3 = h3.reserve(1);
    expect(await settled(p3)).toBe('waiting');
    stop.abort(new Error('shutdown'));
    const err = await settled(p2);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error & { code?: string }).code).toBe('TIM_ERR_ABORTED');
    expect(await settled(p3)).toBe('granted');
    expect(budget.held).toBe(9);
    expect(h2.rows).toBe(0);
    // Already aborted: refused at once.
    await expect(h2.reserve(1, stop.signal)).rejects.toMatchObject({ code: 'TIM_ERR_ABORTED' });
    expect(budget.waiting).toBe(0);
  });

  it('counts rows that came in over the reservation at once, without waiting', async () => {
    const budget = new RowBudget(10);
    const a = budget.open();
    await a.reserve(5);
    a.set(25);
    expect(budget.held).toBe(25);
    expect(budget.peak).toBe(25);
    const b = budget.open();
    expect(await settled(b.reserve(1))).toBe('waiting');
    a.set(0);
    expect(budget.held).toBe(1);
  });

  it('never deadlocks and stays within limit + one account, with many holds paging at once', async () => {
    const rng = new SeededRandom(18);
    const limit = 1_000;
    const maxAccount = 3_000;
    const budget = new RowBudget(limit);
    let finished = 0;
    const account = async () => {
      const hold = budget.open();
      try {
        let left = 1 + rng.int(maxAccount);
        while (left > 0) {
          const page = Math.min(left, 1 + rng.int(500));
          await hold.reserve(page);
          await tick();
          left -= page;
        }
        await tick();
      } finally {
        hold.release();
      }
      finished++;
    };
    await Promise.all(Array.from({ length: 64 }, account));
    expect(finished).toBe(64);
    expect(budget.held).toBe(0);
    expect(budget.peak).toBeGreaterThan(limit);
    expect(budget.peak).toBeLessThanOrEqual(limit + maxAccount);
  });

  it('refuses a budget below one row', () => {
    expect(() => new RowBudget(0)).toThrow(RangeError);
  });
});

describe('SYNC_ROW_BUDGET', () => {
  it('defaults, takes a number of rows, and 0 or off for no budget', () => {
    expect(loadSyncConfig({}).rowBudget).toBe(DEFAULT_ROW_BUDGET);
    expect(loadSyncConfig({ SYNC_ROW_BUDGET: '5000' }).rowBudget).toBe(5000);
    expect(loadSyncConfig({ SYNC_ROW_BUDGET: '0' }).rowBudget).toBe(0);
    expect(loadSyncConfig({ SYNC_ROW_BUDGET: 'off' }).rowBudget).toBe(0);
  });

  it.each(['lots', '-1', '1.5', '20k'])('rejects %j with a message that says what to set', (raw) => {
    let err: unknown;
    try {
      loadSyncConfig({ SYNC_ROW_BUDGET: raw });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toMatch(/^SYNC_ROW_BUDGET must be a whole number .* or 0\/off/);
    expect((err as ConfigError).message).toContain(JSON.stringify(raw));
  });
});

describe('row budget metrics', () => {
  const sample = (body: string, name: string) =>
    Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(body)?.[1] ?? Number.NaN);

  it('exports the budget, the rows held and the pulls waiting, read at scrape time', async () => {
    const budget = new RowBudget(10);
    const m = createMetrics({ rowBudget: budget });
    const a = budget.open();
    await a.reserve(8);
    const b = budget.open();
    const p = b.reserve(5);
    let { body } = await m.render();
    expect(sample(body, 'tim_mirror_row_budget')).toBe(10);
    expect(sample(body, 'tim_mirror_rows_held')).toBe(8);
    expect(sample(body, 'tim_mirror_pulls_waiting_for_rows')).toBe(1);
    a.release();
    await p;
    ({ body } = await m.render());
    expect(sample(body, 'tim_mirror_rows_held')).toBe(5);
    expect(sample(body, 'tim_mirror_pulls_waiting_for_rows')).toBe(0);
  });

  it('leaves them out without a budget', async () => {
    const { body } = await createMetrics().render();
    expect(body).not.toContain('tim_mirror_rows_held');
    expect(body).not.toContain('tim_mirror_pulls_waiting_for_rows');
  });
});
