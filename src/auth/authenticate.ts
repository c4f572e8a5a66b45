// Authentication: turns an Authorization header into an Identity, or into an RFC 6750 refusal
// that the HTTP front sends as 400/401 with a WWW-Authenticate header (protected-resource.ts).
//
// Bearer tokens shaped like a JWT go to the OIDC verifier; anything else is tried as an API key.
// Credentials that were sent but do not verify are always refused, even when anonymous access is
// on: a bad token is never silently downgraded to the anonymous identity.
import type { Logger } from 'pino';
import type { AuthConfig } from '../config/schema.js';
import { createApiKeyVerifier, type ApiKeyVerifier } from './api-keys.js';
import { ANONYMOUS, type Identity } from './identity.js';
import { OidcVerifier, type OidcVerifierOptions } from './oidc.js';

export type AuthErrorCode = 'invalid_request' | 'invalid_token';

/** `error` is absent when no (usable) credentials were sent: RFC 6750 section 3.1 says the
 *  response then carries no error code, which tells an MCP client to start its OAuth flow. */
export type AuthFailure = { ok: false; status: 400 | 401; error?: AuthErrorCode; description: string };
export type AuthOutcome = { ok: true; identity: Identity } | AuthFailure;

export interface AuthenticateContext {
  /** The /mcp/<server> endpoint being called. With a resource URL (auth.resourceUrl, or the
   *  resourceUrl option), a token whose audience is
   *  that endpoint's resource URL (`<resourceUrl>/mcp/<server>`, as MCP clients request it through
   *  RFC 8707 resource indicators) is accepted besides auth.oidc.audience. */
  server?: string;
}

export interface Authenticator {
  authenticate(authorizationHeader: string | undefined, ctx?: AuthenticateContext): Promise<AuthOutcome>;
  /** False while the OIDC issuer's discovery or JWKS could not be loaded (for /readyz). */
  ready(): boolean;
  /** Why ready() is false, for /readyz and logs. */
  readinessProblem(): string | undefined;
  /** Loads the OIDC issuer's keys. Never throws: on failure it logs, stays not-ready, and retries
   *  in the background with exponential backoff until the issuer answers. */
  start(): Promise<void>;
  close(): void;
}

export interface AuthenticatorOptions {
  log?: Logger;
  fetch?: typeof fetch;
  /** Tuning, mostly for tests and benchmarks. */
  oidc?: Omit<OidcVerifierOptions, 'fetch' | 'log'>;
  retry?: { initialMs?: number; maxMs?: number };
  /** The gateway's canonical public URL when auth.resourceUrl is not set (e.g. the listen address
   *  once bound). Must come from configuration, never from a request's Host header: it decides
   *  which audiences are this gateway. */
  resourceUrl?: string;
  /** Longest bearer token accepted (default MAX_TOKEN_BYTES). */
  maxTokenBytes?: number;
}

/** Longest bearer token accepted. Real access tokens are 1-4 KiB; anything much larger is either
 *  abuse or a token stuffed with claims we would refuse anyway. */
