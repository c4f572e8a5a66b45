// Issue 4 end to end: identity through the real gateway (wired like `portcullis serve`), with a REAL
// OIDC provider (oidc-provider, client credentials, groups claim), the official SDK client, and real
// upstreams (server-everything over stdio; an SDK Streamable HTTP server that records headers).
// Tokens the provider would never issue (expired, foreign issuer, alg none…) are signed here with
// the provider's own key, so the only thing wrong with each is what its test says.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import { discoverAuthorizationServerMetadata, discoverOAuthProtectedResourceMetadata, extractWWWAuthenticateParams } from '@modelcontextprotocol/sdk/client/auth.js';
import { getDefaultEnvironment, StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { base64url, generateKeyPair, SignJWT } from 'jose';
import { generateApiKey, hashApiKey } from '../../src/auth/api-keys.js';
import { startTestIssuer, TEST_RESOURCE, type SigningKey, type TestIssuer } from '../support/oidc-test-issuer.js';
import { startRecordingUpstream, type RecordingUpstream } from '../fixtures/identity-recording-upstream.js';
import { BIN, CLIENT_INFO, freePort, INIT_PARAMS, MCP_HEADERS, post, raw, ROOT, startConfiguredGateway, upstreams, waitFor, writeConfig, type ConfiguredGateway, type RawResponse } from './harness.js';

const now = () => Math.floor(Date.now() / 1000);
const text = (r: unknown) => ((r as CallToolResult).content as Array<{ text?: string }>).map((c) => c.text ?? '').join('\n');
/** The JSON text of one dot-separated part of a JWT. */
const decodePart = (jwt: string, i: number) => Buffer.from(jwt.split('.')[i], 'base64url').toString('utf8');
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** echo only for group-a; get-sum and the recording upstream's whoami for everyone; protocol methods for everyone. */
const POLICY = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: identity }
server: "*"
default: deny
rules:
  - { name: housekeeping, effect: allow, methods: ["*"] }
  - { name: echo-for-a, effect: allow, who: { groups: [group-a] }, tools: [echo] }
  - { name: sum-for-all, effect: allow, tools: [get-sum, whoami] }
