// Bearer JWTs from an OIDC provider, checked against the provider's JWKS (issue 4).
//
// The gateway is an OAuth 2.1 resource server: it only ever *validates* access tokens. A token
// is accepted only when its signature, issuer, audience and validity window all check out; the
// audience must name this gateway, so a token minted for another service is refused and no
// client token is ever usable elsewhere (and none is ever forwarded upstream).
import { createRemoteJWKSet, customFetch, decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from 'jose';
import type { Logger } from 'pino';
import type { AuthConfig } from '../config/schema.js';
import { PortcullisError } from '../errors.js';
import type { Identity } from './identity.js';

export type OidcConfig = NonNullable<AuthConfig['oidc']>;

/** Asymmetric algorithms only: with HS* anyone holding the shared secret could mint tokens. */
export const DEFAULT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
/** A token carrying more groups than this is refused rather than truncated: silently dropping
 *  groups could drop a deny-relevant one, and huge group lists are a cheap way to slow policy. */
export const MAX_GROUPS = 1000;
export const MAX_GROUP_LENGTH = 256;

export interface OidcVerifierOptions {
  fetch?: typeof fetch;
  log?: Logger;
  /** After a successful JWKS fetch, how long an unknown kid must wait before triggering another. */
  jwksCooldownMs?: number;
  /** Background JWKS refresh period, so removed (rotated-out) keys stop verifying. */
  jwksRefreshMs?: number;
  /** Timeout of discovery and JWKS requests. */
  timeoutMs?: number;
  /** How long a verified token's result is reused (see TokenCache); 0 disables the cache. */
  cacheTtlMs?: number;
  cacheMaxEntries?: number;
}

export type VerifyResult =
  | { ok: true; identity: Identity }
  | { ok: false; description: string; /** the provider's keys could not be had: not the token's fault */ unavailable?: boolean };

type KeySet = ReturnType<typeof createRemoteJWKSet>;

export class OidcVerifier {
  readonly issuer: string;
  readonly algorithms: string[];
  private readonly audiences: string[];
  private readonly skewSeconds: number;
  private readonly fetchImpl: typeof fetch;
  private readonly timeoutMs: number;
  private readonly cache: TokenCache;
  private keys?: KeySet;
  private lastError = 'not loaded yet';

  constructor(
    private readonly cfg: OidcConfig,
    private readonly opts: OidcVerifierOptions = {},
  ) {
    this.issuer = cfg.issuer;
    this.audiences = Array.isArray(cfg.audience) ? cfg.audience : [cfg.audience];
    this.algorithms = cfg.algorithms ?? DEFAULT_ALGORITHMS;
    if (this.algorithms.some((a) => a.toLowerCase() === 'none')) {
      throw new PortcullisError('PCL_CONFIG_INVALID', 'auth.oidc.algorithms must not contain "none": unsigned tokens are never accepted');
    }
    if (this.audiences.length === 0) throw new PortcullisError('PCL_CONFIG_INVALID', 'auth.oidc.audience must name at least one audience');
    this.skewSeconds = Math.max(0, cfg.clockSkew) / 1000;
    this.fetchImpl = opts.fetch ?? fetch;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.cache = new TokenCache(opts.cacheTtlMs ?? 60_000, opts.cacheMaxEntries ?? 4096);
  }

  /** True once the provider's keys have been loaded at least once. */
  get loaded(): boolean {
    return this.keys !== undefined;
  }

  get problem(): string | undefined {
    return this.keys ? undefined : this.lastError;
  }

  /** Discovers the JWKS and fetches it once. Throws PCL_AUTH_FAILED with a clear message when the
   *  provider cannot be reached or answers nonsense; the caller retries. */
  async load(): Promise<void> {
    try {
      const jwksUri = this.cfg.jwksUri ?? (await this.discover());
      const keys = createRemoteJWKSet(new URL(jwksUri), {
        timeoutDuration: this.timeoutMs,
        cooldownDuration: this.opts.jwksCooldownMs ?? 30_000,
        // Keys never go stale on their own: a failed refetch would then fail every request while
        // the provider is down. Rotation is picked up by an unknown kid (rate-limited by the
        // cooldown) and removal by refresh(), which keeps the old set when the provider is down.
        cacheMaxAge: Infinity,
        [customFetch]: this.fetchImpl as never,
      });
      try {
        await keys.reload();
      } catch (e) {
        throw new PortcullisError('PCL_AUTH_FAILED', `cannot load the JWKS at ${jwksUri}: ${reason(e)}`);
      }
      if (!keys.jwks()?.keys?.length) throw new PortcullisError('PCL_AUTH_FAILED', `the JWKS at ${jwksUri} has no keys`);
      this.keys = keys;
    } catch (e) {
      this.lastError = e instanceof PortcullisError ? e.message : `OIDC issuer ${this.issuer}: ${reason(e)}`;
      throw e instanceof PortcullisError ? e : new PortcullisError('PCL_AUTH_FAILED', this.lastError);
    }
  }

  /** Refetches the JWKS; on failure keeps the keys it has (logged). */
  async refresh(): Promise<void> {
    if (!this.keys) return;
    try {
      await this.keys.reload();
    } catch (e) {
      this.opts.log?.warn({ issuer: this.issuer, err: reason(e) }, 'JWKS refresh failed; keeping the keys already loaded');
    }
  }

  private async discover(): Promise<string> {
    const url = `${this.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    let res: Response;
    try {
      res = await this.fetchImpl(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (e) {
      throw new PortcullisError('PCL_AUTH_FAILED', `cannot reach OIDC discovery at ${url}: ${reason(e)}`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new PortcullisError('PCL_AUTH_FAILED', `OIDC discovery at ${url} answered HTTP ${res.status}`);
    }
    let doc: { issuer?: unknown; jwks_uri?: unknown };
    try {
      doc = (await res.json()) as typeof doc;
    } catch {
      throw new PortcullisError('PCL_AUTH_FAILED', `OIDC discovery at ${url} did not return JSON`);
    }
    // OIDC Discovery 1.0 section 4.3: the document must name exactly the issuer we asked for,
    // otherwise one provider could pass itself off as another.
    if (doc?.issuer !== this.issuer) {
      throw new PortcullisError('PCL_AUTH_FAILED', `OIDC discovery at ${url} names issuer ${JSON.stringify(doc?.issuer)}, not the configured "${this.issuer}" (they must match exactly, trailing slash included)`);
    }
    if (typeof doc.jwks_uri !== 'string') throw new PortcullisError('PCL_AUTH_FAILED', `OIDC discovery at ${url} has no jwks_uri`);
    return doc.jwks_uri;
  }

  /**
   * Verifies a compact JWS. `extraAudiences` are further audiences this request accepts (the
   * canonical resource URL of the endpoint, derived from configuration, never from the request).
   */
  async verify(token: string, extraAudiences: readonly string[] = []): Promise<VerifyResult> {
    // Only fully verified tokens are cached, so a hit may skip the header checks below.
    const cached = this.cache.get(token);
    if (cached) return this.checkAudience(cached.aud, extraAudiences) ?? { ok: true, identity: cached.identity };

    let alg: unknown;
    let kid: unknown;
    try {
      ({ alg, kid } = decodeProtectedHeader(token));
    } catch {
      return { ok: false, description: 'malformed token: the JWT header is not base64url-encoded JSON' };
    }
    // Checked before any key lookup, so an attacker cannot pick the algorithm (alg=none, or
    // HS256 keyed with a public key) and cannot make us fetch the JWKS with a forged header.
    if (typeof alg !== 'string') return { ok: false, description: 'malformed token: the JWT header has no alg' };
    if (alg.toLowerCase() === 'none') return { ok: false, description: 'unsigned token (alg "none") refused' };
    if (!this.algorithms.includes(alg)) {
      const why = alg.startsWith('HS') ? ' (symmetric algorithms are refused unless listed in auth.oidc.algorithms)' : '';
      return { ok: false, description: `token algorithm "${alg}" is not accepted${why}; accepted: ${this.algorithms.join(', ')}` };
    }

    if (!this.keys) {
      return { ok: false, unavailable: true, description: `the identity provider ${this.issuer} is unavailable (${this.lastError}); tokens cannot be verified until it is reachable` };
    }

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.keys, {
        issuer: this.issuer,
        algorithms: this.algorithms,
        clockTolerance: this.skewSeconds,
        requiredClaims: ['exp'],
      }));
    } catch (e) {
      return this.describe(e, kid);
    }

    const aud = payload.aud === undefined ? [] : Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    const audFailure = this.checkAudience(aud, extraAudiences);
    if (audFailure) return audFailure;
    if (typeof payload.sub !== 'string' || payload.sub === '') return { ok: false, description: 'token has no sub claim' };

    const groups = groupsFrom(payload as Record<string, unknown>, this.cfg.groupsClaim);
    if (!groups.ok) return groups;
    const expiresAt = (payload.exp as number) * 1000;
    const identity = deepFreeze({ sub: payload.sub, groups: groups.groups, claims: payload as Record<string, unknown>, via: 'oidc' as const, expiresAt });
    this.cache.set(token, { identity, aud }, expiresAt + this.skewSeconds * 1000);
    return { ok: true, identity };
  }

  private checkAudience(aud: readonly string[], extra: readonly string[]): { ok: false; description: string } | undefined {
    if (aud.some((a) => this.audiences.includes(a) || extra.includes(a))) return undefined;
    const expected = [...this.audiences, ...extra].map((a) => JSON.stringify(a)).join(', ');
    return {
      ok: false,
      description: aud.length
        ? `token audience ${aud.map((a) => JSON.stringify(a)).join(', ')} is not this gateway (expected ${expected}); tokens issued for other services are refused`
        : `token has no aud claim (expected ${expected})`,
    };
  }

  private describe(e: unknown, kid: unknown): VerifyResult {
    const when = (s: unknown) => (typeof s === 'number' ? new Date(s * 1000).toISOString() : String(s));
    const skew = `clock skew allowed: ${this.skewSeconds}s`;
    if (e instanceof errors.JWTExpired) return { ok: false, description: `token expired at ${when(e.payload.exp)} (${skew})` };
    if (e instanceof errors.JWTClaimValidationFailed) {
      if (e.claim === 'nbf') return { ok: false, description: `token not valid before ${when(e.payload.nbf)} (${skew})` };
      if (e.claim === 'iss') return { ok: false, description: `token issuer ${JSON.stringify(e.payload.iss ?? null)} is not the configured issuer "${this.issuer}"` };
      if (e.claim === 'exp') return { ok: false, description: 'token has no valid exp claim; tokens without an expiry are refused' };
      return { ok: false, description: `token claim "${e.claim}" is invalid: ${e.message}` };
    }
    if (e instanceof errors.JWSSignatureVerificationFailed) return { ok: false, description: 'bad token signature: the token was altered or not signed by the issuer' };
    if (e instanceof errors.JOSEAlgNotAllowed) return { ok: false, description: `token algorithm not accepted; accepted: ${this.algorithms.join(', ')}` };
    if (e instanceof errors.JWKSNoMatchingKey) {
      return { ok: false, description: `unknown signing key${typeof kid === 'string' ? ` "${kid}"` : ''}: no key in the issuer's JWKS matches (unknown or rotated-out key)` };
    }
    if (e instanceof errors.JWKSMultipleMatchingKeys) return { ok: false, description: 'several keys in the issuer\'s JWKS match the token; it must carry a kid' };
    if (e instanceof errors.JWKSTimeout) return { ok: false, unavailable: true, description: `timed out fetching the keys of ${this.issuer}` };
    if (e instanceof errors.JWSInvalid || e instanceof errors.JWTInvalid) return { ok: false, description: `malformed token: ${e.message}` };
    if (e instanceof errors.JOSENotSupported) return { ok: false, description: `unsupported token: ${e.message}` };
    if (e instanceof errors.JOSEError) return { ok: false, description: `token refused: ${e.message}` };
    return { ok: false, unavailable: true, description: `could not verify the token against ${this.issuer}: ${reason(e)}` };
  }
}

