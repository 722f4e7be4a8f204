/**
 * The status page in a real browser: a `friend-mirror run` daemon against the simulator, its page
 * loaded by headless Chromium, and the rendered text checked against what the database holds.
 * Account ids are hostile input, so two of them are HTML that would run script if the page ever
 * parsed data as markup. A screenshot is left in `.tmp/status-page/` for a person to look at.
 *
 * Chromium comes from Debian (`apt-get install chromium`); `.ci/run` installs it. Without it the
 * test is skipped locally, with a line saying so, and fails in CI, where skipping would hide it.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addAccounts, countByStatus } from '../src/db/accounts.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createDb } from '../src/db/pool.js';
import { FriendStore, Simulator } from '../src/simulator/index.js';
import { buildCli } from './fixtures/build.js';
import { type DaemonProcess, spawnDaemon, waitUntil } from './fixtures/daemon-process.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const run = promisify(execFile);
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const APP = 1400000888;
const KEY = 'status-page-secret-key';
const ADMIN_TOKEN = 'status-page-admin-token-0123456789';
const HOSTILE = ['<img src=x onerror=alert(1)>', '<script>alert(1)</script>'];
const OUT_DIR = fileURLToPath(new URL('../.tmp/status-page/', import.meta.url));

if (!CHROMIUM) {
  if (process.env['CI']) throw new Error('Chromium is not installed: .ci/run must apt-get install chromium');
  console.log('[status-page] skipped: no Chromium at /usr/bin/chromium (apt-get install chromium)');
}

/** Headless Chromium with the flags this closed network needs (no background connections). */
async function chromium(args: string[]): Promise<string> {
  const profile = mkdtempSync(join(tmpdir(), 'fm-chromium-'));
  try {
    const { stdout } = await run(
      CHROMIUM!,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        `--user-data-dir=${profile}`,
        // Lets the page's first poll of status.json finish before the DOM is dumped or drawn.
        '--virtual-time-budget=8000',
        ...args,
      ],
      { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 },
    );
    return stdout;
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}

/** The text of the element with `id` in dumped HTML (it holds text only). */
function textOf(dom: string, id: string): string {
  const m = new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(dom);
  if (!m) throw new Error(`no #${id} in the page`);
  return m[1]!.replaceAll('&nbsp;', ' ');
}