`;
const AUDIENCE = 'portcullis-e2e';
const UPSTREAM_SECRET = 'Bearer upstream-secret';
const keyA = generateApiKey();
const keyB = generateApiKey();
/** An API key whose sub equals a provider client's sub: still another principal. */
const keyAnalyst = generateApiKey();
const apiKeys = [
  { id: 'ci-a', sha256: hashApiKey(keyA), groups: ['group-a'] },
  { id: 'ci-b', sha256: hashApiKey(keyB), groups: ['group-b'] },
  { id: 'analyst', sha256: hashApiKey(keyAnalyst), groups: ['group-a'] },
];

let idp: TestIssuer;
let gw: ConfiguredGateway;
let rec: RecordingUpstream;
let gwStartedAt = 0;
/** The provider's first key, kept for the rotated-out-key check at the end. */
let firstKey: SigningKey;

before(async () => {
  idp = await startTestIssuer({
    claims: {
      'mcp-client': { groups: ['group-a'] },
      analyst: { groups: ['group-a'] },
      plain: { groups: ['group-b'] },
      // 1,001 distinct two-character groups: just over the group limit, still under the token size limit.
      'many-groups': { groups: Array.from({ length: 1001 }, (_, i) => i.toString(36).padStart(2, '0')) },
      // 2,000 groups: a token over the 8 KiB token limit but under the 16 KiB header limit.
      huge: { groups: Array.from({ length: 2000 }, (_, i) => i.toString(36).padStart(2, '0')) },
    },
  });
  firstKey = idp.current;
  rec = await startRecordingUpstream();
  // A fixed port: the gateway's resource URL (what MCP clients ask tokens for) is then its listen address.
  const port = await freePort();
  gw = await startConfiguredGateway(
    {
      listen: { host: '127.0.0.1', port },
      servers: { everything: upstreams.everything(), rec: { transport: 'http', url: rec.url, headers: { Authorization: UPSTREAM_SECRET } } },
      auth: { oidc: { issuer: idp.issuer, audience: AUDIENCE }, apiKeys },
    },
    { 'identity.yaml': POLICY },
  );
  gwStartedAt = Date.now();
});
after(async () => {
  await gw?.close();
  await rec?.close();
  await idp?.stop();
});

// ---------------------------------------------------------------------------------------------
// helpers

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
const resourceOf = (server: string) => gw.url(server);
/** A provider token (client credentials) for the /mcp/<server> endpoint, as an MCP client asks for it. */
const tokenFor = (client: string, server = 'everything') => idp.token(client, { resource: resourceOf(server) });
const initialize = (headers: Record<string, string>, server = 'everything') => post(gw, server, { jsonrpc: '2.0', id: 0, method: 'initialize', params: INIT_PARAMS }, headers);

async function httpClient(server: string, headers: Record<string, string>, base: { url(server: string): string } = gw): Promise<Client> {
  const client = new Client(CLIENT_INFO);
  const transport = new StreamableHTTPClientTransport(new URL(base.url(server)), { requestInit: { headers } });
  await client.connect(transport);
  // close() ends the session at the gateway too (DELETE), so its upstream process exits now.
  const close = client.close.bind(client);
  client.close = async () => {
    await transport.terminateSession().catch(() => undefined);
    await close();
  };
  return client;
}

/** initialize + initialized over raw HTTP with these credentials; the session headers. */
async function rawSession(auth: Record<string, string>, server = 'everything'): Promise<Record<string, string>> {
  const res = await initialize(auth, server);
  assert.equal(res.status, 200, res.text);
  const headers = { ...auth, 'mcp-session-id': res.headers['mcp-session-id'] as string, 'mcp-protocol-version': res.json.result.protocolVersion };
  assert.equal((await post(gw, server, { jsonrpc: '2.0', method: 'notifications/initialized' }, headers)).status, 202);
  return headers;
}

/** The result of JSON-RPC request `id` in a response (an SSE body may carry the upstream's notifications first). */
function resultOf(res: RawResponse, id: number): any {
  const reply = res.messages.find((m) => m?.id === id && ('result' in m || 'error' in m));
  assert.ok(reply, `no reply to request ${id} in ${res.status} ${res.text}`);
  assert.ok('result' in reply, `request ${id} failed: ${JSON.stringify(reply)}`);
  return reply.result;
}

/** WWW-Authenticate auth-params (quoted strings unescaped). */
function authParams(res: RawResponse): Record<string, string> {
  const h = res.headers['www-authenticate'];
  assert.equal(typeof h, 'string', `no WWW-Authenticate on ${res.status} ${res.text}`);
  assert.match(h as string, /^Bearer( |$)/);
  const out: Record<string, string> = {};
  for (const m of (h as string).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) out[m[1]] = m[2].replace(/\\(.)/g, '$1');
  return out;
}

/** A refusal with this status and error code whose description (header and body alike) matches. */
function assertRefused(res: RawResponse, status: number, error: string, description: RegExp, server = 'everything'): void {
  assert.equal(res.status, status, res.text);
  assert.equal(res.headers['mcp-session-id'], undefined, 'no session for a refused request');
  const p = authParams(res);
  assert.equal(p.resource_metadata, `${gw.base}/.well-known/oauth-protected-resource/mcp/${server}`);
  assert.equal(p.error, error);
  assert.match(p.error_description, description);
  assert.equal(res.json?.error, error);
  assert.equal(res.json?.error_description, p.error_description);
}

// ---------------------------------------------------------------------------------------------

describe('OIDC tokens from a real provider drive policy through the gateway', () => {
  test('the SDK client with the client-credentials provider discovers the issuer from the 401, obtains a token and connects', async () => {
    const provider = new ClientCredentialsProvider({ clientId: 'mcp-client', clientSecret: 'secret', expectedIssuer: idp.issuer });
    const client = new Client(CLIENT_INFO);
    const transport = new StreamableHTTPClientTransport(new URL(gw.url('everything')), { authProvider: provider });
    await client.connect(transport);
    try {
      const token = provider.tokens()?.access_token;
      assert.ok(token, 'the provider obtained a token');
      const claims = JSON.parse(decodePart(token, 1)) as Record<string, unknown>;
      // RFC 8707: the SDK asked for a token bound to this endpoint, found in the protected-resource metadata.
      assert.equal(claims.aud, resourceOf('everything'));
      assert.equal(claims.iss, idp.issuer);
      assert.deepEqual(claims.groups, ['group-a']);
      assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'via oauth' } })), 'Echo: via oauth');
    } finally {
      await transport.terminateSession().catch(() => undefined);
      await client.close();
    }
  });

  test('group-a may call echo, group-b gets the policy denial; tools/list differs', async () => {
    const a = await httpClient('everything', bearer(await tokenFor('analyst')));
    const b = await httpClient('everything', bearer(await tokenFor('plain')));
    try {
      const namesA = (await a.listTools()).tools.map((t) => t.name).sort();
      const namesB = (await b.listTools()).tools.map((t) => t.name).sort();
      assert.deepEqual(namesA, ['echo', 'get-sum']);
      assert.deepEqual(namesB, ['get-sum']);
      assert.equal(text(await a.callTool({ name: 'echo', arguments: { message: 'hi' } })), 'Echo: hi');
      const denied = (await b.callTool({ name: 'echo', arguments: { message: 'hi' } })) as CallToolResult;
      assert.equal(denied.isError, true);
      assert.match(text(denied), /Denied by policy rule identity\/default/);
      assert.match(text(await b.callTool({ name: 'get-sum', arguments: { a: 2, b: 3 } })), /5/);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test('a token for another endpoint of this gateway is refused here (audience is per endpoint)', async () => {
    assertRefused(await initialize(bearer(await tokenFor('analyst', 'rec'))), 401, 'invalid_token', /token audience ".*\/mcp\/rec" is not this gateway/);
    // …and accepted where it belongs.
    const auth = bearer(await tokenFor('analyst', 'rec'));
    const ok = await initialize(auth, 'rec');
    assert.equal(ok.status, 200, ok.text);
    await raw(gw.base, '/mcp/rec', { method: 'DELETE', headers: { ...auth, 'mcp-session-id': ok.headers['mcp-session-id'] as string } });
  });
});

describe('tokens that do not verify: 401 invalid_token with a clear description, nothing started', () => {
  const claims = () => ({ sub: 'mallory', groups: ['group-a'], aud: resourceOf('everything'), iss: idp.issuer, iat: now(), exp: now() + 300 });
  const cases: Array<[string, () => Promise<string>, RegExp]> = [
    ['expired', () => idp.sign({ ...claims(), iat: now() - 600, exp: now() - 120 }), /^token expired at \d{4}-.*clock skew allowed: 30s/],
    ['not yet valid', () => idp.sign({ ...claims(), nbf: now() + 300 }), /^token not valid before \d{4}-/],
    ['wrong issuer', () => idp.sign({ ...claims(), iss: 'https://evil.example' }), /^token issuer "https:\/\/evil\.example" is not the configured issuer/],
    ['wrong audience (a real provider token for another service)', () => idp.token('analyst', { resource: 'https://other-service.example/mcp' }), /^token audience "https:\/\/other-service\.example\/mcp" is not this gateway/],
    ['the provider\'s default audience, not this gateway', () => idp.token('analyst'), new RegExp(`^token audience "${TEST_RESOURCE}" is not this gateway`)],
    [
      'bad signature (a real token whose groups were edited)',
      async () => {
        const [h, p, s] = (await tokenFor('plain')).split('.');
        const payload = JSON.parse(decodePart(p, 0)) as Record<string, unknown>;
        return [h, base64url.encode(JSON.stringify({ ...payload, groups: ['group-a'] })), s].join('.');
      },
      /^bad token signature/,
    ],
    [
      'signed by a key that is not the provider\'s, under the provider\'s kid',
      async () => new SignJWT(claims()).setProtectedHeader({ alg: 'RS256', kid: idp.current.kid }).sign((await generateKeyPair('RS256')).privateKey),
      /^bad token signature/,
    ],
    ['alg none', async () => `${base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${base64url.encode(JSON.stringify(claims()))}.`, /^unsigned token \(alg "none"\) refused/],
    [
      'HS256 with a guessable secret',
      async () => new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: idp.current.kid }).sign(new TextEncoder().encode('secret')),
      /^token algorithm "HS256" is not accepted/,
    ],
    ['no exp', () => idp.sign({ ...claims(), exp: undefined }), /^token has no valid exp claim/],
  ];
  for (const [name, make, description] of cases) {
    test(name, async () => {
      const sessions = gw.running.gateway.sessions.size;
      assertRefused(await initialize(bearer(await make())), 401, 'invalid_token', description);
      assert.equal(gw.running.gateway.sessions.size, sessions, 'a refused request opens no session (no upstream started)');
    });
  }
});

describe('no credentials: how an MCP client finds the authorization server', () => {
  test('401 with resource_metadata and no error code; the metadata names the issuer (RFC 9728)', async () => {
    const sessions = gw.running.gateway.sessions.size;
    const res = await initialize({});
    assert.equal(gw.running.gateway.sessions.size, sessions);
    assert.equal(res.status, 401);
    const metadataUrl = `${gw.base}/.well-known/oauth-protected-resource/mcp/everything`;
    assert.equal(res.headers['www-authenticate'], `Bearer resource_metadata="${metadataUrl}"`);

    const doc = await (await fetch(metadataUrl)).json();
    assert.deepEqual(doc, {
      resource: resourceOf('everything'),
      authorization_servers: [idp.issuer],
      bearer_methods_supported: ['header'],
      resource_name: 'Portcullis MCP gateway',
    });
    const rootDoc = await (await fetch(`${gw.base}/.well-known/oauth-protected-resource`)).json();
    assert.equal(rootDoc.resource, gw.base);
    assert.deepEqual(rootDoc.authorization_servers, [idp.issuer]);
    assert.equal((await fetch(`${gw.base}/.well-known/oauth-protected-resource/mcp/nope`)).status, 404);
  });

  test('a scheme other than Bearer counts as no credentials (401, no error code)', async () => {
    const res = await initialize({ authorization: `Basic ${Buffer.from('a:b').toString('base64')}` });
    assert.equal(res.status, 401);
    assert.equal(authParams(res).error, undefined);
    assert.match(res.json.error_description, /unsupported authorization scheme "Basic"/);
  });

  test("the SDK's discovery functions follow the gateway's 401 to the authorization server's metadata", async () => {
    const res = await fetch(gw.url('everything'), { method: 'POST', headers: MCP_HEADERS, body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: INIT_PARAMS }) });
    await res.body?.cancel();
    const { resourceMetadataUrl, error } = extractWWWAuthenticateParams(res);
    assert.equal(error, undefined);
    assert.ok(resourceMetadataUrl);
    const prm = await discoverOAuthProtectedResourceMetadata(gw.url('everything'), { resourceMetadataUrl });
    assert.equal(prm.resource, resourceOf('everything'));
    assert.deepEqual(prm.authorization_servers, [idp.issuer]);
    // Also without the hint: the SDK's own well-known probing finds the same document.
    assert.deepEqual(await discoverOAuthProtectedResourceMetadata(gw.url('everything')), prm);
    const as = await discoverAuthorizationServerMetadata(prm.authorization_servers![0]);
    assert.equal(as?.issuer, idp.issuer);
    assert.equal(as?.token_endpoint, `${idp.issuer}/token`);
    assert.ok(as?.grant_types_supported?.includes('client_credentials'));
  });
});

describe('a gateway listening on a wildcard address (0.0.0.0, as in containers)', () => {
  test('never advertises http://0.0.0.0 as its resource; with auth.resourceUrl the SDK OAuth flow works', async () => {
    const port = await freePort();
    const servers = { everything: upstreams.everything() };
    const bare = await startConfiguredGateway({ listen: { host: '0.0.0.0', port }, servers, auth: { oidc: { issuer: idp.issuer, audience: AUDIENCE } } }, { 'identity.yaml': POLICY });
    try {
      const res = await post({ base: `http://127.0.0.1:${port}` }, 'everything', { jsonrpc: '2.0', id: 0, method: 'initialize', params: INIT_PARAMS });
      assert.equal(res.status, 401);
      assert.equal(authParams(res).resource_metadata, `http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp/everything`);
    } finally {
      await bare.close();
    }
    const resourceUrl = `http://localhost:${port}`;
    const configured = await startConfiguredGateway({ listen: { host: '0.0.0.0', port }, servers, auth: { oidc: { issuer: idp.issuer, audience: AUDIENCE }, resourceUrl } }, { 'identity.yaml': POLICY });
    const provider = new ClientCredentialsProvider({ clientId: 'mcp-client', clientSecret: 'secret', expectedIssuer: idp.issuer });
    const client = new Client(CLIENT_INFO);
    const transport = new StreamableHTTPClientTransport(new URL(`${resourceUrl}/mcp/everything`), { authProvider: provider });
    try {
      await client.connect(transport);
      assert.equal(JSON.parse(decodePart(provider.tokens()!.access_token, 1)).aud, `${resourceUrl}/mcp/everything`);
      assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'wildcard' } })), 'Echo: wildcard');
    } finally {
      await transport.terminateSession().catch(() => undefined);
      await client.close();
      await configured.close();
    }
  });
});

