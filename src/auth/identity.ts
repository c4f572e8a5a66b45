/** Who is calling: produced by authentication, consumed by policy, audit and logs. */
export interface Identity {
  sub: string;
  groups: string[];
  /** Every claim of the token (or the API key's fields), available to policy as identity.claims. */
  claims: Record<string, unknown>;
  /** How the identity was established. */
  via: 'oidc' | 'api-key' | 'anonymous' | 'local';
  /** When the credential stops being valid (ms since epoch): a token's exp. Absent for API keys. */
  expiresAt?: number;
}

export const ANONYMOUS: Identity = Object.freeze({ sub: 'anonymous', groups: [], claims: {}, via: 'anonymous' as const });

/**
 * The credential a session is bound to: an API key by its id (two keys that share a `sub` are two
 * credentials), an OIDC token by its issuer and subject (the same principal across token
 * refreshes). How the identity was established is part of it, so an API key whose sub equals a
 * token's subject is still someone else.
 */
export function identityKey(identity: Identity): string {
  switch (identity.via) {
    case 'api-key':
      return JSON.stringify(['api-key', String(identity.claims.keyId)]);
    case 'oidc':
      return JSON.stringify(['oidc', typeof identity.claims.iss === 'string' ? identity.claims.iss : '', identity.sub]);
    default:
      return JSON.stringify([identity.via, identity.sub]);
  }
}

/** How logs and audit records name an identity: its sub, and for an API key which key. */
export function identityLabel(identity: Identity): { sub: string; keyId?: string } {
  return identity.via === 'api-key' ? { sub: identity.sub, keyId: String(identity.claims.keyId) } : { sub: identity.sub };
}