/** The value at `path`: a claim named exactly `path` first (namespaced claims such as
 *  "https://example.com/groups" contain dots), else a dotted walk ("realm_access.roles"). */
export function claimAt(claims: Record<string, unknown>, path: string): unknown {
  if (Object.hasOwn(claims, path)) return claims[path];
  let cur: unknown = claims;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur) || !Object.hasOwn(cur, part)) return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

export function groupsFrom(claims: Record<string, unknown>, path: string): { ok: true; groups: string[] } | { ok: false; description: string } {
  const value = claimAt(claims, path);
  if (value === undefined || value === null) return { ok: true, groups: [] };
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list)) return { ok: false, description: `groups claim "${path}" is neither a string nor an array` };
  if (list.length > MAX_GROUPS) return { ok: false, description: `token carries ${list.length} groups in "${path}"; the limit is ${MAX_GROUPS}` };
  for (const g of list) {
    if (typeof g !== 'string') return { ok: false, description: `groups claim "${path}" contains a non-string value` };
    if (g.length > MAX_GROUP_LENGTH) return { ok: false, description: `a group in "${path}" is ${g.length} characters long; the limit is ${MAX_GROUP_LENGTH}` };
  }
  return { ok: true, groups: [...new Set(list as string[])] };
}

/**
 * Verified tokens, reused by their exact string. Why this is safe:
 * - an entry exists only after a full verification (signature, iss, exp/nbf, sub, groups), and
 *   only the byte-identical token string can hit it: no other token, however similar, can;
 * - it lives until min(exp + skew, now + TTL): never past the token's own expiry, and a key
 *   removed from the JWKS stops being honoured within the TTL (60 s by default);
 * - the audience is re-checked on every hit, because it depends on the endpoint;
 * - failures are never cached, and the cache belongs to one authenticator: a config reload
 *   builds a new one.
 * Why it is worth it: an RS256/ES256 verify costs tens to hundreds of µs, a Map lookup well
 * under one. Bounded (FIFO eviction) so a flood of distinct valid tokens cannot grow memory.
 */
export class TokenCache {
  private readonly entries = new Map<string, { value: CachedToken; until: number }>();
  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
  ) {}

  get(token: string): CachedToken | undefined {
    if (this.ttlMs <= 0) return undefined;
    const e = this.entries.get(token);
    if (!e) return undefined;
    if (Date.now() >= e.until) {
      this.entries.delete(token);
      return undefined;
    }
    return e.value;
  }

  set(token: string, value: CachedToken, expiresAt: number): void {
    if (this.ttlMs <= 0) return;
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(token, { value, until: Math.min(expiresAt, Date.now() + this.ttlMs) });
  }
}

interface CachedToken {
  identity: Identity;
  aud: string[];
}

/** Identities are shared by cached hits and handed to policy: nobody may change one. */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

function reason(e: unknown): string {
  const err = e as { message?: string; cause?: { code?: string; message?: string } };
  return err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(e);
}
