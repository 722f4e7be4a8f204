/**
 * Every setting is documented where operators look: the README's configuration table and
 * `.env.sample`; and nothing is documented that the code does not read. The list of settings is
 * what the source reads: `src/config.ts` for the mirror, plus the simulator's and the demo's own
 * variables read by their commands (those belong in `.env.sample`, and in the simulator table of
 * CONTRIBUTING.md's "## Simulator" section rather than the README's configuration table).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const NAME = '[A-Z][A-Z0-9_]{2,}';
/** `str(env, 'X')`-style helpers, `env.X`, `env['X']`, `process.env['X']`. */
const READ = new RegExp(
  `\\(\\s*(?:ctx\\.)?env,\\s*'(${NAME})'|\\benv\\.(${NAME})\\b|\\benv\\['(${NAME})'\\]`,
  'g',
);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sourceFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function readNames(files: string[]): Set<string> {
  const out = new Set<string>();
  for (const f of files) {
    for (const m of readFileSync(f, 'utf8').matchAll(READ)) out.add((m[1] ?? m[2] ?? m[3])!);
  }
  return out;
}

/** Variable names in the first column of the tables of section `## <heading>` of a markdown file. */
function docTable(file: string, heading: string): Set<string> {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const start = text.indexOf(`\n## ${heading}\n`);
  expect(start, `${file} has a "## ${heading}" section`).toBeGreaterThan(-1);
  const end = text.indexOf('\n## ', start + 1);
  const section = text.slice(start, end === -1 ? undefined : end);
  const out = new Set<string>();
  for (const line of section.split('\n')) {
    if (!line.startsWith('| `')) continue;
    const first = line.split('|')[1] ?? '';
    for (const m of first.matchAll(new RegExp(`\`(${NAME})\``, 'g'))) out.add(m[1]!);
  }
  return out;
}

/** Names assigned in `.env.sample`, set or commented out (`X=...` or `#X=...`). */
function envSample(): Set<string> {
  const text = readFileSync(join(ROOT, '.env.sample'), 'utf8');
  return new Set([...text.matchAll(new RegExp(`^#?\\s?(${NAME})=`, 'gm'))].map((m) => m[1]!));
}

const sorted = (s: Iterable<string>) => [...s].sort();
const minus = (a: Set<string>, b: Set<string>) => sorted([...a].filter((x) => !b.has(x)));

describe('settings are documented, and only real ones', () => {
  const config = readNames([join(ROOT, 'src/config.ts')]);
  const everywhere = readNames(sourceFiles(join(ROOT, 'src')));
  const table = docTable('README.md', 'Configuration');
  const simTable = docTable('CONTRIBUTING.md', 'Simulator');
  const sample = envSample();

  it('finds the settings (the scan itself works)', () => {
    for (const name of ['DATABASE_URL', 'TIM_SDKAPPID', 'SYNC_INTERVAL', 'ADMIN_TOKEN']) {
      expect(config.has(name), name).toBe(true);
      expect(table.has(name), name).toBe(true);
      expect(sample.has(name), name).toBe(true);
    }
    expect(everywhere.has('SIM_ACCOUNTS')).toBe(true);
    expect(simTable.has('SIM_ACCOUNTS')).toBe(true);
  });

  it("the README's configuration table lists everything src/config.ts reads, and only real settings", () => {
    // The simulator's settings have a table of their own, in CONTRIBUTING.md's simulator section.
    const mirror = new Set([...config].filter((n) => !n.startsWith('SIM_')));
    expect(minus(mirror, table), 'read by src/config.ts, missing from the README table').toEqual([]);
    expect(minus(table, everywhere), 'in the README table, read nowhere in src/').toEqual([]);
  });

  it("CONTRIBUTING.md's simulator table lists every SIM_ variable the source reads, and only real ones", () => {
    const simulator = new Set([...everywhere].filter((n) => n.startsWith('SIM_')));
    expect(
      minus(simulator, simTable),
      'read in src/, missing from the CONTRIBUTING.md simulator table',
    ).toEqual([]);
    expect(
      minus(simTable, everywhere),
      'in the CONTRIBUTING.md simulator table, read nowhere in src/',
    ).toEqual([]);
  });

  it('.env.sample lists everything the source reads, and nothing else', () => {
    expect(minus(everywhere, sample), 'read in src/, missing from .env.sample').toEqual([]);
    expect(minus(sample, everywhere), 'in .env.sample, read nowhere in src/').toEqual([]);
  });
});
