/** Who is calling: produced by authentication, consumed by policy, audit and logs. */
export interface Identity {
  sub: string;
  groups: string[];
  /** Every claim of the token (or the API key's fields), available to policy as identity.claims. */
  claims: Record<string, unknown>;
  /** How the identity was established. */
  via: 'oidc' | 'api-key' | 'anonymous' | 'local';
}

export const ANONYMOUS: Identity = Object.freeze({ sub: 'anonymous', groups: [], claims: {}, via: 'anonymous' as const });
