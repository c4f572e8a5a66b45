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
