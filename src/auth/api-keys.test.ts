import assert from 'node:assert/strict';
import { timingSafeEqual } from 'node:crypto';
import { describe, test } from 'node:test';
import type { AuthConfig } from '../config/schema.js';
import { configLine, newApiKey } from '../cli/keys.js';
import { createApiKeyVerifier, generateApiKey, hashApiKey } from './api-keys.js';
import { createAuthenticator } from './authenticate.js';

const KEY = 'pcl_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG';
const keys: AuthConfig['apiKeys'] = [
  { id: 'ci-bot', sha256: hashApiKey(KEY), groups: ['automation'] },
  { id: 'etl', sha256: hashApiKey('pcl_other'), sub: 'svc-etl', groups: [] },
  { id: 'third', sha256: hashApiKey('pcl_third'), groups: ['x', 'y'] },
];
const config: AuthConfig = { apiKeys: keys, anonymous: false };

describe('API keys', () => {
  test('the right key authenticates with its sub and groups', async () => {
    const auth = createAuthenticator(config);
    const out = await auth.authenticate(`Bearer ${KEY}`);
    assert.ok(out.ok, JSON.stringify(out));
    assert.deepEqual({ ...out.identity }, { sub: 'ci-bot', groups: ['automation'], claims: { sub: 'ci-bot', keyId: 'ci-bot', groups: ['automation'] }, via: 'api-key' });
    const etl = await auth.authenticate('Bearer pcl_other');
    assert.ok(etl.ok);
    assert.equal(etl.identity.sub, 'svc-etl');
  });

  test('a wrong key, a key differing in one character, and an empty key are refused', async () => {
    const auth = createAuthenticator(config);
    for (const header of ['Bearer pcl_wrong', `Bearer ${KEY.slice(0, -1)}H`, `Bearer ${KEY}x`, `Bearer ${KEY.toLowerCase()}`]) {
      const out = await auth.authenticate(header);
      assert.deepEqual(out, { ok: false, status: 401, error: 'invalid_token', description: 'unknown API key' }, header);
    }
    const empty = await auth.authenticate('Bearer ');
    assert.deepEqual(empty, { ok: false, status: 400, error: 'invalid_request', description: 'the Bearer authorization header has no token' });
    assert.equal(createApiKeyVerifier(keys).verify(''), undefined);
  });

  test('every configured digest is compared, whichever key matches (no early exit)', () => {
    for (const presented of [KEY, 'pcl_other', 'pcl_third', 'pcl_nothing']) {
      const calls: Array<[number, number]> = [];
      const verifier = createApiKeyVerifier(keys, (a, b) => {
        calls.push([a.length, b.length]);
        return timingSafeEqual(a, b);
      });
      verifier.verify(presented);
      assert.equal(calls.length, keys.length, `${presented}: compared against all ${keys.length} keys`);
      assert.ok(calls.every(([a, b]) => a === 32 && b === 32), 'always fixed-length 32-byte digests');
    }
  });

  test('two keys with the same hash are a config error', () => {
    assert.throws(() => createApiKeyVerifier([keys[0], { ...keys[0], id: 'dup' }]), /"dup" and "ci-bot" have the same sha256/);
  });

  test('a JWT-shaped token is not tried as an API key', async () => {
    const out = await createAuthenticator(config).authenticate('Bearer aaa.bbb.ccc');
    assert.deepEqual(out, { ok: false, status: 401, error: 'invalid_token', description: 'JWT bearer tokens are not accepted: no OIDC issuer is configured' });
  });

  test('keys new: a fresh 256-bit key whose config line holds its hash', async () => {
    const a = generateApiKey();
    assert.match(a, /^pcl_[A-Za-z0-9_-]{43}$/);
    assert.notEqual(a, generateApiKey());
    const made = newApiKey('ci-bot', ['automation', 'ops']);
    assert.equal(made.entry.sha256, hashApiKey(made.key));
    assert.equal(configLine(made.entry), `- { id: "ci-bot", sha256: "${made.entry.sha256}", groups: ["automation", "ops"] }`);
    const out = await createAuthenticator({ apiKeys: [made.entry], anonymous: false }).authenticate(`Bearer ${made.key}`);
    assert.ok(out.ok && out.identity.sub === 'ci-bot');
  });
});

describe('Authorization header handling', () => {
  const auth = createAuthenticator(config);
  const cases: Array<[string, string | undefined, number, string | undefined, RegExp]> = [
    ['no header', undefined, 401, undefined, /authentication required/],
    ['another scheme', 'Basic dXNlcjpwYXNz', 401, undefined, /unsupported authorization scheme "Basic"/],
    ['empty header', '', 401, undefined, /unsupported authorization scheme ""/],
    ['Bearer without token', 'Bearer', 400, 'invalid_request', /has no token/],
    ['control character', 'Bearer pcl_a\u0001b', 400, 'invalid_request', /control or non-ASCII/],
    ['tab', 'Bearer\tpcl_a', 400, 'invalid_request', /control or non-ASCII/],
    ['non-ASCII', 'Bearer pcl_ä', 400, 'invalid_request', /control or non-ASCII/],
    ['space inside the token', 'Bearer pcl_a pcl_b', 400, 'invalid_request', /not allowed in a token/],
    ['huge token', `Bearer ${'a'.repeat(8193)}`, 400, 'invalid_request', /8193 bytes; a bearer token may be at most 8192/],
    ['huge header', `Bearer ${'a'.repeat(100_000)}`, 400, 'invalid_request', /a bearer token may be at most 8192/],
  ];
  for (const [name, header, status, error, pattern] of cases) {
    test(name, async () => {
      const out = await auth.authenticate(header);
      assert.equal(out.ok, false);
      if (out.ok) return;
      assert.equal(out.status, status);
      assert.equal(out.error, error);
      assert.match(out.description, pattern);
    });
  }

  test('lower-case scheme and extra spaces are accepted', async () => {
    assert.equal((await auth.authenticate(`bearer   ${KEY}`)).ok, true);
  });

  test('anonymous: no header gives the anonymous identity, but bad credentials are still refused', async () => {
    const anon = createAuthenticator({ ...config, anonymous: true });
    const out = await anon.authenticate(undefined);
    assert.ok(out.ok);
    assert.deepEqual(out.identity, { sub: 'anonymous', groups: [], claims: {}, via: 'anonymous' });
    assert.equal((await anon.authenticate('Bearer pcl_wrong')).ok, false);
    assert.equal((await anon.authenticate('Bearer')).ok, false);
  });

  test('without OIDC the authenticator is ready at once', async () => {
    const a = createAuthenticator(config);
    await a.start();
    assert.equal(a.ready(), true);
    assert.equal(a.readinessProblem(), undefined);
  });
});
