/**
 * The metrics module: observed events become labelled series, scrape-time gauges come from their
 * sources, the accounts summary is cached and may fail without failing the scrape, and every
 * instance has its own registry.
 */
import { describe, expect, it } from 'vitest';
import { type AccountsSummary, createMetrics } from '../src/metrics.js';
import type { AccountSyncOutcome } from '../src/sync/account-sync.js';

/** The value of one sample line (`name{labels} value`) of a text exposition, or undefined. */
function sample(body: string, series: string): number | undefined {
  const line = body.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const summary = (byStatus: Record<string, number>, lagSeconds: number): AccountsSummary => ({
  byStatus,
  lagSeconds,
});

describe('createMetrics', () => {
  it('counts calls by api, outcome and error code, and times them', async () => {
    const m = createMetrics();
    m.observeCall({ api: 'friend_get', durationMs: 40, outcome: 'ok' });
    m.observeCall({ api: 'friend_get', durationMs: 120, outcome: 'ok' });
    m.observeCall({ api: 'friend_get', durationMs: 3000, outcome: 'TIM_ERR_API', errorCode: 30006 });
    const { contentType, body } = await m.render();
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(sample(body, 'tim_mirror_calls_total{api="friend_get",outcome="ok",error_code=""}')).toBe(2);
    expect(
      sample(body, 'tim_mirror_calls_total{api="friend_get",outcome="TIM_ERR_API",error_code="30006"}'),
    ).toBe(1);
    expect(sample(body, 'tim_mirror_call_duration_seconds_bucket{le="0.05",api="friend_get"}')).toBe(1);
    expect(sample(body, 'tim_mirror_call_duration_seconds_bucket{le="0.25",api="friend_get"}')).toBe(2);
    expect(sample(body, 'tim_mirror_call_duration_seconds_bucket{le="10",api="friend_get"}')).toBe(3);
    expect(sample(body, 'tim_mirror_call_duration_seconds_sum{api="friend_get"}')).toBeCloseTo(3.16);
  });

  it('counts account syncs by result, their duration and the rows they wrote', async () => {
    const m = createMetrics();
    const outcome = (o: Partial<AccountSyncOutcome>): AccountSyncOutcome => ({
      accountId: 'alice',
      result: 'unchanged',
      calls: 1,
      friendsWritten: 0,
      tagsWritten: 0,
      durationMs: 30,
      ...o,
    });
    m.observeAccount(outcome({}));
    m.observeAccount(outcome({ result: 'changed', friendsWritten: 12, tagsWritten: 5, durationMs: 900 }));
    m.observeAccount(outcome({ result: 'failed', error: new Error('boom') }));
    const { body } = await m.render();
    expect(sample(body, 'tim_mirror_account_syncs_total{result="unchanged"}')).toBe(1);
    expect(sample(body, 'tim_mirror_account_syncs_total{result="changed"}')).toBe(1);
    expect(sample(body, 'tim_mirror_account_syncs_total{result="failed"}')).toBe(1);
    expect(sample(body, 'tim_mirror_account_sync_duration_seconds_count')).toBe(3);
    expect(sample(body, 'tim_mirror_friend_rows_written_total')).toBe(12);
    expect(sample(body, 'tim_mirror_tag_rows_written_total')).toBe(5);
    // Account ids are never labels.
    expect(body).not.toContain('alice');
  });

  it('sets the ready gauge and exports the default process metrics with the prefix', async () => {
    const m = createMetrics();
    expect(sample((await m.render()).body, 'tim_mirror_ready')).toBe(0);
    m.setReady(true);
    const { body } = await m.render();
    expect(sample(body, 'tim_mirror_ready')).toBe(1);
    expect(body).toContain('tim_mirror_process_cpu_user_seconds_total');
    expect(body).toContain('tim_mirror_nodejs_heap_size_used_bytes');
  });

  it('computes the limiter and accounts gauges at scrape time', async () => {
    let now = 0;
    let queued = 7;
    let current = summary({ ok: 3, failing: 1 }, 42);
    const m = createMetrics({
      collectAccounts: async () => current,
      limiterQueue: () => queued,
      now: () => now,
    });
    let { body } = await m.render();
    expect(sample(body, 'tim_mirror_limiter_queue_depth')).toBe(7);
    expect(sample(body, 'tim_mirror_accounts{status="ok"}')).toBe(3);
    expect(sample(body, 'tim_mirror_accounts{status="failing"}')).toBe(1);
    expect(sample(body, 'tim_mirror_sync_lag_seconds')).toBe(42);
    expect(sample(body, 'tim_mirror_metrics_collect_errors_total{source="accounts"}')).toBe(0);

    queued = 0;
    current = summary({ ok: 4 }, 0);
    now += 5_000;
    ({ body } = await m.render());
    expect(sample(body, 'tim_mirror_limiter_queue_depth')).toBe(0);
    expect(sample(body, 'tim_mirror_accounts{status="ok"}')).toBe(4);
    // A status that no account has any more is dropped, not left at its old count.
    expect(sample(body, 'tim_mirror_accounts{status="failing"}')).toBeUndefined();
    expect(sample(body, 'tim_mirror_sync_lag_seconds')).toBe(0);
  });

  it('counts "too frequent" complaints by verdict, as the limiter counted them', async () => {
    const counts = { slips: 0, slowDowns: 0 };
    const m = createMetrics({ rateComplaints: () => counts });
    const slip = 'tim_mirror_rate_complaints_total{verdict="slip"}';
    const slowdown = 'tim_mirror_rate_complaints_total{verdict="slowdown"}';
    let body = (await m.render()).body;
    expect(sample(body, slip)).toBe(0);
    expect(sample(body, slowdown)).toBe(0);
    counts.slips = 3;
    counts.slowDowns = 2;
    body = (await m.render()).body;
    expect(sample(body, slip)).toBe(3);
    expect(sample(body, slowdown)).toBe(2);
  });

  it('leaves out gauges whose source was not given, rather than reporting a made-up 0', async () => {
    const { body } = await createMetrics().render();
    expect(body).not.toContain('tim_mirror_rate_complaints_total');
    expect(body).not.toContain('tim_mirror_limiter_queue_depth');
    expect(body).not.toContain('tim_mirror_accounts');
    expect(body).not.toContain('tim_mirror_sync_lag_seconds');
  });

  it('asks collectAccounts at most once per 5 s, one call serving every gauge and concurrent scrapes', async () => {
    let now = 1_000;
    let calls = 0;
    const m = createMetrics({
      collectAccounts: async () => {
        calls++;
        await new Promise((r) => setTimeout(r, 10));
        return summary({ ok: calls }, calls);
      },
      now: () => now,
    });
    await Promise.all([m.render(), m.render(), m.render()]);
    expect(calls).toBe(1);
    now += 4_999;
    const { body } = await m.render();
    expect(calls).toBe(1);
    expect(sample(body, 'tim_mirror_accounts{status="ok"}')).toBe(1);
    now += 1;
    const second = await m.render();
    expect(calls).toBe(2);
    expect(sample(second.body, 'tim_mirror_accounts{status="ok"}')).toBe(2);
    expect(sample(second.body, 'tim_mirror_sync_lag_seconds')).toBe(2);
  });

  it('keeps the last values and counts an error when collectAccounts fails, throws or hangs', async () => {
    let now = 0;
    let mode: 'ok' | 'reject' | 'throw' | 'hang' = 'ok';
    const m = createMetrics({
      collectAccounts: () => {
        if (mode === 'throw') throw new Error('sync throw');
        if (mode === 'reject') return Promise.reject(new Error('connection refused'));
        if (mode === 'hang') return new Promise<never>(() => {});
        return Promise.resolve(summary({ ok: 9, pending: 2 }, 17));
      },
      collectTimeoutMs: 50,
      now: () => now,
    });
    await m.render();
    let errors = 0;
    for (const next of ['reject', 'throw', 'hang'] as const) {
      mode = next;
      now += 5_000;
      const { body } = await m.render();
      errors++;
      expect(sample(body, 'tim_mirror_metrics_collect_errors_total{source="accounts"}'), next).toBe(errors);
      expect(sample(body, 'tim_mirror_accounts{status="ok"}'), next).toBe(9);
      expect(sample(body, 'tim_mirror_accounts{status="pending"}'), next).toBe(2);
      expect(sample(body, 'tim_mirror_sync_lag_seconds'), next).toBe(17);
    }
    // A failure is cached like a success: a database that is down is not asked on every scrape.
    const { body } = await m.render();
    expect(sample(body, 'tim_mirror_metrics_collect_errors_total{source="accounts"}')).toBe(3);
  });

  it('survives a throwing limiterQueue', async () => {
    const m = createMetrics({
      limiterQueue: () => {
        throw new Error('stopped');
      },
    });
    const { body } = await m.render();
    expect(sample(body, 'tim_mirror_metrics_collect_errors_total{source="limiter"}')).toBe(1);
  });

  it('exports every account sync result from the start, so increase() over a quiet window is 0', async () => {
    const { body } = await createMetrics().render();
    for (const result of ['unchanged', 'changed', 'missing', 'failed'])
      expect(sample(body, `tim_mirror_account_syncs_total{result="${result}"}`), result).toBe(0);
  });

  it('times the apply of changed accounts only', async () => {
    const m = createMetrics();
    const base = { accountId: 'a', calls: 1, friendsWritten: 0, tagsWritten: 0, durationMs: 900 };
    m.observeAccount({ ...base, result: 'changed', applyMs: 40 });
    m.observeAccount({ ...base, result: 'unchanged' });
    const { body } = await m.render();
    expect(sample(body, 'tim_mirror_apply_duration_seconds_count')).toBe(1);
    expect(sample(body, 'tim_mirror_apply_duration_seconds_bucket{le="0.025"}')).toBe(0);
    expect(sample(body, 'tim_mirror_apply_duration_seconds_bucket{le="0.05"}')).toBe(1);
  });

  it("exports the call budget, this replica's share, the replicas and SYNC_INTERVAL, read at scrape time", async () => {
    let share = 0;
    const m = createMetrics({
      budget: () => ({ limitPerSecond: 200, sharePerSecond: share, replicas: 2 }),
      syncIntervalSeconds: 3600,
    });
    let { body } = await m.render();
    expect(sample(body, 'tim_mirror_call_budget_per_second')).toBe(200);
    expect(sample(body, 'tim_mirror_call_share_per_second')).toBe(0);
    expect(sample(body, 'tim_mirror_replicas')).toBe(2);
    expect(sample(body, 'tim_mirror_sync_interval_seconds')).toBe(3600);
    share = 100;
    ({ body } = await m.render());
    expect(sample(body, 'tim_mirror_call_share_per_second')).toBe(100);
    // Without their sources they are left out.
    ({ body } = await createMetrics().render());
    expect(body).not.toContain('tim_mirror_call_share_per_second');
    expect(body).not.toContain('tim_mirror_sync_interval_seconds');
  });

  it('gives each instance its own registry, so instances never clash', async () => {
    const a = createMetrics();
    const b = createMetrics();
    const c = createMetrics({ prefix: 'other_' });
    expect(a.registry).not.toBe(b.registry);
    a.observeCall({ api: 'friend_get', durationMs: 5, outcome: 'ok' });
    const [ra, rb, rc] = await Promise.all([a.render(), b.render(), c.render()]);
    expect(sample(ra.body, 'tim_mirror_calls_total{api="friend_get",outcome="ok",error_code=""}')).toBe(1);
    expect(
      sample(rb.body, 'tim_mirror_calls_total{api="friend_get",outcome="ok",error_code=""}'),
    ).toBeUndefined();
    expect(rc.body).toContain('other_calls_total');
    expect(rc.body).toContain('other_process_cpu_user_seconds_total');
    expect(rc.body).not.toContain('tim_mirror_');
  });
});
