// The gateway's operational endpoints are no side doors (SPEC 7, 10): Host and Origin are checked
// on every route, not only /mcp, so a DNS-rebinding page reads neither /metrics nor /readyz;
// /metrics can require a token; metric labels come from a closed set whatever clients send; and
// an unauthenticated caller cannot tell a configured server from an unknown one.
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { generateApiKey, hashApiKey } from '../../src/auth/api-keys.js';
import { startTestIssuer, type TestIssuer } from '../support/oidc-test-issuer.js';
import { METHOD_LABELS } from '../../src/observability/metrics.js';
import { post, raw, rawSession, startTestGateway, upstreams, type RawResponse, type TestGateway } from './harness.js';

const METRICS_TOKEN = generateApiKey();
const ROUTES = ['/metrics', '/readyz', '/healthz', '/.well-known/oauth-protected-resource', '/.well-known/oauth-protected-resource/mcp/raw', '/mcp/raw', '/no-such-route'];
const get = (gw: TestGateway, path: string, headers: Record<string, string> = {}) => raw(gw.base, path, { method: 'GET', headers });

let gw: TestGateway;
before(async () => {
  gw = await startTestGateway({ raw: upstreams.raw() }, { config: { metrics: { tokens: [{ id: 'prometheus', sha256: hashApiKey(METRICS_TOKEN) }] } } });
});
after(() => gw?.close());
const scrape = () => get(gw, '/metrics', { authorization: `Bearer ${METRICS_TOKEN}` });

describe('Host and Origin on every route', () => {
  test('a DNS-rebinding Host gets 403 on every route, with nothing of the route in the body', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...ROUTES), fc.domain(), fc.option(fc.integer({ min: 1, max: 65535 })), async (path, domain, port) => {
        fc.pre(!/(^|\.)localhost$/i.test(domain));
        const res = await get(gw, path, { host: port === null ? domain : `${domain}:${port}`, authorization: `Bearer ${METRICS_TOKEN}` });
        assert.equal(res.status, 403, `${path} with Host ${domain}: ${res.text}`);
        assert.match(res.text, /listen\.allowedHosts/);
        assert.doesNotMatch(res.text, /portcullis_|"checks"|upstream:|"status":"ok"/);
      }),
      { numRuns: 60 },
    );
  });

  test('a foreign or "null" Origin gets 403 on every route; same-origin and no Origin pass', async () => {
    for (const path of ROUTES) {
      for (const origin of ['http://evil.example', 'null', `http://127.0.0.1:${gw.port + 1}`, 'https://localhost.evil.example']) {
        const res = await get(gw, path, { origin, authorization: `Bearer ${METRICS_TOKEN}` });
        assert.equal(res.status, 403, `${path} with Origin ${origin}: ${res.status} ${res.text}`);
        assert.match(res.text, /listen\.allowedOrigins/);
      }
    }
    for (const path of ['/metrics', '/readyz', '/healthz']) {
      assert.equal((await get(gw, path, { authorization: `Bearer ${METRICS_TOKEN}` })).status, 200, path);
      assert.equal((await get(gw, path, { origin: gw.base, authorization: `Bearer ${METRICS_TOKEN}` })).status, 200, `${path}, same origin`);
    }
  });

  test('refusals are counted by status', async () => {
    assert.match((await scrape()).text, /^portcullis_http_refusals_total\{status="403"\} [1-9]\d*$/m);
  });
});

