/**
 * UserSig (TLSSigAPIv2): generation, decoding and verification.
 *
 * The mirror signs its own administrator UserSig from `TIM_SECRET_KEY` and renews it well before
 * it expires, or uses a fixed `TIM_USERSIG`. The simulator uses {@link verifyUserSig} to check what
 * it is sent, exactly as Tencent does.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { deflateSync, inflateSync } from 'node:zlib';

/** The fields of a decoded UserSig document. */
export interface UserSigDocument {
  'TLS.ver': string;
  'TLS.identifier': string;
  'TLS.sdkappid': number;
  'TLS.time': number;
  'TLS.expire': number;
  'TLS.sig': string;
}

/** Returns the current Unix time in seconds. Injected so tests can pin the clock. */
export type Clock = () => number;

const systemClock: Clock = () => Math.floor(Date.now() / 1000);

/** The HMAC-SHA256 over the four `TLS.*` lines, base64. The key is the console key as UTF-8 text. */
export function userSigHmac(
  secretKey: string,
  identifier: string,
  sdkAppId: number,
  time: number,
  expireSeconds: number,
): string {
  const content =
    `TLS.identifier:${identifier}\n` +
    `TLS.sdkappid:${sdkAppId}\n` +
    `TLS.time:${time}\n` +
    `TLS.expire:${expireSeconds}\n`;
  return createHmac('sha256', secretKey).update(content).digest('base64');
}

/**
 * Makes a UserSig: JSON document → zlib deflate → base64 with `+/=` replaced by `*-_`.
 *
 * @example
 * const sig = generateUserSig({ secretKey, sdkAppId: 1400000000, identifier: 'administrator', expireSeconds: 86400 });
 */
