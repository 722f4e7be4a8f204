/** The body of `POST /resync`, checked field by field so a 400 can say exactly what is wrong. */
import { accountIdProblem } from '../account-id.js';

/** What to resync: listed accounts or all of them; `full` also forgets their stored sequences. */
export interface ResyncRequest {
  ids?: string[];
  all?: boolean;
  full?: boolean;
}

/** Most ids one request may list; more should use `all` or several requests. */
export const MAX_RESYNC_IDS = 100_000;

const FIELDS = new Set(['ids', 'all', 'full']);

/**
 * Checks a parsed JSON body: `{"ids": [...]}` or `{"all": true}`, exactly one, plus an optional
 * boolean `full`. Unknown fields are refused too, so a typo such as `"ful": true` is not silently
 * ignored. Repeated ids are passed on once.
 *
 * @returns the request, or a reason naming the field
 */
export function parseResyncRequest(
  body: unknown,
): { ok: true; value: ResyncRequest } | { ok: false; error: string } {
  const fail = (error: string) => ({ ok: false as const, error });
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return fail('body must be a JSON object: {"ids": [...]} or {"all": true}');
  }
  const fields = body as Record<string, unknown>;
  const unknown = Object.keys(fields).find((k) => !FIELDS.has(k));
  if (unknown !== undefined)
    return fail(`unknown field ${JSON.stringify(unknown.slice(0, 40))}; expected "ids", "all" or "full"`);
  if (fields.full !== undefined && typeof fields.full !== 'boolean')
    return fail('"full" must be true or false');
  const full = fields.full === true;

  const hasIds = fields.ids !== undefined;
  const hasAll = fields.all !== undefined;
  if (hasIds === hasAll) return fail('give exactly one of "ids" or "all"');
  if (hasAll) {
    if (fields.all !== true) return fail('"all" must be true');
    return { ok: true, value: { all: true, full } };
  }

  const ids = fields.ids;
  if (!Array.isArray(ids)) return fail('"ids" must be an array of account ids');
  if (ids.length === 0) return fail('"ids" must not be empty');
  if (ids.length > MAX_RESYNC_IDS)
    return fail(`"ids" holds ${ids.length} ids; at most ${MAX_RESYNC_IDS} per request`);
  for (let i = 0; i < ids.length; i++) {
    const id: unknown = ids[i];
    if (typeof id !== 'string') return fail(`"ids[${i}]" must be a string`);
    const problem = accountIdProblem(id);
    // accountIdProblem says 'empty' bare; its other reasons already read as a predicate.
    if (problem !== undefined) return fail(`"ids[${i}]" ${problem === 'empty' ? 'is empty' : problem}`);
  }
  return { ok: true, value: { ids: [...new Set(ids as string[])], full } };
}