export const MAX_TOKEN_BYTES = 8192;
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
/** RFC 6750 section 2.1 b64token. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

export function createAuthenticator(auth: AuthConfig, opts: AuthenticatorOptions = {}): Authenticator {
  const log = opts.log;
  const apiKeys: ApiKeyVerifier = createApiKeyVerifier(auth.apiKeys);
  const oidc = auth.oidc ? new OidcVerifier(auth.oidc, { ...opts.oidc, fetch: opts.fetch, log }) : undefined;
  const resourceBase = (auth.resourceUrl ?? opts.resourceUrl)?.replace(/\/+$/, '');
  const initialDelay = opts.retry?.initialMs ?? 1000;
  const maxDelay = opts.retry?.maxMs ?? 60_000;
  const refreshMs = opts.oidc?.jwksRefreshMs ?? 10 * 60_000;
  const maxToken = opts.maxTokenBytes ?? MAX_TOKEN_BYTES;
  let retryTimer: NodeJS.Timeout | undefined;
  let refreshTimer: NodeJS.Timeout | undefined;
  let closed = false;

  const refuse = (status: 400 | 401, error: AuthErrorCode | undefined, description: string): AuthFailure =>
    error ? { ok: false, status, error, description } : { ok: false, status, description };

  async function attempt(delay: number): Promise<void> {
    if (!oidc || closed) return;
    try {
      await oidc.load();
      if (closed) return;
      log?.info({ issuer: oidc.issuer }, 'OIDC issuer keys loaded');
      refreshTimer = setInterval(() => void oidc.refresh(), refreshMs);
      refreshTimer.unref();
    } catch (e) {
      if (closed) return;
      // Jitter so that replicas restarted together do not hammer a recovering provider in step.
      const wait = Math.round(delay * (0.8 + Math.random() * 0.4));
      log?.error({ issuer: oidc.issuer, retryInMs: wait }, `OIDC issuer unavailable, bearer JWTs are refused until it answers: ${(e as Error).message}`);
      retryTimer = setTimeout(() => void attempt(Math.min(delay * 2, maxDelay)), wait);
      retryTimer.unref();
    }
  }

  function acceptedAudiences(ctx: AuthenticateContext | undefined): string[] {
    if (!resourceBase) return [];
    return ctx?.server ? [resourceBase, `${resourceBase}/mcp/${ctx.server}`] : [resourceBase];
  }

  return {
    async authenticate(header, ctx) {
      if (header === undefined) {
        if (auth.anonymous) return { ok: true, identity: ANONYMOUS };
        return refuse(401, undefined, 'authentication required: send Authorization: Bearer <token>');
      }
      // Checked before any parsing, so an oversized header costs nothing but this comparison.
      if (header.length > maxToken + 64) return refuse(400, 'invalid_request', `the Authorization header is ${header.length} bytes; a bearer token may be at most ${maxToken}`);
      if (!PRINTABLE_ASCII.test(header)) return refuse(400, 'invalid_request', 'the Authorization header contains control or non-ASCII characters');
      const sp = header.indexOf(' ');
      const scheme = sp === -1 ? header : header.slice(0, sp);
      if (scheme.toLowerCase() !== 'bearer') {
        // An unsupported scheme counts as "no credentials" (RFC 6750 section 3.1): no error code.
        return refuse(401, undefined, `unsupported authorization scheme "${scheme.slice(0, 32)}": use Authorization: Bearer <token>`);
      }
      const token = sp === -1 ? '' : header.slice(sp + 1).replace(/^ +/, '');
      if (token === '') return refuse(400, 'invalid_request', 'the Bearer authorization header has no token');
      if (token.length > maxToken) return refuse(400, 'invalid_request', `the bearer token is ${token.length} bytes; a bearer token may be at most ${maxToken}`);
      if (!B64TOKEN.test(token)) return refuse(400, 'invalid_request', 'the bearer token contains characters not allowed in a token (RFC 6750 b64token)');

      if (JWT_SHAPE.test(token)) {
        if (!oidc) return refuse(401, 'invalid_token', 'JWT bearer tokens are not accepted: no OIDC issuer is configured');
        const result = await oidc.verify(token, acceptedAudiences(ctx));
        if (result.ok) return result;
        log?.debug({ issuer: oidc.issuer, reason: result.description }, 'bearer token refused');
        return refuse(401, 'invalid_token', result.description);
      }
      if (apiKeys.size === 0) return refuse(401, 'invalid_token', 'the token is not a JWT and no API keys are configured');
      const identity = apiKeys.verify(token);
      // Never say which key was closest: an unknown key is just unknown.
      return identity ? { ok: true, identity } : refuse(401, 'invalid_token', 'unknown API key');
    },
    ready: () => !oidc || oidc.loaded,
    readinessProblem: () => oidc?.problem,
    async start() {
      if (!oidc || oidc.loaded || retryTimer) return;
      await attempt(initialDelay);
    },
    close() {
      closed = true;
      clearTimeout(retryTimer);
      clearInterval(refreshTimer);
    },
  };
}
