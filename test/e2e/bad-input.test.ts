// Bad input at the HTTP front (SPEC 10): each gets its exact HTTP status and JSON-RPC code, is
// not forwarded, and the gateway keeps serving another open session afterwards.
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { connectHttp, MCP_HEADERS, post, raw, rawSession, startTestGateway, tempDir, upstreams, type TestGateway } from './harness.js';

const text = (r: unknown) => ((r as CallToolResult).content as Array<{ text?: string }>).map((c) => c.text ?? '').join('\n');

const dir = tempDir('pcl-bad-');
const RECORD = join(dir.path, 'received.jsonl');
let gw: TestGateway;
let healthy: Client;

before(async () => {
  gw = await startTestGateway(
    { raw: upstreams.raw({ RECORD_FILE: RECORD }), other: upstreams.raw() },
    { limits: { maxBodyBytes: 64 * 1024, maxDepth: 20, maxHeaderBytes: 8 * 1024 }, listen: { allowedOrigins: ['https://app.example'] } },
  );
  healthy = await connectHttp(gw.url('raw'));
});
after(async () => {
  await healthy?.close();
  await gw?.close();
  dir.remove();
});

/** Whatever was just refused, the open session is still served. */
afterEach(async () => {
  assert.equal(text(await healthy.callTool({ name: 'echo', arguments: { still: 'serving' } })), '{"still":"serving"}');
});

/** Every line the upstream received so far. */
const received = () => (existsSync(RECORD) ? readFileSync(RECORD, 'utf8').trim().split('\n').filter(Boolean) : []);

function assertRpcError(res: { status: number; json: any }, status: number, code: number, message?: RegExp) {
  assert.equal(res.status, status, JSON.stringify(res.json));
  assert.equal(res.json?.jsonrpc, '2.0');
  assert.equal(res.json?.error?.code, code, JSON.stringify(res.json));
  if (message) assert.match(res.json.error.message, message);
}

describe('malformed messages get 400 and are not forwarded', () => {
  let s: Awaited<ReturnType<typeof rawSession>>;
  before(async () => {
    s = await rawSession(gw, 'raw');
    // notifications/initialized is answered 202 before it is forwarded: a ping after it makes sure it arrived.
    assert.equal((await post(gw, 'raw', { jsonrpc: '2.0', id: 'sync', method: 'ping' }, s.headers)).status, 200);
  });

  const cases: Array<[string, string, number, RegExp]> = [
    ['malformed JSON', '{"jsonrpc":"2.0","id":1,"method":"tools/list"', -32700, /Parse error/],
    ['a non-JSON-RPC body', '{"hello":1}', -32600, /jsonrpc|method/],
    ['a JSON-RPC batch', '[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"ping"}]', -32600, /batch/i],
    ['a bare string', '"tools/list"', -32600, /object/],
    ['a request method without an id', '{"jsonrpc":"2.0","method":"tools/list"}', -32600, /needs an id/],
    ['a notification method with an id', '{"jsonrpc":"2.0","id":9,"method":"notifications/initialized"}', -32600, /must not carry an id/],
    ['params that are not an object', '{"jsonrpc":"2.0","id":3,"method":"tools/list","params":[1,2]}', -32602, /params must be an object/],
    ['tools/call with a name that is not a string', '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":["echo"],"arguments":{}}}', -32602, /name must be a string/],
    ['tools/call with arguments that are not an object', '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":"x"}}', -32602, /arguments must be an object/],
    ['an id that is neither string nor integer', '{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', -32600, /id must be/],
    ['a wrong jsonrpc version', '{"jsonrpc":"1.0","id":6,"method":"ping"}', -32600, /jsonrpc must be "2.0"/],
  ];
  for (const [what, body, code, message] of cases) {
    test(`${what} → 400, ${code}`, async () => {
      const before = received().length;
      assertRpcError(await post(gw, 'raw', body, s.headers), 400, code, message);
      // Also without a session: the envelope is checked before anything else.
      assertRpcError(await post(gw, 'raw', body), 400, code);
      assert.equal(received().length, before, 'a refused message reached the upstream');
    });
  }

  test('the refused messages never reached the upstream at all', () => {
    const lines = received().join('\n');
    assert.doesNotMatch(lines, /"hello"|\["echo"\]|"params":\[1,2\]|"arguments":"x"/);
  });
});

