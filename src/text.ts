/**
 * Strict text handling for everything that takes text from outside (Tencent's answers, webhook and
 * admin bodies, account ids), so each checks the same way: invalid UTF-8 is refused rather than
 * turned into U+FFFD, and lone UTF-16 surrogates, which have no exact UTF-8 form, are found.
 */

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes UTF-8.
 *
 * @throws TypeError on any invalid sequence: replacing it with U+FFFD would store text nobody sent
 */
export function decodeUtf8(bytes: Uint8Array): string {
  return UTF8.decode(bytes);
}

/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
export const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
