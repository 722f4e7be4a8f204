/** Checking `Authorization: Bearer <token>` without leaking the token through timing. */
import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * The configured admin token, held only as its SHA-256 digest.
 *
 * Both sides are hashed before the constant-time comparison: `timingSafeEqual` needs equal lengths,
 * and comparing digests means neither the token's length nor how much of a guess was right shows in
 * the response time.
 */
export class BearerToken {
  readonly #digest: Buffer;

  constructor(token: string) {
    this.#digest = sha256(token);
  }

  /** Whether an `Authorization` header value carries this token. */
  matches(authorization: string | undefined): boolean {
    const m = /^Bearer +(.+)$/i.exec(authorization?.trim() ?? '');
    if (!m) return false;
    return timingSafeEqual(sha256(m[1]!), this.#digest);
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}
