/**
 * The apply's first-sync path: COPY in one transaction that writes everything or nothing, and
 * hands accounts that already hold rows to the general path. The rows it writes must be exactly the
 * rows the general path writes, whatever characters the values hold.
 */
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { addAccounts, removeAccounts } from '../src/db/accounts.js';
import { copyRowsOf, EncodedRowsBuilder, jsonRowsOf } from '../src/db/encoded-rows.js';
import { FriendWriter } from '../src/db/friend-writer.js';
import { claimAccount } from '../src/db/leases.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { readMirror } from '../src/db/mirror-read.js';
import { createDb } from '../src/db/pool.js';
import { type AccountSnapshot, SnapshotConflictError } from '../src/db/snapshot-types.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

let database: TestDatabase;
let db: ReturnType<typeof createDb>;
/** The writer every apply of this file goes through, as one process's. */
let writer: FriendWriter;
/**
 * Queries sent to Postgres, seen at the driver (BEGIN and COMMIT included): every query any pg
 * client of this process sends while `counting` is on.
 */
let counting = false;
/** The text of each statement counted, to tell the COPY first sync apart. */
let texts: string[] = [];
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  if (counting) {
    const q = args[0] as string | { text?: string };
    texts.push(typeof q === 'string' ? q : (q?.text ?? ''));
  }
  return (query as (...a: unknown[]) => unknown).apply(this, args);
} as typeof query;

beforeAll(async () => {
  database = await createTestDatabase('apply');
  db = createDb(database.url, { maxConnections: 4 });
  writer = new FriendWriter(db);
  await migrateToLatest(db);
});
afterAll(async () => {
  await db?.destroy();
  await database?.drop();
});
beforeEach(async () => {
  await db.deleteFrom('tim.accounts').execute();
  texts = [];
  counting = false;
});

const copied = () => texts.some((t) => t.startsWith('COPY tim.friends '));

/** Runs `work` with round trips counted. */
async function count<T>(work: () => Promise<T>): Promise<T> {
  counting = true;
  try {
    return await work();
  } finally {
    counting = false;
  }
}

function snapshot(
  accountId: string,
  friendIds: string[],
  base: number | null,
  next: number,
  neverSynced = base === null,
): AccountSnapshot {
  return {
    accountId,
    neverSynced,
    baseStandardSequence: base,
    baseCustomSequence: base,
    standardSequence: next,
    customSequence: next,
    standard: {
      friends: friendIds.map((id) => ({
        friendId: id,
        remark: `remark of ${id}`,
        groups: ['g'],
        addSource: 'AddSource_Type_Web',
        addWording: null,
        addTime: 1_700_000_000,
      })),
      tags: friendIds.map((id) => ({ friendId: id, tag: 'Tag_SNS_IM_Extra', value: { n: 1 } })),
    },
    custom: { tags: friendIds.map((id) => ({ friendId: id, tag: 'Tag_SNS_Custom_c', value: id })) },
  };
}

async function account(id: string) {
  return db.selectFrom('tim.accounts').selectAll().where('account_id', '=', id).executeTakeFirstOrThrow();
}

