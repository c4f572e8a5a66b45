// Upstream URLs that carry credentials (SPEC 1: clients never see upstream secrets). A key in the
// query (?api_key=…, as many SaaS MCP servers take it) works, and appears in no response, no
// /readyz body and no log line, on every path: working, timed out, unreachable, refused by the
// upstream (whose error body echoes the key), gone mid-session. Credentials in "user:pass@" are
// refused at load with the file, the line and where to put them instead.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { startRecordingUpstream, type RecordingUpstream } from '../fixtures/identity-recording-upstream.js';
import { freePort, post, raw, rawSession, runPortcullis, startTestGateway, writeConfig, type RawResponse, type TestGateway } from './harness.js';

const SECRET = `sk_live_${randomBytes(12).toString('hex')}`;
const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } };

let upstream: RecordingUpstream;
let echoing: Server;
let gw: TestGateway;
const logLines: string[] = [];
/** Every response body and header a client or prober received. */
const seen: RawResponse[] = [];

async function observe(res: Promise<RawResponse>): Promise<RawResponse> {
  const r = await res;
  seen.push(r);
  return r;
}

function assertNoSecret(text: string, where: string): void {
  assert.ok(!text.includes(SECRET), `the key appears in ${where}:\n${text}`);
}

before(async () => {
  upstream = await startRecordingUpstream();
  // An upstream that refuses the key and quotes the request URL back, as some servers' errors do.
  echoing = createServer((req, res) => res.writeHead(401, { 'content-type': 'text/plain' }).end(`invalid key in ${req.url}`));
  await new Promise<void>((r) => echoing.listen(0, '127.0.0.1', r));
  const deadPort = await freePort();
  const log = pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) });
  gw = await startTestGateway(
    {
      saas: { transport: 'http', url: `${upstream.url}?api_key=${SECRET}&region=eu` },
      refusing: { transport: 'http', url: `http://127.0.0.1:${(echoing.address() as AddressInfo).port}/mcp?api_key=${SECRET}` },
      'dead-http': { transport: 'http', url: `http://127.0.0.1:${deadPort}/mcp?token=${SECRET}` },
      'dead-sse': { transport: 'sse', url: `http://127.0.0.1:${deadPort}/sse?key=${SECRET}` },
    },
    { limits: { upstreamTimeout: '2s' }, log },
  );
});

after(async () => {
  await gw?.close();
  await upstream?.close();
  await new Promise((r) => echoing?.close(r));
});

describe('an upstream URL with a key in its query', () => {
  test('works: the upstream receives the key with every request', async () => {
    const s = await rawSession(gw, 'saas');
    const res = await observe(post(gw, 'saas', { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'whoami', arguments: { name: 'alice' } } }, s.headers));
    assert.equal(res.json.result.content[0].text, 'hello alice', res.text);
    assert.ok(upstream.requests.length > 0);
    for (const r of upstream.requests) assert.equal(new URL(r.url, 'http://x').searchParams.get('api_key'), SECRET, r.url);
    const ready = await observe(raw(gw.base, '/readyz', { method: 'GET' }));
    assert.equal(ready.json.checks['upstream:saas'], 'ok');
  });

  test('a timed-out call: the error names no URL', async () => {
    const s = await rawSession(gw, 'saas');
    const res = await observe(post(gw, 'saas', { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'wait', arguments: { ms: 4_000 } } }, s.headers));
    assert.equal(res.json.error.code, -32010);
    assert.match(res.json.error.message, /did not answer within 2000 ms/);
  });

  test('an upstream that refuses and quotes the URL back: the client sees the server name and a code only', async () => {
    const res = await observe(post(gw, 'refusing', INIT));
    assert.equal(res.json.error.code, -32010, res.text);
    assert.match(res.json.error.message, /upstream "refusing".*\(PCL_UPSTREAM_UNAVAILABLE\)/);
  });

  test('unreachable upstreams (Streamable HTTP and SSE): errors and /readyz name the server and a state', async () => {
    for (const name of ['dead-http', 'dead-sse']) {
      const res = await observe(post(gw, name, INIT));
      assert.equal(res.json.error.code, -32010, res.text);
      assert.match(res.json.error.message, new RegExp(`upstream "${name}".*\\(PCL_UPSTREAM_UNAVAILABLE\\)`));
    }
    const ready = await observe(raw(gw.base, '/readyz', { method: 'GET' }));
    assert.equal(ready.status, 503);
    assert.deepEqual(
      Object.fromEntries(Object.entries(ready.json.checks).filter(([k]) => k.startsWith('upstream:'))),
      { 'upstream:saas': 'ok', 'upstream:refusing': 'ok', 'upstream:dead-http': 'unreachable', 'upstream:dead-sse': 'unreachable' },
    );
  });

  test('an upstream that goes away mid-session: the in-flight error and the new session error name no URL', async () => {
    const s = await rawSession(gw, 'saas');
    await upstream.close();
    const res = await observe(post(gw, 'saas', { jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 'whoami', arguments: {} } }, s.headers));
    assert.equal(res.json.error.code, -32010, res.text);
    assert.match(res.json.error.message, /upstream "saas"/);
    assert.equal((await observe(post(gw, 'saas', INIT))).json.error.code, -32010);
    assert.equal((await observe(raw(gw.base, '/readyz', { method: 'GET' }))).json.checks['upstream:saas'], 'unreachable');
  });

  test('no response, /readyz body or log line carries the key; the log still says what failed and where', async () => {
    assert.ok(seen.length >= 8);
    for (const r of seen) {
      assertNoSecret(r.text, `a response body (${r.status})`);
      assertNoSecret(JSON.stringify(r.headers), 'response headers');
    }
    assert.ok(logLines.length > 0);
    for (const line of logLines) assertNoSecret(line, 'the log');
    const log = logLines.join('');
    assert.match(log, /upstream could not be reached/);
    assert.match(log, /api_key=\[REDACTED\]/, 'the log names the upstream address with its query values hidden');
    assert.match(log, /invalid key in \/mcp\?api_key=\[REDACTED\]/, "the refusing upstream's own words, with the key scrubbed");
    assert.match(log, /"check":"upstream:dead-http","state":"unreachable","detail":"http:\/\/127\.0\.0\.1:\d+\/mcp\?token=\[REDACTED\]: [^"]*ECONNREFUSED/);
  });
});

test('credentials in the URL ("user:pass@") are refused at load: file, line, field and where to put them', async () => {
  const { file, dir } = writeConfig({ servers: { crm: { transport: 'http', url: `https://svc:${SECRET}@crm.example.com/mcp` } } });
  try {
    const proc = runPortcullis(['serve', '-c', file]);
    const { code } = await proc.exited;
    assert.equal(code, 1, proc.output());
    assert.match(proc.output(), /portcullis\.yaml:\d+: servers\.crm\.url: credentials in the URL .*headers.*Authorization/);
    assertNoSecret(proc.output(), 'the config error');
  } finally {
    dir.remove();
  }
});