describe('sessions belong to the identity that opened them', () => {
  test('a GET stream closes when the token that opened it expires', async () => {
    const shortLived = await idp.sign({ sub: 'brief', groups: ['group-a'], aud: resourceOf('everything'), iss: idp.issuer, iat: now(), exp: now() + 2 });
    const session = await rawSession(bearer(shortLived));
    const started = Date.now();
    const stream = await raw(gw.base, '/mcp/everything', { method: 'GET', headers: { ...session, accept: 'text/event-stream' }, timeoutMs: 10_000 });
    const lasted = Date.now() - started;
    assert.equal(stream.status, 200, stream.text);
    // exp is whole seconds: the stream ends within ~2 s, long before the raw client's own 10 s timeout.
    assert.ok(lasted < 4_000, `the stream stayed open ${lasted} ms after its token expired`);
  });

  test('a stolen session id with another token or API key gets 404; the owner keeps working', async () => {
    const ownerToken = await tokenFor('analyst');
    const owner = await rawSession(bearer(ownerToken));
    const list = { jsonrpc: '2.0', id: 1, method: 'tools/list' };
    const thieves: Array<[string, Record<string, string>]> = [
      ['another OIDC identity', bearer(await tokenFor('plain'))],
      ['an API key', bearer(keyA)],
      ["an API key whose sub is the owner's sub", bearer(keyAnalyst)],
    ];
    for (const [who, auth] of thieves) {
      const h = { ...owner, ...auth };
      const res = await post(gw, 'everything', list, h);
      assert.equal(res.status, 404, `${who}: ${res.text}`);
      assert.equal(res.json?.error?.code, -32001);
      assert.equal((await raw(gw.base, '/mcp/everything', { method: 'GET', headers: { ...h, accept: 'text/event-stream' } })).status, 404, `${who}: GET`);
      assert.equal((await raw(gw.base, '/mcp/everything', { method: 'DELETE', headers: h })).status, 404, `${who}: DELETE`);
    }
    // A bad token on the owner's session is a 401, not a way in.
    assertRefused(await post(gw, 'everything', list, { ...owner, ...bearer(keyA.slice(0, -2)) }), 401, 'invalid_token', /unknown API key/);
    // The thieves' DELETEs did not end it: the owner goes on, also with a refreshed token (same issuer and sub).
    const refreshed = await tokenFor('analyst');
    assert.notEqual(refreshed, ownerToken);
    for (const auth of [bearer(ownerToken), bearer(refreshed)]) {
      const res = await post(gw, 'everything', { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { message: 'still mine' } } }, { ...owner, ...auth });
      assert.equal(res.status, 200, res.text);
      assert.equal(resultOf(res, 2).content[0].text, 'Echo: still mine');
    }
    assert.equal((await raw(gw.base, '/mcp/everything', { method: 'DELETE', headers: owner })).status, 200);
  });

  test("a refreshed token's groups are the ones in force: a group removed mid-session stops counting", async () => {
    const tokenWith = (groups: string[]) => idp.sign({ sub: 'rotating-user', iss: idp.issuer, aud: resourceOf('everything'), iat: now(), exp: now() + 300, groups, jti: Math.random().toString(36) });
    const owner = await rawSession(bearer(await tokenWith(['group-a'])));
    const echo = (auth: Record<string, string>) => post(gw, 'everything', { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { message: 'x' } } }, { ...owner, ...auth });
    const list = async (auth: Record<string, string>) => resultOf(await post(gw, 'everything', { jsonrpc: '2.0', id: 2, method: 'tools/list' }, { ...owner, ...auth }), 2).tools.map((t: { name: string }) => t.name).sort();
    const first = await echo(bearer(await tokenWith(['group-a'])));
    assert.equal(resultOf(first, 1).isError, undefined, first.text);
    assert.deepEqual(await list(bearer(await tokenWith(['group-a']))), ['echo', 'get-sum']);
    // The provider removed group-a: the next token (same issuer and sub, so the same session) lacks it.
    const revoked = bearer(await tokenWith(['group-b']));
    const after = await echo(revoked);
    assert.equal(after.status, 200, after.text);
    assert.equal(resultOf(after, 1).isError, true, `echo still allowed after group-a was removed: ${after.text}`);
    assert.deepEqual(await list(revoked), ['get-sum']);
    assert.equal((await raw(gw.base, '/mcp/everything', { method: 'DELETE', headers: { ...owner, ...revoked } })).status, 200);
  });

  test('an API key session: another key, or an OIDC token with the same sub, gets 404', async () => {
    const owner = await rawSession(bearer(keyA));
    const sameSub = await idp.sign({ sub: 'ci-a', iss: idp.issuer, aud: resourceOf('everything'), iat: now(), exp: now() + 300, groups: ['group-a'] });
    for (const auth of [bearer(keyB), bearer(sameSub)]) {
      assert.equal((await post(gw, 'everything', { jsonrpc: '2.0', id: 1, method: 'ping' }, { ...owner, ...auth })).status, 404);
    }
    assert.equal((await post(gw, 'everything', { jsonrpc: '2.0', id: 1, method: 'ping' }, owner)).status, 200);
    assert.equal((await raw(gw.base, '/mcp/everything', { method: 'DELETE', headers: owner })).status, 200);
  });

  test('session ids are random UUIDs, unique per session', async () => {
    const token = await tokenFor('analyst');
    const sessions = await Promise.all(Array.from({ length: 5 }, () => rawSession(bearer(token))));
    const ids = sessions.map((s) => s['mcp-session-id']);
    for (const id of ids) assert.match(id, UUID_V4);
    assert.equal(new Set(ids).size, ids.length);
    await Promise.all(sessions.map((s) => raw(gw.base, '/mcp/everything', { method: 'DELETE', headers: s })));
  });
});

