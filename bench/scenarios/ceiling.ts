/**
 * The database ceiling: the same friend and tag rows written by the mirror's apply path
 * (`FriendWriter.apply`, one transaction per account) and by plain `COPY` into identical tables (same
 * columns, defaults, indexes and foreign keys), in the same database, one connection each. The
 * ratio says how much headroom the write path has.
 *
 * The rows are the simulator's: the same generator and seed as the sweep, turned into snapshots by
 * the mirror's own decoder and `rowsOf`, so nothing here is shaped differently from a sync.
 */
import { type Kysely, sql } from 'kysely';
import pLimit from 'p-limit';
import type pg from 'pg';
import { addAccounts } from '../../src/db/accounts.js';
import { CopyTextWriter, copyIn, FRIEND_COPY_COLUMNS, TAG_COPY_COLUMNS } from '../../src/db/copy.js';
import { FriendWriter } from '../../src/db/friend-writer.js';
import { migrateToLatest } from '../../src/db/migrate.js';
import { createDb } from '../../src/db/pool.js';
import type { Database } from '../../src/db/schema.js';
import type { AccountSnapshot } from '../../src/db/snapshot-types.js';
import { buildPage, type FriendStore, generateApp } from '../../src/simulator/index.js';
import { rowsOf } from '../../src/sync/snapshot.js';
import { decodeFriendGetResponse } from '../../src/tim/friend-get.js';
import { createScratchDatabase, withClient } from '../lib/postgres.js';
import { watchCpu } from '../lib/proc.js';

/** Settings of the ceiling measurement. */
export interface CeilingSettings {
  accounts: number;
  meanFriends: number;
  maxFriends: number;
  seed: number;
  /** Connections (and accounts at once) of the parallel apply: the mirror's pool. */
  parallel: number;
  /**
   * SQL run on the scratch database before anything is written, to measure a schema change
   * (e.g. dropping a foreign key) without a migration.
   */
  schemaChange?: string;
  say: (line: string) => void;
}

/** One timed write of all rows. */
export interface WriteTiming {
  ms: number;
  rows: number;
  rowsPerSecond: number;
  /**
   * CPU seconds used by the database's backends and by this (the client) process. On a shared
   * machine wall time moves with the neighbours' load; CPU time per row hardly does.
   */
  postgresCpuSeconds: number;
  clientCpuSeconds: number;
}

/** What the ceiling scenario measured. */
export interface CeilingResult {
  settings: CeilingSettings;
  accounts: number;
  friendRows: number;
  tagRows: number;
  /** FriendWriter.apply, one account after another on one connection, into empty tables. */
  apply: WriteTiming;
  /** COPY friends, then COPY friend_tags, one connection, into empty identical tables. */
  copy: WriteTiming;
  /** FriendWriter.apply, `parallel` accounts at once on a pool of `parallel`, into empty tables. */
  applyParallel: WriteTiming;
  /** FriendWriter.apply again with forgotten sequences and unchanged data (`resync --full`): rows checked/s. */
  reapplyUnchanged: WriteTiming & { rowsWritten: number };
  /** apply rows/s ÷ COPY rows/s (wall time, one connection each). */
  ratio: number;
  /** The same ratio in rows per Postgres CPU-second: what each row costs the server. */
  cpuRatio: number;
}

/** Turns one account of the store into the snapshot a first sync would apply. */
export function snapshotFor(store: FriendStore, accountId: string): AccountSnapshot {
  const page = buildPage(
    store,
    { accountId, offset: 0 },
    { pageSize: Number.MAX_SAFE_INTEGER, reading: 'empty-value-item' },
  )!;
  const body = JSON.stringify({
    UserDataItem: page.items,
    StandardSequence: page.standardSequence,
    CustomSequence: page.customSequence,
    FriendNum: page.friendNum,
    CompleteFlag: 1,
    NextStartIndex: 0,
    ActionStatus: 'OK',
    ErrorCode: 0,
    ErrorInfo: '',
    ErrorDisplay: '',
  });
  const decoded = decodeFriendGetResponse(body);
  const rows = rowsOf(decoded.items);
  return {
    accountId,
    // A first sync, as the sweep's: the apply takes its COPY path.
    baseStandardSequence: null,
    baseCustomSequence: null,
    neverSynced: true,
    standardSequence: decoded.standardSequence,
    customSequence: decoded.customSequence,
    standard: { friends: rows.friends, tags: rows.standardTags },
    custom: { tags: rows.customTags },
  };
}

/** Times `work`, with the CPU it cost Postgres (backends of `database`) and this process. */
async function timed(database: string, rows: number, work: () => Promise<unknown>): Promise<WriteTiming> {
  const cpu = watchCpu({}, database, 1);
  const client0 = process.cpuUsage();
  const started = performance.now();
  await work();
  const ms = performance.now() - started;
  const client = process.cpuUsage(client0);
  const used = cpu.stop();
  return {
    ms,
    rows,
    rowsPerSecond: rows / (ms / 1000),
    postgresCpuSeconds: used.postgres * used.seconds,
    clientCpuSeconds: (client.user + client.system) / 1e6,
  };
}

