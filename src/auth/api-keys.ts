// API keys for service accounts: `Authorization: Bearer <key>`. The config holds only the SHA-256
// of each key, so a leaked config file (or a policy repo) does not leak usable credentials.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { AuthConfig } from '../config/schema.js';
import { PortcullisError } from '../errors.js';
import type { Identity } from './identity.js';

export type ApiKeyConfig = AuthConfig['apiKeys'][number];

/** Hex SHA-256 of a key: what goes into auth.apiKeys[].sha256. */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** A fresh key: 32 random bytes (256 bits), base64url, with a recognisable prefix so secret
 *  scanners and humans can tell what leaked. */
export function generateApiKey(): string {
  return `pcl_${randomBytes(32).toString('base64url')}`;
}

export interface ApiKeyVerifier {
  /** The identity of the presented key, or undefined when no configured key matches. */
  verify(presented: string): Identity | undefined;
  readonly size: number;
}

/**
 * Constant-time reasoning:
 * 1. We hash the presented key first and compare 32-byte digests, so every comparison has the
 *    same length whatever was sent, and the bytes compared are not ones an attacker can choose
 *    (steering a digest prefix needs SHA-256 preimages): a byte-by-byte timing leak would say
 *    nothing useful about a configured key.
 * 2. Each comparison is crypto.timingSafeEqual, which reads all 32 bytes regardless of where they
 *    differ: timing does not reveal how much matched.
 * 3. We compare against every configured digest, with no early exit on a match: the time taken
 *    does not depend on which key (if any) matched, so timing does not reveal its position.
 * `compare` is injectable only so a test can count the comparisons.
 */
export function createApiKeyVerifier(keys: readonly ApiKeyConfig[], compare: (a: Buffer, b: Buffer) => boolean = timingSafeEqual): ApiKeyVerifier {
  const digests = keys.map((k) => Buffer.from(k.sha256, 'hex'));
  const seen = new Map<string, string>();
  for (const k of keys) {
    const other = seen.get(k.sha256);
    if (other !== undefined) throw new PortcullisError('PCL_CONFIG_INVALID', `auth.apiKeys: "${k.id}" and "${other}" have the same sha256: each key must be distinct`);
    seen.set(k.sha256, k.id);
  }
  const identities: Identity[] = keys.map((k) =>
    Object.freeze({
      sub: k.sub ?? k.id,
      groups: Object.freeze([...k.groups]) as string[],
      claims: Object.freeze({ sub: k.sub ?? k.id, keyId: k.id, groups: [...k.groups] }),
      via: 'api-key' as const,
    }),
  );
  return {
    size: keys.length,
    verify(presented: string): Identity | undefined {
      if (presented.length === 0 || digests.length === 0) return undefined;
      const digest = createHash('sha256').update(presented, 'utf8').digest();
      let match = -1;
      for (let i = 0; i < digests.length; i++) {
        const equal = compare(digest, digests[i]);
        // Branch-free selection of the first match; every digest is still compared.
        match = match === -1 && equal ? i : match;
      }
      return match === -1 ? undefined : identities[match];
    },
  };
}