export function generateUserSig(opts: {
  secretKey: string;
  sdkAppId: number;
  identifier: string;
  expireSeconds: number;
  now?: number;
}): string {
  const time = opts.now ?? systemClock();
  const doc: UserSigDocument = {
    'TLS.ver': '2.0',
    'TLS.identifier': opts.identifier,
    'TLS.sdkappid': opts.sdkAppId,
    'TLS.time': time,
    'TLS.expire': opts.expireSeconds,
    'TLS.sig': userSigHmac(opts.secretKey, opts.identifier, opts.sdkAppId, time, opts.expireSeconds),
  };
  const compressed = deflateSync(Buffer.from(JSON.stringify(doc)));
  return compressed.toString('base64').replace(/\+/g, '*').replace(/\//g, '-').replace(/=/g, '_');
}

/**
 * Decodes a UserSig into its document without checking the signature.
 * Returns undefined when the string is not a well-formed UserSig.
 */
export function decodeUserSig(sig: string): UserSigDocument | undefined {
  try {
    const b64 = sig.replace(/\*/g, '+').replace(/-/g, '/').replace(/_/g, '=');
    const doc = JSON.parse(inflateSync(Buffer.from(b64, 'base64')).toString('utf8')) as unknown;
    if (typeof doc !== 'object' || doc === null) return undefined;
    const d = doc as Record<string, unknown>;
    if (
      typeof d['TLS.identifier'] !== 'string' ||
      typeof d['TLS.sdkappid'] !== 'number' ||
      typeof d['TLS.time'] !== 'number' ||
      typeof d['TLS.expire'] !== 'number' ||
      typeof d['TLS.sig'] !== 'string'
    ) {
      return undefined;
    }
    return d as unknown as UserSigDocument;
  } catch {
    return undefined;
  }
}

/** Why a UserSig was refused, mapped to the TIM ErrorCode Tencent answers with. */
export type UserSigVerdict =
  | { ok: true }
  | { ok: false; errorCode: 70001 | 70003 | 70013 | 70014; reason: string };

/**
 * Checks a UserSig as Tencent does: well-formed (70003), same identifier (70013) and SDKAppID (70014)
 * as the request, a valid HMAC (70003), and not expired (70001).
 */
export function verifyUserSig(
  sig: string,
  expected: { secretKey: string; sdkAppId: number; identifier: string; now?: number },
): UserSigVerdict {
  const doc = decodeUserSig(sig);
  if (!doc) return { ok: false, errorCode: 70003, reason: 'UserSig is not well-formed' };
  if (doc['TLS.identifier'] !== expected.identifier) {
    return { ok: false, errorCode: 70013, reason: 'identifier differs from the one in the UserSig' };
  }
  if (doc['TLS.sdkappid'] !== expected.sdkAppId) {
    return { ok: false, errorCode: 70014, reason: 'SDKAppID differs from the one in the UserSig' };
  }
  const want = Buffer.from(
    userSigHmac(
      expected.secretKey,
      doc['TLS.identifier'],
      doc['TLS.sdkappid'],
      doc['TLS.time'],
      doc['TLS.expire'],
    ),
  );
  const got = Buffer.from(doc['TLS.sig']);
  if (want.length !== got.length || !timingSafeEqual(want, got)) {
    return { ok: false, errorCode: 70003, reason: 'UserSig signature is wrong' };
  }
  const now = expected.now ?? systemClock();
  if (now > doc['TLS.time'] + doc['TLS.expire']) {
    return { ok: false, errorCode: 70001, reason: 'UserSig expired' };
  }
  return { ok: true };
}

/** Supplies the UserSig for each call. */
export interface UserSigProvider {
  /** The UserSig to put on the next call. */
  current(): string;
  /**
   * Forgets the cached UserSig after Tencent refused it (70001/70052).
   * Returns false when a new one cannot be made (a fixed `TIM_USERSIG`).
   */
  invalidate(): boolean;
}

/** A fixed UserSig from `TIM_USERSIG`; it cannot be renewed. */
export class StaticUserSig implements UserSigProvider {
  readonly #sig: string;
  constructor(sig: string) {
    this.#sig = sig;
  }
  current(): string {
    return this.#sig;
  }
  invalidate(): boolean {
    return false;
  }
  /** Keeps the UserSig out of logs and `util.inspect`. */
  toJSON(): string {
    return 'StaticUserSig(redacted)';
  }
}

/**
 * Signs UserSigs from the secret key, caches one, and makes a new one once less than
 * `renewBeforeSeconds` of its validity is left, so a call never goes out with a sig about to lapse.
 */
export class SigningUserSig implements UserSigProvider {
  readonly #secretKey: string;
  readonly #sdkAppId: number;
  readonly #identifier: string;
  readonly #expireSeconds: number;
  readonly #renewBeforeSeconds: number;
  readonly #clock: Clock;
  #cached: { sig: string; renewAt: number } | undefined;

  constructor(opts: {
    secretKey: string;
    sdkAppId: number;
    identifier: string;
    /** Validity of each UserSig. Default 24 h, as public SDKs use. */
    expireSeconds?: number;
    /** Renew this long before expiry. Default 1 h. */
    renewBeforeSeconds?: number;
    clock?: Clock;
  }) {
    this.#secretKey = opts.secretKey;
    this.#sdkAppId = opts.sdkAppId;
    this.#identifier = opts.identifier;
    this.#expireSeconds = opts.expireSeconds ?? 86_400;
    this.#renewBeforeSeconds = Math.min(
      opts.renewBeforeSeconds ?? 3_600,
      Math.floor(this.#expireSeconds / 2),
    );
    this.#clock = opts.clock ?? systemClock;
  }

  current(): string {
    const now = this.#clock();
    if (!this.#cached || now >= this.#cached.renewAt) {
      const sig = generateUserSig({
        secretKey: this.#secretKey,
        sdkAppId: this.#sdkAppId,
        identifier: this.#identifier,
        expireSeconds: this.#expireSeconds,
        now,
      });
      this.#cached = { sig, renewAt: now + this.#expireSeconds - this.#renewBeforeSeconds };
    }
    return this.#cached.sig;
  }

  invalidate(): boolean {
    this.#cached = undefined;
    return true;
  }

  /** Keeps the key and the UserSig out of logs and `util.inspect`. */
  toJSON(): string {
    return 'SigningUserSig(redacted)';
  }
}
