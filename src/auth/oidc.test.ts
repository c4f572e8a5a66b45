// Bearer JWT validation against a REAL OIDC provider (oidc-provider on 127.0.0.1): what it can
// issue is requested from it; tokens it would never issue (expired, future nbf, foreign issuer,
// alg none, HS256) are signed here with its own key or with ours.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { base64url, generateKeyPair, SignJWT } from 'jose';
import type { AuthConfig } from '../config/schema.js';
import { createAuthenticator, type AuthOutcome, type Authenticator } from './authenticate.js';
import { freePort, newSigningKey, startTestIssuer, TEST_RESOURCE, type TestIssuer } from '../../test/support/oidc-test-issuer.js';

const now = () => Math.floor(Date.now() / 1000);

function oidcConfig(issuer: string, extra: Partial<NonNullable<AuthConfig['oidc']>> = {}, rest: Partial<AuthConfig> = {}): AuthConfig {
  return { oidc: { issuer, audience: TEST_RESOURCE, groupsClaim: 'groups', clockSkew: 30_000, ...extra }, apiKeys: [], anonymous: false, ...rest };
}

function refused(outcome: AuthOutcome, pattern: RegExp, status = 401, error = 'invalid_token'): void {
  assert.equal(outcome.ok, false, `expected a refusal, got ${JSON.stringify(outcome)}`);
  if (outcome.ok) return;
  assert.equal(outcome.status, status);
  assert.equal(outcome.error, error);
  assert.match(outcome.description, pattern);
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('OIDC bearer tokens against a real provider', () => {
  let idp: TestIssuer;
  let auth: Authenticator;
  const bearer = (t: string) => `Bearer ${t}`;

  before(async () => {
    idp = await startTestIssuer({
      claims: {
        analyst: { groups: ['analysts', 'readers'] },
        nested: { realm_access: { roles: ['dba'] } },
        'many-groups': { groups: Array.from({ length: 1001 }, (_, i) => String(i)) },
        huge: { groups: Array.from({ length: 5000 }, (_, i) => `group-${i}`) },
      },
    });
    auth = createAuthenticator(oidcConfig(idp.issuer));
    await auth.start();
    assert.equal(auth.ready(), true, auth.readinessProblem());
  });
  after(async () => {
    auth.close();
    await idp.stop();
  });

  test('a valid token authenticates and its groups and claims come through', async () => {
    const out = await auth.authenticate(bearer(await idp.token('analyst')));
    assert.ok(out.ok, JSON.stringify(out));
    assert.equal(out.identity.sub, 'analyst');
    assert.deepEqual(out.identity.groups, ['analysts', 'readers']);
    assert.equal(out.identity.via, 'oidc');
    assert.equal(out.identity.claims.iss, idp.issuer);
    assert.equal(out.identity.claims.client_id, 'analyst');
    assert.ok(out.identity.expiresAt! > Date.now());
    assert.ok(Object.isFrozen(out.identity.claims), 'identities are immutable: cached hits share them');
  });

  test('a token without the groups claim has no groups', async () => {
    const out = await auth.authenticate(bearer(await idp.token('plain')));
    assert.ok(out.ok);
    assert.deepEqual(out.identity.groups, []);
  });

  test('groups from a nested dotted claim path', async () => {
    const nested = createAuthenticator(oidcConfig(idp.issuer, { groupsClaim: 'realm_access.roles' }));
    await nested.start();
    const out = await nested.authenticate(bearer(await idp.token('nested')));
    nested.close();
    assert.ok(out.ok, JSON.stringify(out));
    assert.deepEqual(out.identity.groups, ['dba']);
  });

  test('expired token', async () => {
    const t = await idp.sign({ sub: 'a', iss: idp.issuer, aud: TEST_RESOURCE, iat: now() - 7200, exp: now() - 3600 });
    refused(await auth.authenticate(bearer(t)), /^token expired at \d{4}-.*clock skew allowed: 30s/);
  });

  test('expired within the clock skew is still accepted', async () => {
    const t = await idp.sign({ sub: 'a', iss: idp.issuer, aud: TEST_RESOURCE, iat: now() - 600, exp: now() - 5 });
    assert.equal((await auth.authenticate(bearer(t))).ok, true);
  });

  test('not yet valid (nbf in the future)', async () => {
    const t = await idp.sign({ sub: 'a', iss: idp.issuer, aud: TEST_RESOURCE, nbf: now() + 3600, exp: now() + 7200 });
    refused(await auth.authenticate(bearer(t)), /^token not valid before \d{4}-/);
  });

  test('a token without exp is refused', async () => {
    const t = await idp.sign({ sub: 'a', iss: idp.issuer, aud: TEST_RESOURCE });
    refused(await auth.authenticate(bearer(t)), /no valid exp claim/);
  });

  test('wrong issuer, even when signed by a key the gateway trusts', async () => {
    const t = await idp.sign({ sub: 'a', iss: 'https://evil.example', aud: TEST_RESOURCE, exp: now() + 300 });
    refused(await auth.authenticate(bearer(t)), /^token issuer "https:\/\/evil.example" is not the configured issuer/);
  });

  test('wrong audience: a token the provider issued for another service is refused', async () => {
    const t = await idp.token('analyst', { resource: 'https://other-service.example/api' });
    refused(await auth.authenticate(bearer(t)), /audience "https:\/\/other-service.example\/api" is not this gateway.*refused/);
  });

  test('tampered token (bad signature)', async () => {
    const [h, p, s] = (await idp.token('analyst')).split('.');
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    claims.groups = ['admins'];
    const forged = `${h}.${base64url.encode(JSON.stringify(claims))}.${s}`;
    refused(await auth.authenticate(bearer(forged)), /^bad token signature/);
  });

  test('alg none', async () => {
    const enc = (o: object) => base64url.encode(JSON.stringify(o));
    const t = `${enc({ alg: 'none', typ: 'JWT' })}.${enc({ sub: 'root', iss: idp.issuer, aud: TEST_RESOURCE, exp: now() + 300 })}.`;
    refused(await auth.authenticate(bearer(t)), /unsigned token \(alg "none"\) refused/);
  });

  test('HS256 with a guessed secret', async () => {
    const t = await new SignJWT({ sub: 'root', iss: idp.issuer, aud: TEST_RESOURCE, exp: now() + 300 })
      .setProtectedHeader({ alg: 'HS256', kid: idp.current.kid })
      .sign(new TextEncoder().encode('secret'));
    refused(await auth.authenticate(bearer(t)), /algorithm "HS256" is not accepted \(symmetric algorithms are refused/);
  });

  test('a key the provider never published (unknown kid)', async () => {
    const rogue = await newSigningKey('attacker');
    const t = await idp.sign({ sub: 'a', iss: idp.issuer, aud: TEST_RESOURCE, exp: now() + 300 }, { key: rogue });
    refused(await auth.authenticate(bearer(t)), /^unknown signing key "attacker"/);
  });

  test('a kid the gateway knows but a signature from another key', async () => {
    const { privateKey } = await generateKeyPair('RS256');
    const t = await new SignJWT({ sub: 'a', iss: idp.issuer, aud: TEST_RESOURCE, exp: now() + 300 })
      .setProtectedHeader({ alg: 'RS256', kid: idp.current.kid })
      .sign(privateKey);
    refused(await auth.authenticate(bearer(t)), /^bad token signature/);
  });

  test('more than 1,000 groups is refused, not truncated', async () => {
    // 1,001 groups do not fit in 8 KiB: raise the size limit to reach the groups cap on its own.
    const roomy = createAuthenticator(oidcConfig(idp.issuer), { maxTokenBytes: 16_384 });
    await roomy.start();
    const t = await idp.token('many-groups');
    refused(await roomy.authenticate(bearer(t)), /carries 1001 groups in "groups"; the limit is 1000/);
    roomy.close();
  });

  test('a token with thousands of groups is over the size limit', async () => {
    const t = await idp.token('huge');
    refused(await auth.authenticate(bearer(t)), /is \d+ bytes; a bearer token may be at most 8192/, 400, 'invalid_request');
  });

  test('malformed JWT', async () => {
    refused(await auth.authenticate('Bearer eyJhbGciOi.eyJzdWIi.c2ln'), /^malformed token/);
  });

  test('the endpoint resource URL is accepted as audience only for its own endpoint', async () => {
    const gw = createAuthenticator(oidcConfig(idp.issuer, { audience: 'portcullis' }, { resourceUrl: 'http://gw.test' }));
    await gw.start();
    const t = await idp.token('analyst', { resource: 'http://gw.test/mcp/files' });
    assert.equal((await gw.authenticate(bearer(t), { server: 'files' })).ok, true);
    refused(await gw.authenticate(bearer(t), { server: 'crm' }), /audience "http:\/\/gw.test\/mcp\/files" is not this gateway/);
    refused(await gw.authenticate(bearer(t)), /is not this gateway/);
    gw.close();
  });

  test('a cached verification never outlives the token', async () => {
    const strict = createAuthenticator(oidcConfig(idp.issuer, { clockSkew: 0 }));
    await strict.start();
    const t = await idp.sign({ sub: 'a', iss: idp.issuer, aud: TEST_RESOURCE, exp: now() + 2 });
    assert.equal((await strict.authenticate(bearer(t))).ok, true);
    await new Promise((r) => setTimeout(r, 2100));
    refused(await strict.authenticate(bearer(t)), /^token expired/);
    strict.close();
  });
});

describe('key rotation at the provider', () => {
  test('a new key (new kid) is picked up without restarting; a retired key is refused', async () => {
    const idp = await startTestIssuer({ claims: { analyst: { groups: ['analysts'] } } });
    const auth = createAuthenticator(oidcConfig(idp.issuer), { oidc: { jwksCooldownMs: 0, jwksRefreshMs: 200 } });
    try {
      await auth.start();
      assert.equal((await auth.authenticate(`Bearer ${await idp.token('analyst')}`)).ok, true);
      // Minted under the old key and never presented, so no cached verification can mask the retirement.
      const oldKeyToken = await idp.token('analyst');

      const next = await idp.rotate();
      const rotated = await idp.token('analyst');
      assert.match(Buffer.from(rotated.split('.')[0], 'base64url').toString(), new RegExp(`"kid":"${next.kid}"`));
      const out = await auth.authenticate(`Bearer ${rotated}`);
      assert.ok(out.ok, JSON.stringify(out));

      idp.retireOldKeys();
      await new Promise((r) => setTimeout(r, 500)); // background JWKS refresh
      refused(await auth.authenticate(`Bearer ${oldKeyToken}`), /^unknown signing key "key-1".*rotated-out/);
      assert.equal((await auth.authenticate(`Bearer ${await idp.token('analyst')}`)).ok, true);
    } finally {
      auth.close();
      await idp.stop();
    }
  });
});

describe('issuer unreachable at startup', () => {
  test('not ready, tokens refused with a clear reason, then recovers when the issuer starts', async () => {
    const port = await freePort();
    const issuer = `http://127.0.0.1:${port}`;
    const auth = createAuthenticator(oidcConfig(issuer), { retry: { initialMs: 50, maxMs: 200 } });
    let idp: TestIssuer | undefined;
    try {
      await auth.start();
      assert.equal(auth.ready(), false);
      assert.match(auth.readinessProblem() ?? '', /cannot reach OIDC discovery at http:\/\/127\.0\.0\.1:\d+\/\.well-known\/openid-configuration: ECONNREFUSED/);
      const rogue = await newSigningKey('k');
      const t = await new SignJWT({ sub: 'a', iss: issuer, aud: TEST_RESOURCE, exp: now() + 300 }).setProtectedHeader({ alg: 'RS256', kid: 'k' }).sign(rogue.privateKey);
      refused(await auth.authenticate(`Bearer ${t}`), /identity provider http:\/\/127\.0\.0\.1:\d+ is unavailable .*ECONNREFUSED/);

      idp = await startTestIssuer({ port, claims: { analyst: { groups: ['analysts'] } } });
      await waitFor(() => auth.ready());
      const out = await auth.authenticate(`Bearer ${await idp.token('analyst')}`);
      assert.ok(out.ok, JSON.stringify(out));
      assert.deepEqual(out.identity.groups, ['analysts']);
    } finally {
      auth.close();
      await idp?.stop();
    }
  });

  test('a discovery document naming another issuer is refused', async () => {
    const idp = await startTestIssuer();
    // Same provider, reached through "localhost": its document says 127.0.0.1, which must not pass.
    const auth = createAuthenticator(oidcConfig(`http://localhost:${idp.port}`), { retry: { initialMs: 60_000 } });
    await auth.start();
    assert.equal(auth.ready(), false);
    assert.match(auth.readinessProblem() ?? '', /names issuer "http:\/\/127\.0\.0\.1:\d+", not the configured "http:\/\/localhost:\d+"/);
    auth.close();
    await idp.stop();
  });
});