describe('API keys, and what reaches the upstream', () => {
  test('API keys give their groups to policy; a wrong key is 401 invalid_token', async () => {
    const a = await httpClient('everything', bearer(keyA));
    const b = await httpClient('everything', bearer(keyB));
    try {
      assert.deepEqual((await a.listTools()).tools.map((t) => t.name).sort(), ['echo', 'get-sum']);
      assert.deepEqual((await b.listTools()).tools.map((t) => t.name).sort(), ['get-sum']);
      assert.equal(text(await a.callTool({ name: 'echo', arguments: { message: 'key' } })), 'Echo: key');
      const denied = (await b.callTool({ name: 'echo', arguments: { message: 'key' } })) as CallToolResult;
      assert.equal(denied.isError, true);
      assert.match(text(denied), /identity\/default/);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
    assertRefused(await initialize(bearer(generateApiKey())), 401, 'invalid_token', /^unknown API key$/);
  });

  test("the upstream gets the gateway's configured credentials, never the client's token", async () => {
    const token = await tokenFor('analyst', 'rec');
    const before = rec.requests.length;
    for (const credential of [token, keyA]) {
      const client = await httpClient('rec', bearer(credential));
      assert.equal(text(await client.callTool({ name: 'whoami', arguments: { name: 'gateway' } })), 'hello gateway');
      await client.close();
    }
    const seen = rec.requests.slice(before);
    assert.ok(seen.length >= 4, `the upstream saw ${seen.length} requests`);
    for (const r of seen) {
      assert.equal(r.headers.authorization, UPSTREAM_SECRET, `${r.method} ${r.url}`);
      const all = JSON.stringify(r.headers);
      assert.ok(!all.includes(token) && !all.includes(token.split('.')[2]) && !all.includes(keyA), `client credentials leaked upstream in ${r.method}: ${all}`);
    }
  });
});

describe('malformed and oversized credentials', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['Bearer without a token', 'Bearer ', /has no token/],
    ['a token with a space in it', 'Bearer abc def', /not allowed in a token/],
    ['a non-ASCII token', 'Bearer tök\u00e9n', /control or non-ASCII/],
    ['a huge token (12 KiB)', `Bearer ${'a'.repeat(12 * 1024)}`, /at most 8192/],
  ];
  for (const [name, header, description] of cases) {
    test(`${name}: 400 invalid_request`, async () => {
      assertRefused(await initialize({ authorization: header }), 400, 'invalid_request', description);
    });
  }

  test('a header beyond limits.maxHeaderBytes: 431', async () => {
    assert.equal((await initialize({ authorization: `Bearer ${'a'.repeat(20 * 1024)}` })).status, 431);
  });

  test('a real token with 1,001 groups is refused, not truncated; one with 2,000 is too large to read', async () => {
    assertRefused(await initialize(bearer(await tokenFor('many-groups'))), 401, 'invalid_token', /^token carries 1001 groups in "groups"; the limit is 1000$/);
    const huge = await tokenFor('huge');
    assert.ok(huge.length > 8192 && huge.length < 15_000, String(huge.length));
    assertRefused(await initialize(bearer(huge)), 400, 'invalid_request', /may be at most 8192/);
  });
});

