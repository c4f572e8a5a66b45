// What authentication adds to each request: µs per authenticate() call, p50/p99.
// Bearer JWTs are checked against a JWKS served over real HTTP (fetched once, then cached), with
// the verified-token cache on (the default: a client reuses its token for many requests) and off
// (every call a full signature check). API keys: hash + constant-time compare against all keys.
// Run alone: npx tsx bench/auth.ts
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { hashApiKey } from '../src/auth/api-keys.js';
import { createAuthenticator, type Authenticator } from '../src/auth/authenticate.js';
import type { AuthConfig } from '../src/config/schema.js';

interface Result {
  name: string;
  p50: number;
  p99: number;
  mean: number;
}

async function measure(name: string, auth: Authenticator, header: string, iterations: number, expectOk = true): Promise<Result> {
  const first = await auth.authenticate(header);
  if (first.ok !== expectOk) throw new Error(`${name}: unexpected outcome ${JSON.stringify(first)}`);
  for (let i = 0; i < Math.min(2000, iterations); i++) await auth.authenticate(header); // warm-up (JIT, key import)
  const samples = new Float64Array(iterations);
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    await auth.authenticate(header);
    samples[i] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  samples.sort();
  const mean = samples.reduce((a, b) => a + b, 0) / iterations;
  return { name, p50: samples[Math.floor(iterations * 0.5)], p99: samples[Math.floor(iterations * 0.99)], mean };
}

export async function benchAuth(): Promise<void> {
  const issuer = 'https://idp.bench';
  const audience = 'portcullis';
  const rsa = await generateKeyPair('RS256');
  const ec = await generateKeyPair('ES256');
  const jwks = {
    keys: [
      { ...(await exportJWK(rsa.publicKey)), kid: 'rsa', alg: 'RS256', use: 'sig' },
      { ...(await exportJWK(ec.publicKey)), kid: 'ec', alg: 'ES256', use: 'sig' },
    ],
  };
  const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const jwksUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;

  const claims = { sub: 'alice', groups: ['analysts', 'engineers', 'readers'], scope: 'mcp', client_id: 'agent' };
  const sign = (alg: 'RS256' | 'ES256', key: CryptoKey, kid: string) =>
    new SignJWT(claims).setProtectedHeader({ alg, kid, typ: 'at+jwt' }).setIssuer(issuer).setAudience(audience).setIssuedAt().setExpirationTime('1h').sign(key);
  const rsToken = await sign('RS256', rsa.privateKey, 'rsa');
  const esToken = await sign('ES256', ec.privateKey, 'ec');

  const oidc: AuthConfig = { oidc: { issuer, audience, jwksUri, groupsClaim: 'groups', clockSkew: 30_000 }, apiKeys: [], anonymous: false };
  const cached = createAuthenticator(oidc);
  const uncached = createAuthenticator(oidc, { oidc: { cacheTtlMs: 0 } });
  await cached.start();
  await uncached.start();
  if (!cached.ready() || !uncached.ready()) throw new Error('JWKS did not load');

  const keyConfig = (n: number): AuthConfig => ({
    apiKeys: Array.from({ length: n }, (_, i) => ({ id: `svc-${i}`, sha256: hashApiKey(`pcl_key_number_${i}_${'x'.repeat(32)}`), groups: ['automation'] })),
    anonymous: false,
  });
  const keys10 = createAuthenticator(keyConfig(10));
  const keys100 = createAuthenticator(keyConfig(100));
  const lastKey = (n: number) => `Bearer pcl_key_number_${n - 1}_${'x'.repeat(32)}`;

  const results = [
    await measure('JWT RS256, verified-token cache hit', cached, `Bearer ${rsToken}`, 50_000),
    await measure('JWT ES256, verified-token cache hit', cached, `Bearer ${esToken}`, 50_000),
    await measure('JWT RS256, full verify (cache off)', uncached, `Bearer ${rsToken}`, 20_000),
    await measure('JWT ES256, full verify (cache off)', uncached, `Bearer ${esToken}`, 20_000),
    await measure('API key, 10 configured', keys10, lastKey(10), 50_000),
    await measure('API key, 100 configured', keys100, lastKey(100), 20_000),
    await measure('API key, unknown (100 configured)', keys100, 'Bearer pcl_nope', 20_000, false),
  ];
  cached.close();
  uncached.close();
  server.close();

  process.stdout.write(`\nauthentication cost per request (µs per authenticate(); RS256 token ${rsToken.length} bytes)\n`);
  process.stdout.write(`${'case'.padEnd(40)} ${'p50'.padStart(8)} ${'p99'.padStart(8)} ${'mean'.padStart(8)}\n`);
  for (const r of results) {
    process.stdout.write(`${r.name.padEnd(40)} ${r.p50.toFixed(1).padStart(8)} ${r.p99.toFixed(1).padStart(8)} ${r.mean.toFixed(1).padStart(8)}\n`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await benchAuth();
}