/** Runs the ceiling measurement on a fresh database. */
export async function runCeiling(adminUrl: string, s: CeilingSettings): Promise<CeilingResult> {
  s.say(`database ceiling: generating ${s.accounts} accounts …`);
  const store = generateApp({
    accounts: s.accounts,
    meanFriends: s.meanFriends,
    maxFriends: s.maxFriends,
    seed: s.seed,
  });
  const ids = store.accountIds();
  const snaps = ids.map((id) => snapshotFor(store, id));
  let friendRows = 0;
  let tagRows = 0;
  for (const snap of snaps) {
    friendRows += snap.standard?.friends.length ?? 0;
    tagRows += (snap.standard?.tags.length ?? 0) + (snap.custom?.tags.length ?? 0);
  }
  const rows = friendRows + tagRows;

  // Each measurement gets a fresh database: after a TRUNCATE of analysed tables, Postgres caches
  // foreign-key check plans made for near-empty tables and the next load runs several times slower,
  // which would measure the planner rather than the write path.
  const fresh = async <T>(
    label: string,
    connections: number,
    work: (db: Kysely<Database>, name: string) => Promise<T>,
  ) => {
    const scratch = await createScratchDatabase(adminUrl, `ceiling_${label}`);
    const db = createDb(scratch.url, { maxConnections: connections });
    try {
      await migrateToLatest(db);
      if (s.schemaChange) await sql.raw(s.schemaChange).execute(db);
      await addAccounts(db, ids);
      await sql`VACUUM ANALYZE tim.accounts`.execute(db);
      await sql`CHECKPOINT`.execute(db);
      return await work(db, scratch.name);
    } finally {
      await db.destroy();
      await scratch.drop();
    }
  };

  s.say(
    `database ceiling: FriendWriter.apply, ${ids.length} accounts one after another, then again unchanged …`,
  );
  const [apply, reapplyUnchanged] = await fresh('apply', 1, async (db, name) => {
    const writer = new FriendWriter(db);
    const first = await timed(name, rows, async () => {
      for (const snap of snaps) await writer.apply(snap);
    });
    // `resync --full`: the sequences are forgotten, the data is the same.
    await sql`UPDATE tim.accounts SET standard_sequence = NULL, custom_sequence = NULL`.execute(db);
    await sql`VACUUM ANALYZE tim.accounts, tim.friends, tim.friend_tags`.execute(db);
    await sql`CHECKPOINT`.execute(db);
    let rowsWritten = 0;
    const again = await timed(name, rows, async () => {
      for (const snap of snaps) {
        // As a `resync --full` pulls it: from no sequences, onto an account synced before.
        const r = await writer.apply({ ...snap, neverSynced: false });
        rowsWritten += r.friendsUpserted + r.friendsDeleted + r.tagsUpserted + r.tagsDeleted;
      }
    });
    return [first, { ...again, rowsWritten }] as const;
  });

  s.say('database ceiling: COPY of the same rows …');
  const copy = await fresh('copy', 1, async (db, name) => {
    await createCopyTables(db);
    await sql`CHECKPOINT`.execute(db);
    return withClient(urlOf(adminUrl, name), (c) => timed(name, rows, () => copyRows(c, snaps)));
  });

  s.say(`database ceiling: FriendWriter.apply, ${s.parallel} accounts at once …`);
  const applyParallel = await fresh('parallel', s.parallel, (db, name) => {
    const limit = pLimit(s.parallel);
    const writer = new FriendWriter(db);
    return timed(name, rows, () => Promise.all(snaps.map((snap) => limit(() => writer.apply(snap)))));
  });

  return {
    settings: s,
    accounts: ids.length,
    friendRows,
    tagRows,
    apply,
    copy,
    applyParallel,
    reapplyUnchanged,
    ratio: apply.rowsPerSecond / copy.rowsPerSecond,
    cpuRatio: copy.postgresCpuSeconds / apply.postgresCpuSeconds,
  };
}

/** The URL of database `name` on the server of `adminUrl`. */
function urlOf(adminUrl: string, name: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * `bench_copy.{accounts,friends,friend_tags}`: the mirror's tables column for column, with their
 * defaults, checks and indexes (LIKE … INCLUDING ALL), and the same foreign keys, pointed at the
 * copies (LIKE does not copy those). Read from the catalog, so a measured schema change carries over.
 */
async function createCopyTables(db: Kysely<Database>): Promise<void> {
  await sql`CREATE SCHEMA bench_copy`.execute(db);
  for (const table of ['accounts', 'friends', 'friend_tags']) {
    await sql.raw(`CREATE TABLE bench_copy.${table} (LIKE tim.${table} INCLUDING ALL)`).execute(db);
  }
  const fks = await sql<{ tbl: string; def: string }>`
    SELECT c.conrelid::regclass::text AS tbl, pg_get_constraintdef(c.oid) AS def
    FROM pg_constraint c
    WHERE c.contype = 'f' AND c.conrelid IN ('tim.friends'::regclass, 'tim.friend_tags'::regclass)`.execute(
    db,
  );
  for (const fk of fks.rows) {
    const table = fk.tbl.replace(/^tim\./, 'bench_copy.');
    const def = fk.def.replace(/REFERENCES tim\./g, 'REFERENCES bench_copy.');
    await sql.raw(`ALTER TABLE ${table} ADD ${def}`).execute(db);
  }
  await sql`INSERT INTO bench_copy.accounts SELECT * FROM tim.accounts`.execute(db);
}

/**
 * Copies every friend, then every tag, each in ONE `COPY` (the mirror copies per account), with the
 * mirror's own encoders, so the two sides differ only in how the rows reach Postgres.
 */
async function copyRows(c: pg.Client, snaps: readonly AccountSnapshot[]): Promise<void> {
  const writer = new CopyTextWriter();
  for (const s of snaps) writer.friends(s.accountId, s.standard?.friends ?? []);
  await copyIn(c, `COPY bench_copy.friends ${FRIEND_COPY_COLUMNS} FROM STDIN`, [writer.take()]);
  for (const s of snaps) {
    writer.tags(s.accountId, s.standard?.tags ?? [], 'standard');
    writer.tags(s.accountId, s.custom?.tags ?? [], 'custom');
  }
  const tags = [writer.take()];
  await copyIn(c, `COPY bench_copy.friend_tags ${TAG_COPY_COLUMNS} FROM STDIN`, tags);
}
