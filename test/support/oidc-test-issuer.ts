// Test support: a real OIDC provider (oidc-provider) on 127.0.0.1, issuing RS256 JWT access
// tokens by client credentials, whose signing keys can be rotated while it keeps its URL.
// Used by the auth tests; not part of the gateway (and not in the package).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose';

// oidc-provider prints development-only notices (in-memory adapter, quick-start keys, "Unsupported
// runtime" on Node 20) for every provider it starts. A test issuer is development-only by design,
// so its notices would bury what a person reading the test output needs; everything else passes.
for (const level of ['warn', 'info'] as const) {
  const write = console[level].bind(console);
  console[level] = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && /^(\x1b\[[0-9;]*m)?oidc-provider (WARNING|NOTICE): /.test(args[0])) return;
    write(...args);
  };
}
const { default: Provider } = await import('oidc-provider');

export interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

export interface TestIssuerOptions {
  /** Listen on this port (e.g. one an authenticator was already pointed at). Default: any. */
  port?: number;
  /** Extra claims per client id, e.g. { analyst: { groups: ['analysts'] } }. */
  claims?: Record<string, Record<string, unknown>>;
  /** Access-token lifetime in seconds. */
  ttl?: number;
}

export interface TestIssuer {
  issuer: string;
  port: number;
  /** The key tokens are signed with now (the first published key). */
  readonly current: SigningKey;
  /** A client-credentials access token for `clientId` (every client's secret is "secret"). */
  token(clientId: string, opts?: { resource?: string; scope?: string }): Promise<string>;
  /** Signs arbitrary claims with a key of the provider, for tokens it would never issue. */
  sign(payload: JWTPayload, opts?: { key?: SigningKey; header?: Record<string, unknown> }): Promise<string>;
  /** New signing key with a new kid; the old one stays published (the usual rotation overlap). */
  rotate(): Promise<SigningKey>;
  /** Stops publishing every key but the current one. */
  retireOldKeys(): void;
  stop(): Promise<void>;
}

export async function newSigningKey(kid: string): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { kid, privateKey, jwk: { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' } };
}

export const TEST_RESOURCE = 'https://gateway.test/mcp';

export async function startTestIssuer(opts: TestIssuerOptions = {}): Promise<TestIssuer> {
  let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.writeHead(503).end();
  const server: Server = createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', resolve);
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;
  const claims = opts.claims ?? {};
  let keys: SigningKey[] = [await newSigningKey('key-1')];
  let serial = 1;

  // oidc-provider reads its keys at construction: rotating builds a new provider behind the same
  // server, which is what a real provider's restart with a new key set looks like from outside.
  const build = () => {
    const provider = new Provider(issuer, {
      clients: ['analyst', 'nested', 'many-groups', 'huge', 'plain', 'mcp-client'].map((client_id) => ({
        client_id,
        client_secret: 'secret',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
      })),
      jwks: { keys: keys.map((k) => k.jwk) },
      features: {
        clientCredentials: { enabled: true },
        devInteractions: { enabled: false },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => TEST_RESOURCE,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx: unknown, resource: string) => ({ scope: 'mcp', audience: resource, accessTokenFormat: 'jwt', accessTokenTTL: opts.ttl ?? 300 }),
        },
      },
      ttl: { ClientCredentials: opts.ttl ?? 300 },
      extraTokenClaims: async (_ctx: unknown, token: { clientId?: string }) => claims[token.clientId ?? ''],
    });
    handler = provider.callback();
  };
  build();

  const tokenEndpoint = `${issuer}/token`;
  return {
    issuer,
    port,
    get current() {
      return keys[0];
    },
    async token(clientId, o = {}) {
      const body = new URLSearchParams({ grant_type: 'client_credentials', resource: o.resource ?? TEST_RESOURCE, scope: o.scope ?? 'mcp' });
      const res = await fetch(tokenEndpoint, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${clientId}:secret`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body,
      });
      const json = (await res.json()) as { access_token?: string };
      if (!res.ok || !json.access_token) throw new Error(`token request failed: ${res.status} ${JSON.stringify(json)}`);
      return json.access_token;
    },
    async sign(payload, o = {}) {
      const key = o.key ?? keys[0];
      return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: key.kid, ...o.header }).sign(key.privateKey);
    },
    async rotate() {
      const next = await newSigningKey(`key-${++serial}`);
      keys = [next, ...keys];
      build();
      return next;
    },
    retireOldKeys() {
      keys = keys.slice(0, 1);
      build();
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A port nobody listens on (for "issuer unreachable"); it may be reused by startTestIssuer. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
