/**
 * The deployment files, checked without a container engine (none runs on CI machines): the compose
 * file parses and wires the services as documented, every variable it sets is one the mirror
 * reads, and the Dockerfile keeps to the steps that make a small, non-root, health-checked image.
 * The monitoring files in deploy/ have the panels and alerts asked for; that their metrics exist is
 * checked against a running daemon in deploy-monitoring.process.test.ts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { interpolate, parseDockerfile } from './fixtures/compose.js';
import { exportedSeriesNames, metricNames, readAlertRules, readDashboard } from './fixtures/monitoring.js';

const root = new URL('..', import.meta.url);
const compose = parse(readFileSync(new URL('docker-compose.yml', root), 'utf8'), { merge: true }) as {
  services: Record<
    string,
    {
      profiles?: string[];
      environment?: Record<string, string>;
      command?: string[];
      entrypoint?: string[];
      ports?: string[];
    }
  >;
};
const composeText = readFileSync(new URL('docker-compose.yml', root), 'utf8');
const envSample = readFileSync(new URL('.env.sample', root), 'utf8');
const dockerfile = readFileSync(new URL('Dockerfile', root), 'utf8');

describe('docker-compose.yml', () => {
  it('has Postgres always, accounts + the app mirror in profile "app", simulator + seed + mirror in profile "demo"', () => {
    const s = compose.services;
    expect(s.postgres?.profiles).toBeUndefined();
    for (const name of ['accounts', 'mirror']) expect(s[name]?.profiles, name).toEqual(['app']);
    expect(s.accounts?.command).toEqual(['accounts', 'import', '/accounts.txt']);
    for (const name of ['simulator', 'seed', 'mirror-demo'])
      expect(s[name]?.profiles, name).toEqual(['demo']);
    expect(s.simulator?.command).toEqual(['simulate']);
    expect(s['mirror-demo']?.environment?.TIM_BASE_URL).toBe('http://simulator:5080');
  });

  it('asks for no OS priority: no service needs a nice ulimit or capability (Kubernetes cannot grant one)', () => {
    expect(composeText).not.toMatch(/\bnice\b|SYS_NICE/);
    // Nor does the mirror ask for one itself.
    const src = new URL('src/', root);
    for (const file of readdirSync(src, { recursive: true, encoding: 'utf8' })) {
      if (!file.endsWith('.ts')) continue;
      expect(readFileSync(new URL(file, src), 'utf8'), file).not.toMatch(/\bsetPriority\b/);
    }
  });

  it('makes no variable required with :? (compose checks those in every service, even of a profile not started)', () => {
    expect(composeText).not.toMatch(/\$\{[A-Za-z_][A-Za-z0-9_]*:?\?/);
  });

  it("publishes the app mirror's admin server on loopback only, with ranges that fit --scale mirror=3", () => {
    const ports = compose.services.mirror?.ports ?? [];
    const parsed = ports.map((p) => {
      const m = /^(?:([\d.]+):)?(\d+)(?:-(\d+))?:(\d+)$/.exec(p);
      if (!m) throw new Error(`unexpected port ${p}`);
      return { ip: m[1], from: Number(m[2]), to: Number(m[3] ?? m[2]), target: Number(m[4]) };
    });
    const admin = parsed.find((p) => p.target === 8080);
    expect(admin?.ip).toBe('127.0.0.1');
    expect(parsed.find((p) => p.target === 8081)).toBeDefined();
    for (const p of parsed) expect(p.to - p.from + 1, `${p.target}`).toBeGreaterThanOrEqual(3);
    // Host ranges must not overlap: a replica could take another port's host port.
    const [a, b] = parsed;
    expect(a!.to < b!.from || b!.to < a!.from).toBe(true);
  });

  it("lets the seeding step into the simulator's control API with the token the simulator has", () => {
    const token = compose.services.simulator?.environment?.SIM_CONTROL_TOKEN;
    expect(token?.length).toBeGreaterThanOrEqual(16);
    expect(compose.services.seed?.environment?.SIM_CONTROL_TOKEN).toBe(token);
  });

  it('sets only variables that are documented in .env.sample', () => {
    for (const [name, svc] of Object.entries(compose.services)) {
      if (name === 'postgres') continue;
      for (const v of Object.keys(svc.environment ?? {})) {
        expect(envSample, `${name}: ${v}`).toMatch(new RegExp(`^#?${v}=`, 'm'));
      }
    }
  });
});

describe('Dockerfile', () => {
  it('builds in its own stage, runs production dependencies as a non-root user, with a health check', () => {
    expect(dockerfile).toMatch(/^FROM node:\d+-bookworm-slim AS build$/m);
    expect(dockerfile).toMatch(/npm ci --omit=dev --omit=optional/);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK .*\n.*\/healthz/m);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "dist\/src\/cli.js"\]$/m);
  });

  it("runs npm ci with --ignore-scripts: the package's `prepare` would build before the sources are copied", () => {
    expect(JSON.parse(readFileSync(new URL('package.json', root), 'utf8')).scripts.prepare).toBeDefined();
    const installs = dockerfile.match(/^RUN npm ci .*$/gm) ?? [];
    expect(installs).toHaveLength(2);
    for (const line of installs) expect(line).toContain('--ignore-scripts');
  });
});

describe('deploy/grafana/friend-mirror.json', () => {
  const dash = readDashboard();

  it('is a Grafana dashboard with a Prometheus datasource variable and job/instance variables', () => {
    expect(dash.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dash.uid).toBe('tim-friend-mirror');
    const vars = Object.fromEntries(dash.templating.list.map((v) => [v.name, v]));
    expect(vars.DS_PROMETHEUS).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(vars.job?.type).toBe('query');
    expect(vars.instance?.type).toBe('query');
  });

  it('has the panels of issue #19, each querying the datasource variable with PromQL', () => {
    const titles = dash.panels.filter((p) => p.type !== 'row').map((p) => p.title);
    for (const t of [
      'Call rate against the quota',
      '60007 and errors by class',
      'Sync lag',
      'Accounts by status',
      'Callback outcomes',
      'Apply latency',
      'Replicas and shares',
    ])
      expect(titles).toContain(t);
    const ids = new Set<number>();
    for (const p of dash.panels) {
      if (p.type === 'row') continue;
      // Grafana's own placeholder syntax, not a template string.
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '$' + '{DS_PROMETHEUS}' });
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) {
        expect(t.datasource, p.title).toEqual(p.datasource);
        expect(t.expr, p.title).toMatch(/tim_mirror_/);
        // Every selector is scoped to the chosen job (and instance, where per replica).
        expect(t.expr, p.title).toMatch(/job=~"\$job"/);
      }
      const { id } = p as unknown as { id: number };
      expect(ids.has(id), `duplicate panel id ${id}`).toBe(false);
      ids.add(id);
    }
  });
});

describe('deploy/prometheus/alerts.yml', () => {
  const rules = readAlertRules().flatMap((g) => g.rules);

  it('has the alerts of issue #19, each with for:, a severity and a summary and description', () => {
    const names = rules.map((r) => r.alert);
    for (const a of [
      'FriendMirrorSweepStopped',
      'FriendMirrorCallRateZero',
      'FriendMirrorSyncLagHigh',
      'FriendMirrorAccountsFailing',
      'FriendMirrorNotReady',
    ])
      expect(names).toContain(a);
    for (const r of rules) {
      expect(r.for, r.alert).toMatch(/^\d+[smh]$/);
      expect(['warning', 'critical'], r.alert).toContain(r.labels?.severity);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
      expect(r.annotations?.description?.length ?? 0, r.alert).toBeGreaterThan(80);
    }
  });

  it('compares the lag with the exported SYNC_INTERVAL, not a hard-coded number', () => {
    const lag = rules.find((r) => r.alert === 'FriendMirrorSyncLagHigh');
    expect(lag?.expr).toMatch(
      /tim_mirror_sync_lag_seconds[\s\S]*>\s*2 \* max by \(job\) \(tim_mirror_sync_interval_seconds\)/,
    );
  });
});

describe('metricNames (PromQL → metric names, for test/deploy-monitoring.process.test.ts)', () => {
  it('keeps metric names and drops functions, aggregations, matchers, ranges, label lists and numbers', () => {
    expect(
      metricNames(
        'histogram_quantile(0.95, sum by (le) (rate(a_seconds_bucket{job=~"$job",x="rate(b)"}[$__rate_interval])))',
      ),
    ).toEqual(['a_seconds_bucket']);
    expect(
      metricNames(
        'sum by (job, instance) (increase(c_total[15m])) == 0 and on (job, instance) d_seconds > 300',
      ).sort(),
    ).toEqual(['c_total', 'd_seconds']);
    expect(metricNames('max by (job) (e) > 2 * max by (job) (f) offset 5m unless absent(g) or 1e3')).toEqual([
      'e',
      'f',
      'g',
    ]);
    expect(metricNames('sum without (result) (h{result="failed"}) / ignoring (result) group_left i')).toEqual(
      ['h', 'i'],
    );
  });

  it('maps the series of a histogram to its family, from the # TYPE lines', () => {
    const names = exportedSeriesNames('# TYPE x_seconds histogram\n# TYPE y_total counter\ny_total 1\n');
    expect(names.get('x_seconds_bucket')).toBe('x_seconds');
    expect(names.get('x_seconds_count')).toBe('x_seconds');
    expect(names.get('y_total')).toBe('y_total');
    expect(names.has('y_total_count')).toBe(false);
  });
});

describe('the compose runner of test/compose.process.test.ts', () => {
  it('interpolates as compose does', () => {
    const vars = { SET: 'v', EMPTY: '' };
    // Compose's $-brace syntax in plain strings, not template placeholders: '{' is spliced in.
    const c = (s: string) => s.replaceAll('$(', '${');
    expect(interpolate(c('$(SET:-d} $(UNSET:-d} $(EMPTY:-d} $(EMPTY-d} $(UNSET-d}'), vars)).toBe('v d d  d');
    expect(interpolate(c('$SET $(SET} $$SET $(UNSET}'), vars)).toBe('v v $SET ');
    expect(interpolate(c('$(EMPTY?m}'), vars)).toBe('');
    expect(() => interpolate(c('$(EMPTY:?say this}'), vars)).toThrow(/EMPTY is missing a value: say this/);
    expect(() => interpolate(c('$(UNSET?m}'), vars)).toThrow(/UNSET/);
  });

  it("reads the image's final stage from the Dockerfile", () => {
    const image = parseDockerfile(dockerfile);
    expect(image.entrypoint).toEqual(['node', 'dist/src/cli.js']);
    expect(image.cmd).toEqual(['run']);
    expect(image.env).toMatchObject({ NODE_ENV: 'production', HTTP_HOST: '0.0.0.0', HTTP_PORT: '8080' });
    expect(image.expose.sort()).toEqual([8080, 8081]);
    expect(image.healthcheck?.test[0]).toBe('CMD');
    expect(image.healthcheck?.intervalMs).toBe(15_000);
  });
});
