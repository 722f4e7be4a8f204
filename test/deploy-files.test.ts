/**
 * The deployment files, checked without a container engine (none runs on CI machines): the compose
 * file parses and wires the services as documented, every variable it sets is one the mirror
 * reads, and the Dockerfile keeps to the steps that make a small, non-root, health-checked image.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadTimConfig } from '../src/config.js';

const root = new URL('..', import.meta.url);
const compose = parse(readFileSync(new URL('docker-compose.yml', root), 'utf8'), { merge: true }) as {
  services: Record<
    string,
    {
      profiles?: string[];
      environment?: Record<string, string>;
      command?: string[];
      entrypoint?: string[];
      ulimits?: Record<string, number>;
    }
  >;
};
const envSample = readFileSync(new URL('.env.sample', root), 'utf8');
const dockerfile = readFileSync(new URL('Dockerfile', root), 'utf8');

describe('docker-compose.yml', () => {
  it('has Postgres always, the app mirror in profile "app", simulator + seed + mirror in profile "demo"', () => {
    const s = compose.services;
    expect(s.postgres?.profiles).toBeUndefined();
    expect(s.mirror?.profiles).toEqual(['app']);
    for (const name of ['simulator', 'seed', 'mirror-demo'])
      expect(s[name]?.profiles, name).toEqual(['demo']);
    expect(s.simulator?.command).toEqual(['simulate']);
    expect(s['mirror-demo']?.environment?.TIM_BASE_URL).toBe('http://simulator:5080');
  });

  it('lets each mirror (not root in the image) take the default nice value of the call thread', () => {
    const wanted = loadTimConfig({ TIM_SDKAPPID: '1400000000', TIM_SECRET_KEY: 'k' }).callThreadNice;
    for (const name of ['mirror', 'mirror-demo']) {
      // RLIMIT_NICE: a process may lower its nice value down to 20 - the limit.
      expect(20 - (compose.services[name]?.ulimits?.nice ?? 0), name).toBeLessThanOrEqual(wanted);
    }
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