describe('an identity provider that is down when the gateway starts', () => {
  test('the gateway starts, /readyz is 503 naming auth, JWTs get 401, API keys work; the provider comes up and all is well without a restart', async () => {
    const port = await freePort();
    const issuer = `http://127.0.0.1:${port}`;
    const down = await startConfiguredGateway(
      { servers: { everything: upstreams.everything() }, auth: { oidc: { issuer, audience: TEST_RESOURCE }, apiKeys } },
      { 'identity.yaml': POLICY },
    );
    let late: TestIssuer | undefined;
    try {
      const ready = await fetch(`${down.base}/readyz`);
      assert.equal(ready.status, 503);
      const body = await ready.json();
      assert.equal(body.checks.auth, 'not ready');
      assert.equal(body.checks['upstream:everything'], 'ok');

      const init = (auth: Record<string, string>) => post(down, 'everything', { jsonrpc: '2.0', id: 0, method: 'initialize', params: INIT_PARAMS }, auth);
      const jwt = await idp.sign({ sub: 'early', iss: issuer, aud: TEST_RESOURCE, exp: now() + 300 });
      const refused = await init(bearer(jwt));
      assert.equal(refused.status, 401);
      assert.match(refused.json.error_description, new RegExp(`^the identity provider ${issuer} is unavailable`));
      assert.match(refused.headers['www-authenticate'] as string, /error="invalid_token"/);
      assert.equal((await init(bearer(keyA))).status, 200, 'API keys keep working while the provider is down');

      late = await startTestIssuer({ port, claims: { analyst: { groups: ['group-a'] } } });
      await waitFor('/readyz to turn 200', async () => (await fetch(`${down.base}/readyz`)).status === 200, 15_000, 100);
      const client = await httpClient('everything', bearer(await late.token('analyst')), down);
      assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'late' } })), 'Echo: late');
      await client.close();
    } finally {
      await down.close();
      await late?.stop();
    }
  });
});

