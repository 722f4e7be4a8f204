/**
 * `node dist/src/commands/seed-from-simulator.js <simulator-url>`: adds every account of a running
 * simulator to the mirror (the compose demo's seeding step). Reads DATABASE_URL, and
 * SIM_CONTROL_TOKEN, which a simulator that is not on this machine's loopback requires.
 */
import { loadDbConfig, loadSimControlToken } from '../config.js';
import { addAccounts } from '../db/accounts.js';
import { migrateToLatest } from '../db/migrate.js';
import { createDb } from '../db/pool.js';

async function seed(simulatorUrl: string): Promise<void> {
  const token = loadSimControlToken();
  const res = await fetch(new URL('/__sim/accounts', simulatorUrl), {
    ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
  });
  if (!res.ok) throw new Error(`simulator answered HTTP ${res.status}: ${await res.text()}`);
  const { accounts } = (await res.json()) as { accounts: string[] };
  const db = createDb(loadDbConfig().databaseUrl, { maxConnections: 2 });
  try {
    await migrateToLatest(db);
    const added = await addAccounts(db, accounts);
    process.stdout.write(`added ${added} of ${accounts.length} simulated accounts\n`);
  } finally {
    await db.destroy();
  }
}

const url = process.argv[2];
if (!url) {
  process.stderr.write('usage: seed-from-simulator.js <simulator-url>\n');
  process.exitCode = 2;
} else {
  await seed(url).catch((err: Error) => {
    process.stderr.write(`seeding failed: ${err.message}\n`);
    process.exitCode = 1;
  });
}
