/**
 * Which databases belong to one test run. `./db.ts` marks each database it creates with a comment
 * naming the run, and the global teardown looks for the ones left behind; another run on the same
 * server (a helper's targeted tests, a second checkout) carries another id and is left alone.
 */
import type pg from 'pg';

/** The comment `./db.ts` puts on a database created by run `runId`. */
export function runComment(runId: string): string {
  return `fmtest run ${runId}`;
}

/** Names of the databases on the server created by run `runId` and still there. */
export async function databasesOfRun(client: pg.Client, runId: string): Promise<string[]> {
  const { rows } = await client.query<{ datname: string }>(
    `select d.datname
       from pg_database d
       join pg_shdescription c on c.objoid = d.oid and c.classoid = 'pg_database'::regclass
      where c.description = $1
      order by d.datname`,
    [runComment(runId)],
  );
  return rows.map((r) => r.datname);
}