describe.skipIf(!CHROMIUM)('the status page, rendered by Chromium', () => {
  let database: TestDatabase;
  let db: ReturnType<typeof createDb>;
  let sim: Simulator;
  let daemon: DaemonProcess;
  const real = Array.from({ length: 30 }, (_, i) => `sp_${String(i).padStart(2, '0')}`);

  beforeAll(async () => {
    const cli = await buildCli();
    database = await createTestDatabase('status_page');
    db = createDb(database.url, { maxConnections: 2 });
    await migrateToLatest(db);
    const store = new FriendStore();
    for (const id of real) store.addAccount(id);
    for (const [i, id] of real.entries()) {
      for (let k = 1; k <= 3; k++) store.addFriend(id, real[(i + k) % real.length]!, {});
    }
    // The hostile ids are listed but unknown to Tencent: they end `missing`, with an error shown.
    await addAccounts(db, [...real, ...HOSTILE]);
    sim = new Simulator({ store, sdkAppId: APP, secretKey: KEY, rateLimit: 0 });
    daemon = spawnDaemon(cli, {
      DATABASE_URL: database.url,
      TIM_SDKAPPID: String(APP),
      TIM_SECRET_KEY: KEY,
      TIM_BASE_URL: await sim.listen(),
      ADMIN_TOKEN,
      SYNC_INTERVAL: '1h',
      HTTP_PORT: '0',
      LOG_LEVEL: 'info',
      SHUTDOWN_TIMEOUT: '5s',
    });
    await daemon.adminUrl;
    await waitUntil(
      'every account synced or missing',
      async () => {
        const r = await sql<{ n: number }>`
          SELECT count(*)::int AS n FROM tim.accounts WHERE last_attempt_at IS NOT NULL`.execute(db);
        return r.rows[0]!.n === real.length + HOSTILE.length;
      },
      60_000,
      () => daemon.tail(),
    );
  }, 180_000);

  afterAll(async () => {
    if (daemon?.running()) daemon.child.kill('SIGKILL');
    await daemon?.exited;
    await sim?.close();
    await db?.destroy();
    await database?.drop();
  });

  it('status.json needs the admin token; the page itself holds no data', async () => {
    const url = await daemon.adminUrl;
    expect((await fetch(`${url}/status.json`)).status).toBe(401);
    const wrong = await fetch(`${url}/status.json`, { headers: { authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);
    const ok = await fetch(`${url}/status.json`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(ok.status).toBe(200);
    const page = await fetch(`${url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'nonce-");
    const html = await page.text();
    for (const id of [...real, ...HOSTILE]) expect(html).not.toContain(id);
  });

  it('shows the numbers the database holds, and hostile ids as text', async () => {
    const url = await daemon.adminUrl;
    const dom = await chromium(['--dump-dom', `${url}/#token=${encodeURIComponent(ADMIN_TOKEN)}`]);
    expect(dom).toContain('data-loaded="true"');

    const counts = await countByStatus(db);
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    expect(textOf(dom, 'accounts-total')).toBe(total.toLocaleString('en-US'));
    expect(counts.ok).toBe(real.length);
    expect(counts.missing).toBe(HOSTILE.length);
    expect(dom).toMatch(new RegExp(`<td>ok</td><td class="n">${real.length}</td>`));
    expect(dom).toMatch(new RegExp(`<td>missing</td><td class="n">${HOSTILE.length}</td>`));
    expect(textOf(dom, 'accounts-active')).toBe(String(real.length));
    // Every active account was synced within the interval: the sweep is complete, nothing due.
    expect(textOf(dom, 'sweep-pct')).toBe('100.0 %');
    expect(textOf(dom, 'sweep-eta')).toBe('nothing due: caught up');
    expect(textOf(dom, 'ready')).toBe('ready');
    expect(textOf(dom, 'share')).toBe('200');
    const replicas = await db.selectFrom('tim.replicas').select('replica_id').execute();
    expect(replicas).toHaveLength(1);
    expect(dom).toContain(`${replicas[0]!.replica_id} (this one)`);

    // The hostile ids are in the error table as text, and no element came of them.
    for (const id of HOSTILE) {
      expect(dom).toContain(id.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;'));
    }
    expect(dom).not.toMatch(/<img\b/i);
    expect(dom.match(/<script\b/gi)).toHaveLength(1);
    // No secret reached the page: not the key, not the token from the URL fragment.
    expect(dom).not.toContain(KEY);
    expect(dom).not.toContain(ADMIN_TOKEN);
  }, 90_000);

  it('asks for the token when none is given', async () => {
    const url = await daemon.adminUrl;
    const dom = await chromium(['--dump-dom', `${url}/`]);
    expect(dom).toContain('id="auth" class="wide shown"');
    expect(textOf(dom, 'updated')).toBe('admin token needed');
    for (const id of real) expect(dom).not.toContain(id);
  }, 90_000);

  it('leaves a screenshot for a person to look at', async () => {
    mkdirSync(OUT_DIR, { recursive: true });
    const file = join(OUT_DIR, 'status-page.png');
    rmSync(file, { force: true });
    const url = await daemon.adminUrl;
    await chromium([
      `--screenshot=${file}`,
      '--window-size=1280,1300',
      '--hide-scrollbars',
      `${url}/#token=${encodeURIComponent(ADMIN_TOKEN)}`,
    ]);
    expect(existsSync(file)).toBe(true);
    console.log(`[status-page] screenshot: ${file}`);
  }, 90_000);
});
