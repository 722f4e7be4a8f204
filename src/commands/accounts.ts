/**
 * `friend-mirror accounts add|import|remove|list`.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { Kysely } from 'kysely';
import { accountIdProblem } from '../account-id.js';
import { ACCOUNT_BATCH_SIZE, addAccounts, listAccounts, removeAccounts } from '../db/accounts.js';
import type { Database } from '../db/schema.js';
import { type CommandContext, EXIT, UsageError } from './context.js';
import { formatEta } from './progress-line.js';

/** `accounts add <id...>`: adds ids; bad ones are reported and skipped. */
export async function accountsAdd(ctx: CommandContext, db: Kysely<Database>, ids: string[]): Promise<number> {
  if (ids.length === 0) throw new UsageError('accounts add needs at least one id');
  const good: string[] = [];
  let bad = 0;
  for (const [i, id] of ids.entries()) {
    const problem = accountIdProblem(id);
    if (problem) {
      bad++;
      ctx.out(`argument ${i + 1}: id ${JSON.stringify(id)} ${problem}; skipped`);
    } else good.push(id);
  }
  const added = await addAccounts(db, good);
  ctx.out(`added ${added} account(s), ${good.length - added} already present, ${bad} rejected`);
  return bad > 0 ? EXIT.failed : EXIT.ok;
}

/** Totals of an import. */
export interface ImportReport {
  lines: number;
  added: number;
  alreadyPresent: number;
  rejected: number;
  duplicates: number;
}

/**
 * `accounts import <file|->`: one id per line, streamed in batches, so millions are fine.
 * Empty lines, invalid ids and ids repeated within the input are reported by line number and
 * skipped; the rest are imported. A trailing CR (Windows line ends) is dropped; any other
 * whitespace is part of the id.
 */
export async function accountsImport(
  ctx: CommandContext,
  db: Kysely<Database>,
  source: string,
): Promise<number> {
  const file = source === '-' ? undefined : createReadStream(source, { encoding: 'utf8' });
  const input = file ?? ctx.stdin;
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
  const report: ImportReport = { lines: 0, added: 0, alreadyPresent: 0, rejected: 0, duplicates: 0 };
  const started = performance.now();
  // A file's size gives the progress line a share and an ETA; stdin has neither.
  const size =
    ctx.progress && file
      ? await stat(source).then(
          (s) => s.size,
          () => 0,
        )
      : 0;
  const showProgress = () => {
    ctx.progress?.update(
      importProgressText(report, performance.now() - started, file && { read: file.bytesRead, total: size }),
    );
  };
  // Remembers ids of this input to report repeats; 1M ids of ≤32 bytes is well under 100 MB.
  const seen = new Set<string>();
  let batch: string[] = [];
  const flush = async () => {
    const added = await addAccounts(db, batch);
    report.added += added;
    report.alreadyPresent += batch.length - added;
    batch = [];
  };
  try {
    for await (const raw of lines) {
      report.lines++;
      const id = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      const problem = accountIdProblem(id);
      if (problem) {
        report.rejected++;
        ctx.out(
          `line ${report.lines}: ${problem === 'empty' ? 'empty line' : `id ${JSON.stringify(id)} ${problem}`}; skipped`,
        );
        continue;
      }
      if (seen.has(id)) {
        report.duplicates++;
        ctx.out(`line ${report.lines}: id ${JSON.stringify(id)} repeats an earlier line; skipped`);
        continue;
      }
      seen.add(id);
      batch.push(id);
      if (batch.length >= ACCOUNT_BATCH_SIZE) {
        await flush();
        showProgress();
      }
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new UsageError(`cannot read ${source}: no such file`);
    throw err;
  }
  if (batch.length > 0) await flush();
  ctx.progress?.done();
  ctx.out(
    `read ${report.lines} line(s): added ${report.added}, already present ${report.alreadyPresent}, ` +
      `rejected ${report.rejected}, repeated ${report.duplicates}`,
  );
  return report.rejected > 0 ? EXIT.failed : EXIT.ok;
}

/**
 * The terminal's progress line of an import: lines read, their rate, and for a file (whose size is
 * known) the share read and an ETA: `import 120,000 lines · 35% · 52,000 lines/s · ETA 3s`.
 */
export function importProgressText(
  report: ImportReport,
  elapsedMs: number,
  bytes?: { read: number; total: number },
): string {
  const secs = Math.max(elapsedMs / 1000, 0.001);
  const rate = `${Math.round(report.lines / secs).toLocaleString('en-US')} lines/s`;
  const lines = `import ${report.lines.toLocaleString('en-US')} lines`;
  if (!bytes || bytes.total <= 0) return `${lines} · ${rate}`;
  const fraction = Math.min(bytes.read / bytes.total, 1);
  const eta = fraction > 0 ? (secs / fraction) * (1 - fraction) : Number.NaN;
  return `${lines} · ${Math.floor(fraction * 100)}% · ${rate} · ETA ${formatEta(eta)}`;
}

/** `accounts remove <id...>`: stops mirroring; their mirrored friends and tags are deleted. */
export async function accountsRemove(
  ctx: CommandContext,
  db: Kysely<Database>,
  ids: string[],
): Promise<number> {
  if (ids.length === 0) throw new UsageError('accounts remove needs at least one id');
  const removed = await removeAccounts(db, ids);
  ctx.out(
    `removed ${removed} account(s)${removed < ids.length ? `, ${ids.length - removed} were not mirrored` : ''}`,
  );
  return EXIT.ok;
}

/** `accounts list`: tab-separated id, status, friend count, last sync time; ids JSON-quoted when odd. */
export async function accountsList(ctx: CommandContext, db: Kysely<Database>): Promise<number> {
  for await (const page of listAccounts(db)) {
    for (const r of page) {
      // Ids may hold tabs or newlines; quote those so every output line stays one account.
      const id = /[\t\n\r"\\]/.test(r.account_id) ? JSON.stringify(r.account_id) : r.account_id;
      ctx.out(`${id}\t${r.status}\t${r.friend_count}\t${r.last_synced_at?.toISOString() ?? '-'}`);
    }
  }
  return EXIT.ok;
}