describe('HTTP-level refusals', () => {
  test('an unknown server name → 404', async () => {
    const res = await post(gw, 'nope', { jsonrpc: '2.0', id: 1, method: 'initialize', params: {} });
    assertRpcError(res, 404, -32600, /no server named "nope"/);
    assert.equal((await raw(gw.base, '/mcp/', { method: 'GET' })).status, 404);
  });

  test('a body over limits.maxBodyBytes → 413, declared or streamed', async () => {
    const big = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { pad: 'x'.repeat(70 * 1024) } } });
    assertRpcError(await post(gw, 'raw', big), 413, -32600, /maxBodyBytes/);
    // Chunked, without a Content-Length: cut off while reading.
    const res = await raw(gw.base, '/mcp/raw', { headers: { ...MCP_HEADERS, 'transfer-encoding': 'chunked' }, body: big });
    assertRpcError(res, 413, -32600, /maxBodyBytes/);
  });

  test('nesting deeper than limits.maxDepth → 400, -32600', async () => {
    const deep = '['.repeat(30) + ']'.repeat(30);
    const res = await post(gw, 'raw', `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":${deep}}}}`);
    assertRpcError(res, 400, -32600, /maxDepth/);
    const hostile = '['.repeat(30_000) + ']'.repeat(29_999); // unbalanced too: refused for depth or as a parse error, never a crash
    assert.equal((await post(gw, 'raw', hostile)).status, 400);
  });

  test('a wrong Content-Type → 415', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {} });
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonp']) {
      assertRpcError(await raw(gw.base, '/mcp/raw', { headers: { ...MCP_HEADERS, 'content-type': type }, body }), 415, -32600, /Content-Type/);
    }
    assertRpcError(await raw(gw.base, '/mcp/raw', { headers: { accept: MCP_HEADERS.accept }, body }), 415, -32600);
  });

  test('Content-Encoding gzip → 415', async () => {
    const res = await raw(gw.base, '/mcp/raw', { headers: { ...MCP_HEADERS, 'content-encoding': 'gzip' }, body: '{}' });
    assertRpcError(res, 415, -32600, /Content-Encoding/);
  });

  test('an Origin not in listen.allowedOrigins → 403, "null" included; an allowed one passes', async () => {
    const init = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } };
    for (const origin of ['https://evil.example', 'null', 'https://app.example.evil.example', 'http://app.example']) {
      assertRpcError(await post(gw, 'raw', init, { origin }), 403, -32600, /Origin/);
    }
    const ok = await post(gw, 'raw', init, { origin: 'https://app.example' });
    assert.equal(ok.status, 200, ok.text);
    await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: { 'mcp-session-id': ok.headers['mcp-session-id'] as string, origin: 'https://app.example' } });
  });

  test('a non-loopback Host on a loopback-bound gateway → 403 (DNS rebinding); loopback names pass', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' });
    for (const host of ['evil.example', `evil.example:${gw.port}`, '127.0.0.1.evil.example', 'localhost.evil.example', '[::1].evil.example']) {
      const res = await raw(gw.base, '/mcp/raw', { headers: { ...MCP_HEADERS, host }, body });
      assertRpcError(res, 403, -32600, /Host/);
    }
    for (const host of [`localhost:${gw.port}`, `127.0.0.1:${gw.port}`]) {
      // Passes the Host check, then is refused for having no session: 400, not 403.
      const res = await raw(gw.base, '/mcp/raw', { headers: { ...MCP_HEADERS, host }, body });
      assert.equal(res.status, 400, `${host}: ${res.text}`);
    }
  });

  test('request headers over limits.maxHeaderBytes → 431', async () => {
    const res = await raw(gw.base, '/mcp/raw', { headers: { ...MCP_HEADERS, 'x-filler': 'a'.repeat(10 * 1024) }, body: '{}' });
    assert.equal(res.status, 431);
  });

  test('an unsupported HTTP method → 405 with Allow', async () => {
    const res = await raw(gw.base, '/mcp/raw', { method: 'PUT', headers: MCP_HEADERS, body: '{}' });
    assert.equal(res.status, 405);
    assert.match(String(res.headers.allow), /POST/);
  });
});

