/** Writing the admin server's JSON answers, with the headers every one of them carries. */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';

/**
 * Sends `body` as JSON with `status`. Answers are never cached: health, readiness and resync results
 * are only true at the moment they are made.
 */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: OutgoingHttpHeaders = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  res.end(text);
}

/** Sends `{"error": message}`. Messages are ours, never an exception's text or anything the client sent. */
export function sendError(
  res: ServerResponse,
  status: number,
  message: string,
  headers: OutgoingHttpHeaders = {},
): void {
  sendJson(res, status, { error: message }, headers);
}
