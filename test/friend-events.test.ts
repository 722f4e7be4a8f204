/**
 * The change history, `tim.friend_events`, through the real sync (simulator → pull → apply →
 * Postgres), under both readings of the sequence rule: a scripted series of adds, edits (remark,
 * groups, unknown standard tags, custom tags) and removes gives exactly the expected events, one per
 * friend and sync, with the sequences that revealed them; a first sync gives one baseline row;
 * unchanged data gives none; and events roll back with the data they describe.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestResync } from '../src/db/accounts.js';
import { FriendStore } from '../src/simulator/index.js';
import { STANDARD_TAGS } from '../src/tim/friend-get.js';
import { diffAccount, type TruthFriend } from '../src/verify.js';
import { type FriendEvent, readEvents, replay } from './fixtures/friend-events.js';
import { type MirrorFixture, mirrorFixture } from './fixtures/mirror.js';

const T0 = 1_700_000_000;
const LEVEL = 'Tag_SNS_Custom_Level';
const NOTE = 'Tag_SNS_Custom_Note';
const NIL = 'Tag_SNS_Custom_Nil';
const EXTRA = 'Tag_SNS_IM_Extra';

type Expected = Omit<FriendEvent, 'id' | 'accountId' | 'standardSequence' | 'customSequence'> & {
  accountId?: string;
};

describe.each(['empty-value-item', 'omit-friend'] as const)(
  'friend events, sequence reading %s',
  (reading) => {
    let f: MirrorFixture;
    let store: FriendStore;
    let seen = 0;

    /** Syncs, then returns the events appended since the last call, checking their sequences. */
    async function syncAndRead(ids?: string[]): Promise<Expected[]> {
      const s = await f.syncAll(ids ? { ids } : {});
      expect(s.failed).toBe(0);
      const all = await readEvents(f.db);
      const fresh = all.slice(seen);
      seen = all.length;
      for (const e of fresh) {
        const t = store.truth(e.accountId);
        expect([e.standardSequence, e.customSequence], `sequences of event ${e.id}`).toEqual([
          t.standardSequence,
          t.customSequence,
        ]);
      }
      // Accounts sync concurrently: ids interleave between accounts, never within one.
      return fresh
        .sort((a, b) => (a.accountId < b.accountId ? -1 : a.accountId > b.accountId ? 1 : a.id - b.id))
        .map(({ accountId, friendId, kind, changed }) => ({ accountId, friendId, kind, changed }));
    }

    beforeAll(async () => {
      store = new FriendStore();
      store.addAccount('alice');
      store.addAccount('carol');
      store.addFriend('alice', 'bob', {
        standard: {
          [STANDARD_TAGS.remark]: 'Bob',
          [STANDARD_TAGS.group]: ['work'],
          [STANDARD_TAGS.addSource]: 'AddSource_Type_Web',
          [STANDARD_TAGS.addTime]: T0,
        },
        custom: { [LEVEL]: 1 },
      });
      store.addFriend('alice', 'dave', { standard: { [STANDARD_TAGS.addTime]: T0 + 1 } });
      f = await mirrorFixture(`events_${reading}`, { store, pageSize: 2, sequenceReading: reading });
      await f.addAllAccounts();
    });
    afterAll(async () => {
      await f?.close();
    });

    it('records one baseline per account on the first sync, not a row per friend', async () => {
      expect(await syncAndRead()).toEqual([
        { accountId: 'alice', friendId: null, kind: 'baseline', changed: { friend_count: 2 } },
        { accountId: 'carol', friendId: null, kind: 'baseline', changed: { friend_count: 0 } },
      ]);
    });

    it('records edits of columns and tags, merged per friend, and adds with all their fields', async () => {
      store.setStandardTag('alice', 'bob', STANDARD_TAGS.remark, 'Bobby');
      store.setCustomTag('alice', 'bob', LEVEL, 2);
      store.setStandardTag('alice', 'dave', STANDARD_TAGS.group, ['family', 'close']);
      store.setCustomTag('alice', 'dave', NOTE, 'met at "the" café\t✓');
      store.addFriend('alice', 'erin', {
        standard: { [STANDARD_TAGS.addTime]: T0 + 2 },
        custom: { [LEVEL]: 3 },
      });
      // carol had no friends: her rows are written by the first-sync fast path, but as additions.
      store.addFriend('carol', 'frank', {
        standard: { [STANDARD_TAGS.addTime]: T0 + 3, [STANDARD_TAGS.addWording]: 'hi' },
        custom: { [NOTE]: { nested: [1, 'two'] } },
      });
      expect(await syncAndRead()).toEqual([
        {
          accountId: 'alice',
          friendId: 'bob',
          kind: 'changed',
          changed: { remark: { old: 'Bob', new: 'Bobby' }, [LEVEL]: { old: 1, new: 2 } },
        },
        {
          accountId: 'alice',
          friendId: 'dave',
          kind: 'changed',
          changed: { groups: { new: ['family', 'close'] }, [NOTE]: { new: 'met at "the" café\t✓' } },
        },
        {
          accountId: 'alice',
          friendId: 'erin',
          kind: 'added',
          changed: { add_time: { new: T0 + 2 }, [LEVEL]: { new: 3 } },
        },
        {
          accountId: 'carol',
          friendId: 'frank',
          kind: 'added',
          changed: {
            add_time: { new: T0 + 3 },
            add_wording: { new: 'hi' },
            [NOTE]: { new: { nested: [1, 'two'] } },
          },
        },
      ]);
    });

    it('records removes, unknown standard tags, cleared tags and JSON-null tags', async () => {
      store.removeFriend('alice', 'dave');
      store.setStandardTag('alice', 'bob', EXTRA, { x: 1 });
      store.setStandardTag('alice', 'bob', STANDARD_TAGS.group, undefined);
      store.setCustomTag('alice', 'erin', LEVEL, undefined);
      store.setCustomTag('alice', 'erin', NIL, null);
      expect(await syncAndRead()).toEqual([
        {
          accountId: 'alice',
          friendId: 'bob',
          kind: 'changed',
          changed: { groups: { old: ['work'] }, [EXTRA]: { new: { x: 1 } } },
        },
        { accountId: 'alice', friendId: 'dave', kind: 'removed', changed: null },
        {
          accountId: 'alice',
          friendId: 'erin',
          kind: 'changed',
          changed: { [LEVEL]: { old: 3 }, [NIL]: { new: null } },
        },
      ]);
    });

    it('records nothing when nothing changed, even when a full resync re-reads and re-applies everything', async () => {
      expect(await syncAndRead()).toEqual([]);
      await requestResync(f.db, { all: true }, { full: true });
      const s = await f.syncAll();
      expect(s.changed).toBe(2);
      expect(s.friendsWritten + s.tagsWritten).toBe(0);
      expect(await syncAndRead()).toEqual([]);
    });

    it('records a custom-only change, and a friend removed and added again', async () => {
      store.setCustomTag('alice', 'erin', NIL, 'x');
      store.removeFriend('carol', 'frank');
      expect(await syncAndRead()).toEqual([
        {
          accountId: 'alice',
          friendId: 'erin',
          kind: 'changed',
          changed: { [NIL]: { old: null, new: 'x' } },
        },
        { accountId: 'carol', friendId: 'frank', kind: 'removed', changed: null },
      ]);
      store.addFriend('carol', 'frank', { standard: { [STANDARD_TAGS.addTime]: T0 + 9 } });
      expect(await syncAndRead()).toEqual([
        { accountId: 'carol', friendId: 'frank', kind: 'added', changed: { add_time: { new: T0 + 9 } } },
      ]);
    });

    it('replays from the baseline to exactly the mirror', async () => {
      const baselines = { alice: 2, carol: 0 };
      for (const id of ['alice', 'carol'] as const) {
        const events = await readEvents(f.db, id);
        expect(events[0]).toMatchObject({ kind: 'baseline', changed: { friend_count: baselines[id] } });
        // Both baselines were taken from the script's starting state, rebuilt here.
        const start: TruthFriend[] =
          id === 'alice'
            ? [
                {
                  friendId: 'bob',
                  standard: {
                    [STANDARD_TAGS.remark]: 'Bob',
                    [STANDARD_TAGS.group]: ['work'],
                    [STANDARD_TAGS.addSource]: 'AddSource_Type_Web',
                    [STANDARD_TAGS.addTime]: T0,
                  },
                  custom: { [LEVEL]: 1 },
                },
                { friendId: 'dave', standard: { [STANDARD_TAGS.addTime]: T0 + 1 }, custom: {} },
              ]
            : [];
        const replayed = replay(start, events);
        expect(await diffAccount(f.db, id, replayed)).toEqual([]);
        expect(await diffAccount(f.db, id, store.truth(id).friends)).toEqual([]);
      }
    });

    it('rolls events back with the data when the apply fails at its last statement', async () => {
      // Fail the apply's final bookkeeping update of alice: everything before it in the transaction,
      // rows and events alike, must vanish.
      await sql`CREATE FUNCTION pg_temp_fail() RETURNS trigger LANGUAGE plpgsql AS $$
              BEGIN RAISE EXCEPTION 'injected failure'; END $$`.execute(f.db);
      await sql`CREATE TRIGGER fail_alice BEFORE UPDATE OF standard_sequence ON tim.accounts FOR EACH ROW
              WHEN (OLD.account_id = 'alice' AND NEW.standard_sequence IS DISTINCT FROM OLD.standard_sequence)
              EXECUTE FUNCTION pg_temp_fail()`.execute(f.db);
      try {
        store.addFriend('alice', 'gina', { standard: { [STANDARD_TAGS.addTime]: T0 + 10 } });
        const before = (await readEvents(f.db)).length;
        const s = await f.syncAll({ ids: ['alice'], retryAttempts: 1 });
        expect(s.failed).toBe(1);
        expect((await readEvents(f.db)).length).toBe(before);
        const rows = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM tim.friends WHERE account_id = 'alice' AND friend_id = 'gina'`.execute(
          f.db,
        );
        expect(rows.rows[0]?.n).toBe(0);
      } finally {
        await sql`DROP TRIGGER fail_alice ON tim.accounts`.execute(f.db);
        await sql`DROP FUNCTION pg_temp_fail()`.execute(f.db);
      }
      expect(await syncAndRead(['alice'])).toEqual([
        { accountId: 'alice', friendId: 'gina', kind: 'added', changed: { add_time: { new: T0 + 10 } } },
      ]);
    });
  },
);