describe('session ids', () => {
  test('an unknown Mcp-Session-Id → 404', async () => {
    const res = await post(gw, 'raw', { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { 'mcp-session-id': 'no-such-session', 'mcp-protocol-version': '2025-11-25' });
    assertRpcError(res, 404, -32001, /Session not found/);
    const get = await raw(gw.base, '/mcp/raw', { method: 'GET', headers: { accept: 'text/event-stream', 'mcp-session-id': 'no-such-session' } });
    assert.equal(get.status, 404);
  });

  test('a session id used on another server\'s path → 404, and the session still works on its own path', async () => {
    const s = await rawSession(gw, 'raw');
    const list = { jsonrpc: '2.0', id: 2, method: 'tools/list' };
    assertRpcError(await post(gw, 'other', list, s.headers), 404, -32001);
    const own = await post(gw, 'raw', list, s.headers);
    assert.equal(own.status, 200);
    assert.ok(own.json.result.tools.some((t: { name: string }) => t.name === 'echo'));
    assert.equal((await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: s.headers })).status, 200);
    assertRpcError(await post(gw, 'raw', list, s.headers), 404, -32001);
  });

  test('a request without a session id that is not initialize → 400', async () => {
    assertRpcError(await post(gw, 'raw', { jsonrpc: '2.0', id: 1, method: 'tools/list' }), 400, -32600, /Mcp-Session-Id header is required/);
    const get = await raw(gw.base, '/mcp/raw', { method: 'GET', headers: { accept: 'text/event-stream' } });
    assert.equal(get.status, 400);
  });

  test('a second initialize on an existing session is refused by the transport, the session goes on', async () => {
    const s = await rawSession(gw, 'raw');
    const again = await post(gw, 'raw', { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }, s.headers);
    assert.equal(again.status, 400);
    const ping = await post(gw, 'raw', { jsonrpc: '2.0', id: 2, method: 'ping' }, s.headers);
    assert.deepEqual(ping.json, { jsonrpc: '2.0', id: 2, result: {} });
    await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: s.headers });
  });
});

describe('slow clients', () => {
  test('a client that never finishes its body is cut off after limits.requestTimeout', async () => {
    const g = await startTestGateway({ raw: upstreams.raw() }, { limits: { requestTimeout: '500ms' } });
    try {
      const started = Date.now();
      const outcome = await new Promise<string>((resolve) => {
        const sock = connect(g.port, '127.0.0.1', () => {
          sock.write(`POST /mcp/raw HTTP/1.1\r\nHost: 127.0.0.1:${g.port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{"jsonrpc":"2.0",`);
        });
        let got = '';
        sock.on('data', (d) => (got += d.toString()));
        sock.on('close', () => resolve(got));
        sock.on('error', () => undefined);
        setTimeout(() => (sock.destroy(), resolve('still open after 8 s')), 8_000).unref();
      });
      assert.notEqual(outcome, 'still open after 8 s');
      assert.ok(outcome === '' || /^HTTP\/1\.1 408/.test(outcome), outcome);
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 400 && elapsed < 3_000, `cut off after ${elapsed} ms; limits.requestTimeout is 500 ms`);
      // Headers that never end are cut off too.
      const headersOutcome = await new Promise<string>((resolve) => {
        const sock = connect(g.port, '127.0.0.1', () => sock.write(`POST /mcp/raw HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: `));
        let got = '';
        sock.on('data', (d) => (got += d.toString()));
        sock.on('close', () => resolve(got));
        sock.on('error', () => undefined);
        setTimeout(() => (sock.destroy(), resolve('still open after 8 s')), 8_000).unref();
      });
      assert.notEqual(headersOutcome, 'still open after 8 s');
      // The gateway still serves.
      const c = await connectHttp(g.url('raw'));
      assert.equal(text(await c.callTool({ name: 'echo', arguments: {} })), '{}');
      await c.close();
    } finally {
      await g.close();
    }
  });
});

describe('names and ids as large as a request body', () => {
  test('the upstream gets them whole; the decision record and the request log line carry a digest, the size and a prefix', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const g = await startTestGateway({ raw: upstreams.raw({ RECORD_FILE: RECORD }) }, { limits: { maxBodyBytes: 256 * 1024 }, log });
    try {
      const s = await rawSession(g, 'raw');
      const name = `t${'🦀'.repeat(50_000)}`;
      const id = `id-${'x'.repeat(20_000)}`;
      const res = await post(g, 'raw', { jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } }, s.headers);
      assert.equal(res.json.id, id, 'the answer carries the id as sent');
      // What was decided is what the upstream received: the whole name and id.
      const got = received().map((l) => JSON.parse(l) as { id?: unknown; params?: { name?: string } }).find((m) => m.id === id);
      assert.equal(got?.params?.name, name);
      const sha = (t: string) => createHash('sha256').update(t, 'utf8').digest('hex');
      const record = g.audit.find((r) => r.type === 'decision' && (r.data.requestId as { sha256?: string })?.sha256 === sha(id));
      assert.ok(record, 'the decision record names the request by its id digest');
      assert.deepEqual(record.data.tool, { sha256: sha(name), bytes: Buffer.byteLength(name), prefix: `t${'🦀'.repeat(63)}` });
      assert.ok(JSON.stringify(record.data).length < 2_000, `${JSON.stringify(record.data).length} characters in the record`);
      const line = lines.find((l) => l.includes(sha(name)));
      assert.ok(line && line.length < 2_000 && !line.includes('🦀'.repeat(64)), `the request log line: ${line?.length} characters`);
    } finally {
      await g.close();
    }
  });
});
