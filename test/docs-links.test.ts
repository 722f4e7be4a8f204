/**
 * The documentation is split by audience (README.md, docs/, CONTRIBUTING.md, BENCHMARKS.md) and
 * links across files and to headings. A moved section or a renamed heading must not leave a link
 * that goes nowhere: every relative link names a file or directory that exists, and every `#anchor`
 * names a heading of the file it points to (GitHub's anchors: lower case, punctuation dropped,
 * spaces to hyphens).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** The markdown files whose links are checked, relative to the repository root. */
function docFiles(): string[] {
  const docs = readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`);
  return ['README.md', 'CONTRIBUTING.md', 'BENCHMARKS.md', ...docs];
}

/** The text outside fenced code blocks and inline code, where links and headings live. */
function prose(markdown: string): string {
  return markdown
    .replace(/^```[\s\S]*?^```/gm, '')
    .replace(/`[^`\n]*`/g, (code) => code.replace(/[[\]()]/g, ' '));
}

/** GitHub's anchor for a heading's text. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** The anchors of a markdown file's headings; a repeated heading gets `-1`, `-2`, … as on GitHub. */
function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  const text = markdown.replace(/^```[\s\S]*?^```/gm, '');
  for (const m of text.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const base = slug(m[1]!.replace(/`/g, ''));
    let name = base;
    for (let n = 1; out.has(name); n++) name = `${base}-${n}`;
    out.add(name);
  }
  return out;
}

/** Every `[text](target)` link of a markdown file that is not an absolute URL. */
function relativeLinks(markdown: string): string[] {
  const out: string[] = [];
  for (const m of prose(markdown).matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
    const target = m[1]!;
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
    out.push(target);
  }
  return out;
}

/** What is wrong with one link of `file`, or null when it resolves. */
function broken(file: string, target: string): string | null {
  const [path = '', anchor] = target.split('#', 2);
  const dest = path === '' ? join(ROOT, file) : join(ROOT, dirname(file), decodeURIComponent(path));
  if (!existsSync(dest)) return `${file}: ${target}: no such file`;
  if (anchor === undefined) return null;
  if (statSync(dest).isDirectory() || !dest.endsWith('.md'))
    return `${file}: ${target}: anchor on a non-markdown target`;
  if (!anchors(readFileSync(dest, 'utf8')).has(decodeURIComponent(anchor)))
    return `${file}: ${target}: no heading #${anchor} in ${relative(ROOT, dest)}`;
  return null;
}

describe('documentation links', () => {
  it('computes GitHub anchors and finds links (the check itself works)', () => {
    expect(slug('Tables (schema `tim`)'.replace(/`/g, ''))).toBe('tables-schema-tim');
    expect(slug('Rate limit and the call thread')).toBe('rate-limit-and-the-call-thread');
    expect(slug('Replicas, leases and the shared budget')).toBe('replicas-leases-and-the-shared-budget');
    expect([...anchors('# A\n## B\n```\n## C\n```\n## B\n')]).toEqual(['a', 'b', 'b-1']);
    expect(relativeLinks('[x](a.md#b) [y](https://e.com) `[z](c.md)` [w](#top)')).toEqual(['a.md#b', '#top']);
    expect(broken('README.md', 'docs/no-such-file.md')).toMatch(/no such file/);
    expect(broken('README.md', 'docs/operations.md#no-such-heading')).toMatch(/no heading/);
    expect(broken('README.md', '#configuration')).toBeNull();
  });

  it('every relative link in README.md, docs/, CONTRIBUTING.md and BENCHMARKS.md resolves', () => {
    const files = docFiles();
    expect(files).toEqual(
      expect.arrayContaining(['docs/operations.md', 'docs/how-it-works.md', 'docs/analytics.md']),
    );
    const problems: string[] = [];
    let links = 0;
    for (const file of files) {
      for (const target of relativeLinks(readFileSync(join(ROOT, file), 'utf8'))) {
        links++;
        const problem = broken(file, target);
        if (problem) problems.push(problem);
      }
    }
    expect(links).toBeGreaterThan(20);
    expect(problems).toEqual([]);
  });
});