describe('portcullis wrap with $PORTCULLIS_TOKEN', () => {
  let cfg: ReturnType<typeof writeConfig>;
  before(() => {
    cfg = writeConfig({ servers: { everything: upstreams.everything() }, auth: { apiKeys }, logging: { level: 'warn' } }, { 'identity.yaml': POLICY });
  });
  after(() => cfg.dir.remove());
  const env = (token: string) => ({ ...getDefaultEnvironment(), NODE_OPTIONS: '', PORTCULLIS_TOKEN: token });

  async function wrapClient(token: string): Promise<Client> {
    const client = new Client(CLIENT_INFO);
    await client.connect(new StdioClientTransport({ command: process.execPath, args: [BIN, 'wrap', '-c', cfg.file, '--server', 'everything'], env: env(token), cwd: ROOT, stderr: 'ignore' }));
    return client;
  }

  test('an API key gives its identity; policy decides by its groups', async () => {
    const [a, b] = await Promise.all([wrapClient(keyA), wrapClient(keyB)]);
    try {
      assert.deepEqual((await a.listTools()).tools.map((t) => t.name).sort(), ['echo', 'get-sum']);
      assert.deepEqual((await b.listTools()).tools.map((t) => t.name).sort(), ['get-sum']);
      assert.equal(text(await a.callTool({ name: 'echo', arguments: { message: 'wrapped' } })), 'Echo: wrapped');
      const denied = (await b.callTool({ name: 'echo', arguments: { message: 'wrapped' } })) as CallToolResult;
      assert.equal(denied.isError, true);
      assert.match(text(denied), /identity\/default/);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test('an invalid token: exit 1 with one clear line on stderr', async () => {
    const child = spawn(process.execPath, [BIN, 'wrap', '-c', cfg.file, '--server', 'everything'], { cwd: ROOT, env: env('pcl_not-a-real-key'), stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 1, stderr);
    assert.equal(stdout, '');
    assert.equal(stderr, 'portcullis: the token in PORTCULLIS_TOKEN was refused: unknown API key\n');
  });
});

describe('key rotation at the provider (last: needs the JWKS cooldown to have passed since the gateway loaded it)', () => {
  test('a new key is picked up without restarting the gateway; a token signed by the rotated-out key is refused', async () => {
    // The gateway refetches the JWKS on an unknown kid at most once per 30 s (jwksCooldownMs).
    const wait = gwStartedAt + 31_000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const next = await idp.rotate();
    idp.retireOldKeys();
    assert.notEqual(next.kid, firstKey.kid);
    const fresh = await tokenFor('analyst');
    assert.equal(JSON.parse(decodePart(fresh, 0)).kid, next.kid);
    const client = await httpClient('everything', bearer(fresh));
    assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'new key' } })), 'Echo: new key');
    await client.close();

    const old = await idp.sign({ sub: 'analyst', iss: idp.issuer, aud: resourceOf('everything'), iat: now(), exp: now() + 300, groups: ['group-a'] }, { key: firstKey });
    assertRefused(await initialize(bearer(old)), 401, 'invalid_token', new RegExp(`^unknown signing key "${firstKey.kid}"`));
  });
});