describe('metrics.tokens', () => {
  test('/metrics needs a listed bearer token; /readyz and /healthz stay open to probes', async () => {
    for (const authorization of [undefined, 'Bearer wrong', `Bearer ${METRICS_TOKEN}x`, `Basic ${Buffer.from(`u:${METRICS_TOKEN}`).toString('base64')}`, METRICS_TOKEN, `Bearer ${hashApiKey(METRICS_TOKEN)}`]) {
      const res = await get(gw, '/metrics', authorization === undefined ? {} : { authorization });
      assert.equal(res.status, 401, `${authorization}: ${res.status}`);
      assert.equal(res.headers['www-authenticate'], 'Bearer realm="metrics"');
      assert.doesNotMatch(res.text, /portcullis_/);
    }
    const ok = await scrape();
    assert.equal(ok.status, 200);
    assert.match(ok.text, /^# TYPE portcullis_requests_total counter$/m);
    assert.equal((await get(gw, '/readyz')).status, 200);
    assert.equal((await get(gw, '/healthz')).status, 200);
  });

  test('without metrics.tokens, /metrics is open (loopback Host and Origin checks still apply)', async () => {
    const open = await startTestGateway({ raw: upstreams.raw() });
    try {
      assert.equal((await get(open, '/metrics')).status, 200);
      assert.equal((await get(open, '/metrics', { host: 'evil.example' })).status, 403);
    } finally {
      await open.close();
    }
  });
});

/** The label values of one metric family in a scrape: [{label: value}]. */
function series(text: string, family: string): Array<Record<string, string>> {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${family}{`))
    .map((l) => Object.fromEntries([...l.slice(family.length + 1, l.indexOf('}')).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]])));
}

describe('metric labels from a closed set', () => {
  test('a flood of made-up methods and server names adds no series beyond method="other"', async () => {
    const s = await rawSession(gw, 'raw');
    await post(gw, 'raw', { jsonrpc: '2.0', id: 'l', method: 'tools/list' }, s.headers);
    const before = series((await scrape()).text, 'portcullis_requests_total');
    const methods = fc.sample(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }).filter((m) => !METHOD_LABELS.has(m) && !m.startsWith('notifications/')), { numRuns: 150, seed: 42 });
    for (const [i, method] of methods.entries()) {
      const res = await post(gw, 'raw', { jsonrpc: '2.0', id: i, method }, s.headers);
      assert.equal(res.status, 200, `${method}: ${res.text}`);
      assert.ok(res.json.error, `${method} was answered: ${res.text}`);
    }
    const names = fc.sample(fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,20}$/).filter((n) => n !== 'raw'), { numRuns: 50, seed: 7 });
    for (const name of names) assert.equal((await post(gw, name, { jsonrpc: '2.0', id: 1, method: 'initialize', params: {} })).status, 404, name);

    const text = (await scrape()).text;
    const after = series(text, 'portcullis_requests_total');
    const added = after.filter((a) => !before.some((b) => JSON.stringify(b) === JSON.stringify(a)));
    assert.ok(added.length >= 1 && added.every((a) => a.method === 'other' && a.server === 'raw'), JSON.stringify(added));
    const other = text.split('\n').filter((l) => l.startsWith('portcullis_requests_total{') && l.includes('method="other"'));
    assert.equal(other.reduce((n, l) => n + Number(l.split(' ').pop()), 0), methods.length);
    for (const a of after) assert.ok(METHOD_LABELS.has(a.method) || a.method === 'other', a.method);
    // Every family with a server label names configured servers only; statuses are HTTP codes.
    for (const family of ['portcullis_requests_total', 'portcullis_sessions', 'portcullis_upstream_failures_total', 'portcullis_request_duration_seconds_count']) {
      for (const a of series(text, family)) assert.equal(a.server, 'raw', `${family}: ${JSON.stringify(a)}`);
    }
    for (const a of series(text, 'portcullis_http_refusals_total')) assert.match(a.status, /^[1-5]\d\d$/);
    await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: s.headers });
  });
});

describe('an unauthenticated caller cannot tell a configured server from an unknown one', () => {
  let idp: TestIssuer;
  const key = generateApiKey();
  before(async () => {
    idp = await startTestIssuer();
  });
  after(() => idp?.stop());

  /** What a caller can see of an answer: status, the headers that matter, body. `name` is replaced, since the metadata URL names the path asked for. */
  const visible = (r: RawResponse, name: string) =>
    JSON.stringify({ status: r.status, type: r.headers['content-type'], length: r.headers['content-length'], auth: r.headers['www-authenticate'], allow: r.headers.allow, session: r.headers['mcp-session-id'], body: r.text }).replaceAll(name, '<server>');

  async function compare(g: TestGateway, strict: boolean): Promise<void> {
    const jwt = await idp.sign({ sub: 'x', iss: idp.issuer, aud: 'someone-else', exp: Math.floor(Date.now() / 1000) + 300 });
    const credentials: Array<Record<string, string>> = [{}, { authorization: 'Bearer pcl_not-a-key' }, { authorization: `Bearer ${jwt}` }, { authorization: 'Basic dTpw' }, { authorization: 'Bearer ' }, { authorization: `Bearer ${'a'.repeat(9000)}` }];
    const requests = [
      { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {} }) },
      { method: 'GET' },
      { method: 'DELETE' },
      { method: 'PUT', body: '{}' },
    ];
    for (const headers of credentials) {
      for (const r of requests) {
        // Names of the same length: the answer's length cannot tell them apart either.
        const known = await raw(g.base, '/mcp/files', { method: r.method, body: r.body, headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers } });
        const unknown = await raw(g.base, '/mcp/filez', { method: r.method, body: r.body, headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers } });
        assert.ok(known.status === 401 || known.status === 400, `${r.method} ${JSON.stringify(headers).slice(0, 60)}: ${known.status} ${known.text}`);
        if (strict) assert.equal(unknown.text, known.text);
        assert.equal(visible(unknown, 'filez'), visible(known, 'files'), `${r.method} ${JSON.stringify(headers).slice(0, 60)}`);
      }
    }
    // Once authenticated there is nothing to hide: the unknown server is 404, the known one works.
    const auth = { authorization: `Bearer ${key}` };
    assert.equal((await post(g, 'filez', { jsonrpc: '2.0', id: 1, method: 'initialize', params: {} }, auth)).status, 404);
    const init = await post(g, 'files', { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }, auth);
    assert.equal(init.status, 200, init.text);
    await raw(g.base, '/mcp/files', { method: 'DELETE', headers: { ...auth, 'mcp-session-id': String(init.headers['mcp-session-id']) } });
  }

  test('API keys only: byte-identical answers', async () => {
    const g = await startTestGateway({ files: upstreams.raw() }, { config: { auth: { apiKeys: [{ id: 'ci', sha256: hashApiKey(key) }] } } });
    try {
      await compare(g, true);
    } finally {
      await g.close();
    }
  });

  test('OIDC: identical but for the path asked for, which WWW-Authenticate points back to', async () => {
    const g = await startTestGateway({ files: upstreams.raw() }, { config: { auth: { oidc: { issuer: idp.issuer, audience: 'portcullis' }, apiKeys: [{ id: 'ci', sha256: hashApiKey(key) }] } } });
    try {
      const res = await raw(g.base, '/mcp/filez', { method: 'GET' });
      assert.match(String(res.headers['www-authenticate']), /resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp\/filez"/);
      await compare(g, false);
      // The documented exception: the metadata endpoint is public (RFC 9728) and 404s unknown servers.
      assert.equal((await get(g, '/.well-known/oauth-protected-resource/mcp/files')).status, 200);
      assert.equal((await get(g, '/.well-known/oauth-protected-resource/mcp/filez')).status, 404);
    } finally {
      await g.close();
    }
  });
});
