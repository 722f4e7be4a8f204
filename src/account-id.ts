/**
 * Checking account ids people hand us. Ids are opaque data: quotes, spaces, tabs and non-ASCII are
 * all valid and kept byte for byte. Only what Tencent or Postgres cannot hold is refused.
 */

import { LONE_SURROGATE } from './text.js';

/** Tencent's UserID limit. */
export const MAX_ACCOUNT_ID_BYTES = 32;

/** Why `id` cannot be an account id, or undefined when it can. */
export function accountIdProblem(id: string): string | undefined {
  if (id.length === 0) return 'empty';
  // Postgres text cannot store NUL, and Tencent ids never contain it.
  if (id.includes('\u0000')) return 'contains a NUL character';
  if (LONE_SURROGATE.test(id)) return 'is not valid Unicode (lone surrogate)';
  const bytes = Buffer.byteLength(id, 'utf8');
  if (bytes > MAX_ACCOUNT_ID_BYTES)
    return `is ${bytes} bytes; Tencent UserIDs are at most ${MAX_ACCOUNT_ID_BYTES}`;
  return undefined;
}