describe('first sync', () => {
  it('writes friends, tags and sequences by COPY, in one transaction', async () => {
    await addAccounts(db, ['a']);
    const r = await count(() => writer.apply(snapshot('a', ['x', 'y'], null, 5)));
    expect(texts.map((t) => t.trim().split(/\s+/).slice(0, 2).join(' '))).toEqual([
      'BEGIN; SELECT',
      'COPY tim.friends',
      'COPY tim.friend_tags',
      'WITH e',
      'COMMIT',
    ]);
    expect(r).toEqual({
      friendsUpserted: 2,
      friendsDeleted: 0,
      tagsUpserted: 4,
      tagsDeleted: 0,
      friendCount: 2,
      events: 1,
    });
    const events = await db
      .selectFrom('tim.friend_events')
      .select(['kind', 'changed', 'standard_sequence'])
      .execute();
    expect(events).toEqual([{ kind: 'baseline', changed: { friend_count: 2 }, standard_sequence: 5 }]);
    const mirrored = await readMirror(db, 'a');
    expect(mirrored.map((f) => [f.friendId, f.remark, f.tags.length])).toEqual([
      ['x', 'remark of x', 2],
      ['y', 'remark of y', 2],
    ]);
    const acct = await account('a');
    expect([acct.standard_sequence, acct.custom_sequence, acct.friend_count, acct.status]).toEqual([
      5,
      5,
      2,
      'ok',
    ]);
    expect(acct.last_changed_at).not.toBeNull();
  });

  it('an empty friend list stores the sequences and counts as no change', async () => {
    await addAccounts(db, ['a']);
    const r = await writer.apply(snapshot('a', [], null, 1));
    expect(r.friendsUpserted + r.tagsUpserted).toBe(0);
    const acct = await account('a');
    expect([acct.standard_sequence, acct.last_changed_at]).toEqual([1, null]);
  });

  it('refuses, writing nothing, when someone stored sequences meanwhile', async () => {
    await addAccounts(db, ['a']);
    await db.updateTable('tim.accounts').set({ standard_sequence: 9, custom_sequence: 9 }).execute();
    await expect(writer.apply(snapshot('a', ['x'], null, 5))).rejects.toMatchObject({
      reason: 'stale',
    });
    expect(await readMirror(db, 'a')).toEqual([]);
    expect((await account('a')).standard_sequence).toBe(9);
  });

  it('refuses when the account was removed', async () => {
    await addAccounts(db, ['a']);
    await removeAccounts(db, ['a']);
    const err = await writer.apply(snapshot('a', ['x'], null, 5)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SnapshotConflictError);
    expect((err as SnapshotConflictError).reason).toBe('gone');
    const left = await sql<{ n: string }>`SELECT count(*) AS n FROM tim.friends`.execute(db);
    expect(Number(left.rows[0]!.n)).toBe(0);
  });

  it('a resync --full (synced before, sequences forgotten) goes the general way only, and ends exact', async () => {
    await addAccounts(db, ['a']);
    await writer.apply(snapshot('a', ['x', 'y'], null, 5));
    // `resync --full` forgets the sequences but keeps the rows; the claim says it was synced before.
    await db.updateTable('tim.accounts').set({ standard_sequence: null, custom_sequence: null }).execute();
    expect((await claimAccount(db, 'a', { owner: 't', leaseMs: 60_000 })) as object).toMatchObject({
      neverSynced: false,
    });
    const r = await count(() => writer.apply(snapshot('a', ['y', 'z'], null, 6, false)));
    expect(copied()).toBe(false);
    expect(texts.some((t) => t.includes('AS fresh'))).toBe(false);
    expect(r.friendsDeleted).toBe(1);
    expect((await readMirror(db, 'a')).map((f) => f.friendId)).toEqual(['y', 'z']);
    const tags = await db
      .selectFrom('tim.friend_tags')
      .select('friend_id')
      .where('account_id', '=', 'a')
      .execute();
    expect(tags.map((t) => t.friend_id).sort()).toEqual(['y', 'y', 'z', 'z']);
    expect((await account('a')).standard_sequence).toBe(6);
  });

  it('a snapshot wrongly marked never synced, onto rows, still ends exact by the general way', async () => {
    await addAccounts(db, ['a']);
    await writer.apply(snapshot('a', ['x', 'y'], null, 5));
    await db.updateTable('tim.accounts').set({ standard_sequence: null, custom_sequence: null }).execute();
    const r = await count(() => writer.apply(snapshot('a', ['y', 'z'], null, 6, true)));
    // It locked and looked, found rows, rolled back without copying, and went the general way.
    expect(texts.some((t) => t.includes('AS fresh'))).toBe(true);
    expect(texts).toContain('ROLLBACK');
    expect(copied()).toBe(false);
    expect(r.friendsDeleted).toBe(1);
    expect((await readMirror(db, 'a')).map((f) => f.friendId)).toEqual(['y', 'z']);
  });

  it('COPY rows (a pull held encoded) onto rows are refused as stale, writing nothing; the same pull as JSON ends exact', async () => {
    await addAccounts(db, ['a']);
    await writer.apply(snapshot('a', ['x', 'y'], null, 5));
    await db.updateTable('tim.accounts').set({ standard_sequence: null, custom_sequence: null }).execute();
    const snap = snapshot('a', ['y', 'z'], null, 6, true);
    const { standard, custom, ...head } = snap;
    const err = await writer.apply({ ...head, rows: copyRowsOf(snap) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SnapshotConflictError);
    expect((err as SnapshotConflictError).reason).toBe('stale');
    expect((await readMirror(db, 'a')).map((f) => f.friendId)).toEqual(['x', 'y']);
    expect((await account('a')).standard_sequence).toBeNull();
    // What the sync does next: pull again, held as JSON for the general apply.
    const r = await writer.apply({
      ...head,
      neverSynced: false,
      rows: jsonRowsOf({ ...snap, neverSynced: false }),
    });
    expect(r.friendsDeleted).toBe(1);
    expect((await readMirror(db, 'a')).map((f) => f.friendId)).toEqual(['y', 'z']);
    expect(standard && custom).toBeTruthy();
  });

  it('rows encoded page by page, empty pages and pages without tags among them, write what one snapshot of objects writes', async () => {
    const ids = ['p', 'q', 'r', 's', 't'];
    const whole = snapshot('whole', ids, null, 3);
    // Friend r has no tags, so its page carries none.
    whole.standard!.tags = whole.standard!.tags.filter((t) => t.friendId !== 'r');
    whole.custom!.tags = whole.custom!.tags.filter((t) => t.friendId !== 'r');
    const pages = [
      [0, 2],
      [2, 2],
      [2, 3],
      [3, 5],
    ] as const;
    const mirrorOf = async (id: string) => (await readMirror(db, id)).map((f) => JSON.stringify(f));
    for (const format of ['copy', 'json'] as const) {
      await db.deleteFrom('tim.accounts').execute();
      await addAccounts(db, ['whole', 'paged']);
      await writer.apply(whole);
      const builder = new EncodedRowsBuilder('paged', format);
      for (const [from, to] of pages) {
        const friends = whole.standard!.friends.slice(from, to);
        const own = (t: { friendId: string }) => friends.some((f) => f.friendId === t.friendId);
        builder.add(friends, whole.standard!.tags.filter(own), whole.custom!.tags.filter(own));
      }
      expect(builder.friendCount).toBe(5);
      const { standard, custom, ...head } = snapshot('paged', [], null, 3);
      expect(standard && custom).toBeTruthy();
      await writer.apply({ ...head, rows: builder.build({ standard: true, custom: true }) });
      expect(await mirrorOf('paged'), format).toEqual(await mirrorOf('whole'));
      const tags = await db
        .selectFrom('tim.friend_tags')
        .select(['friend_id', 'tag', 'value', 'category'])
        .where('account_id', '=', 'paged')
        .orderBy(['friend_id', 'tag'])
        .execute();
      expect(
        tags.map((t) => t.friend_id),
        format,
      ).toEqual(['p', 'p', 'q', 'q', 's', 's', 't', 't']);
    }
  });

  it('COPY stores every character as the general path does: tabs, newlines, backslashes, quotes, \\N, NULL, braces', async () => {
    const odd = [
      'tab\there',
      'new\nline',
      'carriage\rreturn',
      'back\\slash',
      '\\N',
      '\\.',
      'NULL',
      '',
      ' spaced ',
      'quote"d',
      "it's",
      '{braced,comma}',
      '\\t literally',
      'emoji 🙂 and 中文',
    ];
    const snap = (accountId: string, neverSynced: boolean): AccountSnapshot => ({
      accountId,
      neverSynced,
      baseStandardSequence: null,
      baseCustomSequence: null,
      standardSequence: 3,
      customSequence: 4,
      standard: {
        friends: odd.map((v, i) => ({
          friendId: `f${i} ${v}`,
          remark: v,
          groups: i % 3 === 0 ? null : [v, `${v}2`, 'NULL', ''],
          addSource: i % 2 ? v : null,
          addWording: v,
          addTime: i === 0 ? null : i === 1 ? 0 : 253_402_300_799 - i,
        })),
        tags: odd.map((v, i) => ({
          friendId: `f${i} ${v}`,
          tag: `Tag_SNS_IM_${v}`,
          value: i % 2 ? v : null,
        })),
      },
      custom: {
        tags: odd.map((v, i) => ({
          friendId: `f${i} ${v}`,
          tag: 'Tag_SNS_Custom_v',
          value: [v, { [v]: v, n: 1.5, b: true, z: null }],
        })),
      },
    });
    // The account id is odd too: it goes into the lock as an escaped literal and into COPY as a field.
    const copiedId = "copied 'it''s'\\\t\\N";
    await addAccounts(db, [copiedId, 'general']);
    // `general` has an empty row set but is not a first sync, so it takes the json_to_recordset insert.
    await db
      .updateTable('tim.accounts')
      .set({ last_synced_at: sql`now()` })
      .where('account_id', '=', 'general')
      .execute();
    await count(() => writer.apply(snap(copiedId, true)));
    expect(copied()).toBe(true);
    texts = [];
    await count(() => writer.apply(snap('general', false)));
    expect(copied()).toBe(false);

    const rows = async (id: string) => ({
      friends: (
        await sql`SELECT friend_id, remark, groups, add_source, add_wording, add_time FROM tim.friends
                  WHERE account_id = ${id} ORDER BY friend_id COLLATE "C"`.execute(db)
      ).rows,
      tags: (
        await sql`SELECT friend_id, tag, value, category FROM tim.friend_tags
                  WHERE account_id = ${id} ORDER BY friend_id COLLATE "C", tag COLLATE "C"`.execute(db)
      ).rows,
    });
    const viaCopy = await rows(copiedId);
    expect(viaCopy.friends).toHaveLength(odd.length);
    expect(viaCopy.tags).toHaveLength(odd.length * 2);
    expect(viaCopy).toEqual(await rows('general'));
    // And both equal what was sent, not merely each other.
    const mirrored = await readMirror(db, copiedId);
    const sent = snap(copiedId, true);
    for (const f of sent.standard!.friends) {
      const m = mirrored.find((x) => x.friendId === f.friendId);
      expect(m, f.friendId).toMatchObject({
        remark: f.remark,
        groups: f.groups,
        addWording: f.addWording,
        addTime: f.addTime,
      });
    }
  });

  it('a COPY that fails (a friend listed twice) writes nothing, stores no sequences, and leaves the connection usable', async () => {
    await addAccounts(db, ['a', 'b']);
    const eventsOfA = async () =>
      Number(
        (
          await sql<{
            n: string;
          }>`SELECT count(*) AS n FROM tim.friend_events WHERE account_id = 'a'`.execute(db)
        ).rows[0]!.n,
      );
    const before = await eventsOfA();
    const twice = snapshot('a', ['x', 'y', 'x'], null, 5);
    await expect(writer.apply(twice)).rejects.toThrow(/duplicate key/);
    expect(await readMirror(db, 'a')).toEqual([]);
    const acct = await account('a');
    expect([acct.standard_sequence, acct.last_synced_at]).toEqual([null, null]);
    expect(await eventsOfA()).toBe(before);
    // The pool holds 4 connections: more applies than that prove none was handed back mid-transaction.
    for (const id of ['b', 'a']) {
      for (let i = 0; i < 3; i++) {
        await db
          .updateTable('tim.accounts')
          .set({ standard_sequence: null, custom_sequence: null, last_synced_at: null })
          .execute();
        await db.deleteFrom('tim.friends').execute();
        await writer.apply(snapshot(id, ['x', 'y'], null, 5 + i));
      }
    }
    expect((await readMirror(db, 'a')).map((f) => f.friendId)).toEqual(['x', 'y']);
    expect((await account('a')).standard_sequence).toBe(7);
  });

  it('first syncs that wait for a slot together share one transaction, each with its own rows, events and sequences', async () => {
    const ids = Array.from({ length: 40 }, (_, i) => `acc ${i} 'q'`);
    await addAccounts(db, ids);
    const results = await count(() =>
      Promise.all(
        ids.map((id, i) => writer.apply(snapshot(id, i % 5 === 0 ? [] : [`x${i}`, `y${i}`], null, 10 + i))),
      ),
    );
    // 4 apply slots, each taking its share of the accounts waiting: 10 of 40, 8 of 30, 6 of 22,
    // 4 of 16, and so on. The slot requests of accounts already taken find nobody waiting.
    const commits = texts.filter((t) => t.trim() === 'COMMIT').length;
    expect(commits).toBeGreaterThanOrEqual(4);
    expect(commits).toBeLessThanOrEqual(12);
    // Accounts without friends send no friend rows, so a batch of only those has no COPY.
    expect(texts.filter((t) => t.startsWith('COPY tim.friends')).length).toBeLessThanOrEqual(commits);
    for (const [i, r] of results.entries()) {
      const n = i % 5 === 0 ? 0 : 2;
      expect(r).toEqual({
        friendsUpserted: n,
        friendsDeleted: 0,
        tagsUpserted: 2 * n,
        tagsDeleted: 0,
        friendCount: n,
        events: 1,
      });
    }
    for (const [i, id] of ids.entries()) {
      const acct = await account(id);
      const n = i % 5 === 0 ? 0 : 2;
      expect([acct.standard_sequence, acct.custom_sequence, acct.friend_count, acct.status]).toEqual([
        10 + i,
        10 + i,
        n,
        'ok',
      ]);
      // last_changed_at only where rows were written, as for an account synced alone.
      expect(acct.last_changed_at === null).toBe(n === 0);
      expect((await readMirror(db, id)).map((f) => [f.friendId, f.tags.length])).toEqual(
        n === 0
          ? []
          : [
              [`x${i}`, 2],
              [`y${i}`, 2],
            ],
      );
    }
    const events = await db
      .selectFrom('tim.friend_events')
      .select(['account_id', 'kind', 'changed'])
      .where('account_id', 'in', ids)
      .execute();
    expect(events).toHaveLength(40);
    expect(new Set(events.map((e) => e.account_id))).toEqual(new Set(ids));
    expect(events.every((e) => e.kind === 'baseline')).toBe(true);
  });

  it('in a shared transaction, an account at fault fails alone; refusals and the general path stay per account', async () => {
    const ids = ['ok1', 'dup', 'synced', 'gone', 'has-rows', 'ok2'];
    // 18 more waiting accounts make the first slot's share 6 (24 ÷ 4 slots): the six above.
    const fillers = Array.from({ length: 18 }, (_, i) => `filler${i}`);
    await addAccounts(db, [...ids, ...fillers]);
    await writer.apply(snapshot('synced', ['s'], null, 3));
    // Rows without a sync: only a hand-made mirror looks like this; the COPY path must refuse it.
    await db.insertInto('tim.friends').values({ account_id: 'has-rows', friend_id: 'old' }).execute();
    await removeAccounts(db, ['gone']);
    texts = [];
    const outcomes = await count(() =>
      Promise.allSettled([
        writer.apply(snapshot('ok1', ['a'], null, 5)),
        writer.apply(snapshot('dup', ['d', 'e', 'd'], null, 5)),
        writer.apply(snapshot('synced', ['s', 't'], null, 5)),
        writer.apply(snapshot('gone', ['g'], null, 5)),
        writer.apply(snapshot('has-rows', ['n'], null, 5)),
        writer.apply(snapshot('ok2', ['b', 'c'], null, 5)),
        ...fillers.map((id) => writer.apply(snapshot(id, ['f'], null, 5))),
      ]),
    );
    const [ok1, dup, synced, gone, hasRows, ok2, ...rest] = outcomes;
    expect(rest.every((r) => r.status === 'fulfilled')).toBe(true);
    // The six were checked together, in one locking statement.
    const locks = texts.filter((t) => t.startsWith('BEGIN;'));
    expect(locks.filter((t) => ids.every((id) => t.includes(`'${id}'`)))).toHaveLength(1);
    expect(ok1).toMatchObject({ status: 'fulfilled', value: { friendsUpserted: 1, friendCount: 1 } });
    expect(ok2).toMatchObject({ status: 'fulfilled', value: { friendsUpserted: 2, friendCount: 2 } });
    expect(dup).toMatchObject({
      status: 'rejected',
      reason: { message: expect.stringMatching(/duplicate key/) },
    });
    expect(synced).toMatchObject({ status: 'rejected', reason: { reason: 'stale' } });
    expect(gone).toMatchObject({ status: 'rejected', reason: { reason: 'gone' } });
    // The general path replaced the hand-made row.
    expect(hasRows).toMatchObject({ status: 'fulfilled', value: { friendCount: 1 } });
    expect((await readMirror(db, 'has-rows')).map((f) => f.friendId)).toEqual(['n']);
    // One shared try, rolled back by the repeated friend; then ok1, dup and ok2 each alone, while
    // the refused accounts are not tried again.
    expect(locks.filter((t) => t.includes(`'ok1'`))).toHaveLength(2);
    expect(locks.filter((t) => t.includes(`'synced'`) || t.includes(`'gone'`))).toHaveLength(1);
    expect((await readMirror(db, 'ok1')).map((f) => f.friendId)).toEqual(['a']);
    expect((await readMirror(db, 'ok2')).map((f) => f.friendId)).toEqual(['b', 'c']);
    expect(await readMirror(db, 'dup')).toEqual([]);
    expect((await account('dup')).standard_sequence).toBeNull();
    expect((await account('synced')).standard_sequence).toBe(3);
    expect((await readMirror(db, 'synced')).map((f) => f.friendId)).toEqual(['s']);
  });

  it('an account synced before that holds no rows gets an added event per friend, with all its fields and tags', async () => {
    // The history outlives its accounts: start this one's afresh.
    await db.deleteFrom('tim.friend_events').where('account_id', '=', 'a').execute();
    await addAccounts(db, ['a']);
    await writer.apply(snapshot('a', [], null, 1));
    const r = await count(() => writer.apply(snapshot('a', ['x', 'y'], 1, 2)));
    expect(copied()).toBe(false);
    expect(r).toEqual({
      friendsUpserted: 2,
      friendsDeleted: 0,
      tagsUpserted: 4,
      tagsDeleted: 0,
      friendCount: 2,
      events: 2,
    });
    const events = await db
      .selectFrom('tim.friend_events')
      .select(['friend_id', 'kind', 'changed', 'standard_sequence'])
      .where('account_id', '=', 'a')
      .orderBy('id')
      .execute();
    const added = (id: string) => ({
      friend_id: id,
      kind: 'added',
      changed: {
        remark: { new: `remark of ${id}` },
        groups: { new: ['g'] },
        add_source: { new: 'AddSource_Type_Web' },
        add_time: { new: 1_700_000_000 },
        Tag_SNS_IM_Extra: { new: { n: 1 } },
        Tag_SNS_Custom_c: { new: id },
      },
      standard_sequence: 2,
    });
    expect(events).toEqual([
      { friend_id: null, kind: 'baseline', changed: { friend_count: 0 }, standard_sequence: 1 },
      added('x'),
      added('y'),
    ]);
    expect((await readMirror(db, 'a')).map((f) => [f.friendId, f.tags.length])).toEqual([
      ['x', 2],
      ['y', 2],
    ]);
  });

  it('claims say whether the account was ever synced', async () => {
    await addAccounts(db, ['a']);
    expect(await claimAccount(db, 'a', { owner: 't', leaseMs: 60_000 })).toMatchObject({ neverSynced: true });
    await writer.apply(snapshot('a', ['x'], null, 5));
    expect(await claimAccount(db, 'a', { owner: 't', leaseMs: 60_000 })).toMatchObject({
      neverSynced: false,
    });
  });
});
