// The MCP SDK's own client discovers the gateway's authorization from a 401, finds our OIDC
// issuer, gets a token for the resource and that token is accepted: the whole 2025-11-25 loop.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import {
  auth as sdkAuth,
  discoverAuthorizationServerMetadata,
  discoverOAuthProtectedResourceMetadata,
  extractWWWAuthenticateParams,
} from '@modelcontextprotocol/sdk/client/auth.js';
import type { AuthConfig } from '../config/schema.js';
import { createAuthenticator, type Authenticator } from './authenticate.js';
import { startTestIssuer, type TestIssuer } from '../../test/support/oidc-test-issuer.js';
import { handleWellKnown, protectedResourceMetadata, resourceMetadataUrl, wwwAuthenticate } from './protected-resource.js';

describe('protected-resource metadata and the SDK client', () => {
  let idp: TestIssuer;
  let server: Server;
  let base: string;
  let config: AuthConfig;
  let authn: Authenticator;

  before(async () => {
    idp = await startTestIssuer({ claims: { 'mcp-client': { groups: ['agents'] } } });
    // A stand-in for the HTTP front: the well-known routes, and /mcp/x guarded by the authenticator.
    server = createServer(async (req, res) => {
      if (handleWellKnown(req, res, base, config, (name) => name === 'x')) return;
      if (req.url === '/mcp/x') {
        const out = await authn.authenticate(req.headers.authorization, { server: 'x' });
        if (!out.ok) {
          res.writeHead(out.status, { 'www-authenticate': wwwAuthenticate(out, resourceMetadataUrl(base, 'x'), config.oidc?.scopes) }).end();
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ sub: out.identity.sub, groups: out.identity.groups }));
        return;
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    config = {
      oidc: { issuer: idp.issuer, audience: 'portcullis', groupsClaim: 'groups', clockSkew: 30_000, scopes: ['mcp'] },
      apiKeys: [],
      anonymous: false,
      resourceUrl: base,
    };
    authn = createAuthenticator(config);
    await authn.start();
  });
  after(async () => {
    authn.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await idp.stop();
  });

  test('a 401 points at the metadata, which names the issuer', async () => {
    const res = await fetch(`${base}/mcp/x`);
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('www-authenticate'), `Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/mcp/x", scope="mcp"`);
    const params = extractWWWAuthenticateParams(res);
    assert.equal(params.resourceMetadataUrl?.href, `${base}/.well-known/oauth-protected-resource/mcp/x`);
    assert.equal(params.error, undefined, 'no credentials sent: no error code (RFC 6750 3.1)');

    const viaHeader = await discoverOAuthProtectedResourceMetadata(`${base}/mcp/x`, { resourceMetadataUrl: params.resourceMetadataUrl });
    const byProbing = await discoverOAuthProtectedResourceMetadata(`${base}/mcp/x`);
    for (const doc of [viaHeader, byProbing]) {
      assert.equal(doc.resource, `${base}/mcp/x`);
      assert.deepEqual(doc.authorization_servers, [idp.issuer]);
      assert.deepEqual(doc.bearer_methods_supported, ['header']);
      assert.deepEqual(doc.scopes_supported, ['mcp']);
    }
    const as = await discoverAuthorizationServerMetadata(viaHeader.authorization_servers![0]);
    assert.equal(as?.issuer, idp.issuer);
    assert.equal(as?.token_endpoint, `${idp.issuer}/token`);
  });

  test("the SDK's auth() flow gets a token for the resource, and the gateway accepts it", async () => {
    const provider = new ClientCredentialsProvider({ clientId: 'mcp-client', clientSecret: 'secret', expectedIssuer: idp.issuer });
    assert.equal(await sdkAuth(provider, { serverUrl: `${base}/mcp/x` }), 'AUTHORIZED');
    const token = provider.tokens()!.access_token;
    const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
    assert.equal(claims.aud, `${base}/mcp/x`, 'RFC 8707: the token is bound to this endpoint');
    const res = await fetch(`${base}/mcp/x`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { sub: 'mcp-client', groups: ['agents'] });
  });

  test('a bad token gets error="invalid_token" with a description', async () => {
    const res = await fetch(`${base}/mcp/x`, { headers: { authorization: 'Bearer aaa.bbb.ccc' } });
    assert.equal(res.status, 401);
    assert.equal(extractWWWAuthenticateParams(res).error, 'invalid_token');
    assert.match(res.headers.get('www-authenticate')!, /error_description="malformed token: [^"]*"/);
  });

  test('root metadata, unknown servers, methods', async () => {
    const root = await fetch(`${base}/.well-known/oauth-protected-resource`);
    assert.equal(root.status, 200);
    assert.equal(root.headers.get('access-control-allow-origin'), '*');
    assert.equal((await root.json()).resource, base);
    assert.equal((await fetch(`${base}/.well-known/oauth-protected-resource/mcp/nope`)).status, 404);
    assert.equal((await fetch(`${base}/.well-known/oauth-protected-resource/elsewhere`)).status, 404);
    assert.equal((await fetch(`${base}/.well-known/oauth-protected-resource/mcp/x`, { method: 'POST' })).status, 405);
    const head = await fetch(`${base}/.well-known/oauth-protected-resource/mcp/x`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    assert.equal((await fetch(`${base}/.well-known/openid-configuration`)).status, 404, 'other well-known paths are not ours');
  });
});

describe('wwwAuthenticate and metadata', () => {
  test('quotes and escapes; no error parameters without an error code', () => {
    assert.equal(wwwAuthenticate({ description: 'authentication required' }, 'https://gw/.well-known/oauth-protected-resource'), 'Bearer resource_metadata="https://gw/.well-known/oauth-protected-resource"');
    assert.equal(
      wwwAuthenticate({ error: 'invalid_token', description: 'issuer "x\\y" \u0007bad' }, 'https://gw/m'),
      'Bearer resource_metadata="https://gw/m", error="invalid_token", error_description="issuer \\"x\\\\y\\" ?bad"',
    );
    assert.equal(wwwAuthenticate({ error: 'invalid_request', description: 'd' }), 'Bearer error="invalid_request", error_description="d"');
  });

  test('without OIDC there is no authorization server to publish', () => {
    const cfg: AuthConfig = { apiKeys: [], anonymous: false };
    assert.deepEqual(protectedResourceMetadata('https://gw', cfg), { resource: 'https://gw', bearer_methods_supported: ['header'], resource_name: 'Portcullis MCP gateway' });
  });
});
