// Upstreams that fail: crash mid-call, do not exist, do not listen, never answer; and the
// session limit. Each gets a clear error, never takes the gateway down, and the gateway keeps
// serving other sessions (SPEC 1, 2, 10).
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { alive, connectHttp, freePort, post, raw, rawSession, startTestGateway, upstreams, waitFor, type TestGateway } from './harness.js';

const text = (r: unknown) => ((r as CallToolResult).content as Array<{ text?: string }>).map((c) => c.text ?? '').join('\n');
const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } };

let gw: TestGateway;
let healthy: Client;
let deadPort: number;

before(async () => {
  deadPort = await freePort(); // nothing listens there
  gw = await startTestGateway(
    {
      raw: upstreams.raw(),
      missing: { transport: 'stdio', command: 'portcullis-e2e-no-such-command', args: ['--flag'] },
      'dead-http': { transport: 'http', url: `http://127.0.0.1:${deadPort}/mcp` },
      'dead-sse': { transport: 'sse', url: `http://127.0.0.1:${deadPort}/sse` },
    },
    { limits: { upstreamTimeout: '700ms', maxSessions: 4, maxResultBytes: 4096 } },
  );
  healthy = await connectHttp(gw.url('raw'));
});
after(async () => {
  await healthy?.close();
  await gw?.close();
});

async function stillServing() {
  assert.equal(text(await healthy.callTool({ name: 'echo', arguments: { ok: true } })), '{"ok":true}');
}

/** The pid of the stdio child behind a gateway session. */
function upstreamPid(sessionId: string): number {
  const s = gw.gateway.sessions.get(sessionId);
  assert.ok(s, `no gateway session ${sessionId}`);
  const pid = (s.upstream as unknown as { transport: { pid: number | null } }).transport.pid;
  assert.ok(pid, 'no upstream pid');
  return pid;
}

describe('an upstream that crashes mid-call', () => {
  test('SDK client: the in-flight call gets a clear JSON-RPC error; the session is then gone (404); a new session works', async () => {
    const client = await connectHttp(gw.url('raw'));
    const sessionId = (client.transport as { sessionId?: string }).sessionId!;
    const pid = upstreamPid(sessionId);
    const started = Date.now();
    await assert.rejects(client.callTool({ name: 'crash', arguments: {} }, undefined, { timeout: 10_000 }), (e: Error & { code?: number }) => {
      assert.match(e.message, /exited|session ended/i, e.message);
      assert.doesNotMatch(e.message, /timed out/i, 'the client had to wait for its own timeout');
      return true;
    });
    assert.ok(Date.now() - started < 5_000);
    await waitFor('the crashed child to be gone', () => !alive(pid), 5_000);
    assert.equal(gw.gateway.sessions.has(sessionId), false);
    const res = await post(gw, 'raw', { jsonrpc: '2.0', id: 2, method: 'tools/list' }, { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' });
    assert.equal(res.status, 404);
    await client.close().catch(() => undefined);
    const again = await connectHttp(gw.url('raw'));
    assert.equal(text(await again.callTool({ name: 'echo', arguments: { n: 1 } })), '{"n":1}');
    await again.close();
    await stillServing();
  });

  test('raw HTTP: the in-flight POST ends with a JSON-RPC error naming the exit', async () => {
    const s = await rawSession(gw, 'raw');
    const res = await post(gw, 'raw', { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'crash', arguments: {} } }, s.headers);
    assert.equal(res.status, 200);
    assert.equal(res.json?.id, 7, res.text);
    assert.equal(res.json.error.code, -32010);
    assert.match(res.json.error.message, /upstream "raw" .*exited \(code 3\)/);
    assert.equal((await post(gw, 'raw', { jsonrpc: '2.0', id: 8, method: 'ping' }, s.headers)).status, 404);
    await stillServing();
  });

  test('the audit log records the session end with the reason', async () => {
    const ends = gw.audit.filter((r) => r.type === 'session.end' && /exited/.test(String(r.data.reason)));
    assert.ok(ends.length >= 2, JSON.stringify(gw.audit.filter((r) => r.type === 'session.end')));
  });
});

describe('upstreams that cannot be reached', () => {
  test('a command that does not exist: initialize gets a clear error naming the server, never its command or arguments', async () => {
    const res = await post(gw, 'missing', INIT);
    assert.equal(res.status, 502, res.text);
    assert.equal(res.json.error.code, -32010);
    assert.match(res.json.error.message, /^upstream "missing" could not be started \(PCL_UPSTREAM_UNAVAILABLE\)/);
    assert.doesNotMatch(res.text, /portcullis-e2e-no-such-command|--flag/);
    assert.equal(res.headers['mcp-session-id'], undefined);
    await assert.rejects(connectHttp(gw.url('missing')), /upstream \\"missing\\" could not be started/);
    await stillServing();
  });

  test('an HTTP upstream that is not listening: a clear error naming it, never its URL', async () => {
    const res = await post(gw, 'dead-http', INIT);
    const err = res.json?.error;
    assert.ok(err, `${res.status} ${res.text}`);
    assert.equal(err.code, -32010);
    assert.match(err.message, /upstream "dead-http" could not be (reached|sent to)|could not send to upstream "dead-http"/);
    assert.doesNotMatch(res.text, new RegExp(`${deadPort}|127\\.0\\.0\\.1|ECONNREFUSED`));
    await assert.rejects(connectHttp(gw.url('dead-http')));
    // No session is left behind for a dead upstream.
    assert.equal([...gw.gateway.sessions.values()].filter((s) => s.server === 'dead-http').length, 0);
    await stillServing();
  });

  test('an SSE upstream that is not listening: a clear error naming it, never its URL', async () => {
    const res = await post(gw, 'dead-sse', INIT);
    assert.equal(res.status, 502, res.text);
    assert.equal(res.json.error.code, -32010);
    assert.match(res.json.error.message, /^upstream "dead-sse" could not be reached \(PCL_UPSTREAM_UNAVAILABLE\)/);
    assert.doesNotMatch(res.text, new RegExp(`${deadPort}|/sse`));
    await stillServing();
  });

  test('/readyz reports the unreachable upstreams by name and state only', async () => {
    const res = await raw(gw.base, '/readyz', { method: 'GET' });
    assert.equal(res.status, 503);
    assert.equal(res.json.checks['upstream:raw'], 'ok');
    assert.equal(res.json.checks['upstream:missing'], 'command not found');
    assert.equal(res.json.checks['upstream:dead-http'], 'unreachable');
    assert.doesNotMatch(res.text, new RegExp(`portcullis-e2e-no-such-command|${deadPort}`));
  });
});

describe('an upstream that never answers', () => {
  test('the call gets a timeout error after limits.upstreamTimeout; the session stays usable', async () => {
    const client = await connectHttp(gw.url('raw'));
    const started = Date.now();
    await assert.rejects(client.callTool({ name: 'hang', arguments: {} }, undefined, { timeout: 10_000 }), (e: Error) => {
      assert.match(e.message, /did not answer within 700 ms \(limits\.upstreamTimeout\)/, e.message);
      return true;
    });
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 650 && elapsed < 3_000, `${elapsed} ms`);
    // A late answer would be dropped; the session goes on.
    assert.equal(text(await client.callTool({ name: 'slow', arguments: { ms: 100 } })), 'slow done');
    assert.ok([...gw.gateway.sessions.values()].every((s) => !s.busy));
    await client.close();
    await stillServing();
  });

  test('an answer that arrives after the timeout is dropped, not delivered to a later request', async () => {
    const s = await rawSession(gw, 'raw');
    const late = await post(gw, 'raw', { jsonrpc: '2.0', id: 'late', method: 'tools/call', params: { name: 'slow', arguments: { ms: 1_200 } } }, s.headers);
    assert.equal(late.json.error.code, -32010);
    await new Promise((r) => setTimeout(r, 700)); // the upstream's late answer arrives now
    const next = await post(gw, 'raw', { jsonrpc: '2.0', id: 'next', method: 'tools/call', params: { name: 'echo', arguments: { x: 1 } } }, s.headers);
    assert.deepEqual(next.json, { jsonrpc: '2.0', id: 'next', result: { content: [{ type: 'text', text: '{"x":1}' }] } });
    await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: s.headers });
  });
});

describe('limits.maxSessions', () => {
  test('beyond it, a new session gets 503 with Retry-After; ending one makes room', async () => {
    const opened: Array<Awaited<ReturnType<typeof rawSession>>> = [];
    while (gw.gateway.sessions.size < 4) opened.push(await rawSession(gw, 'raw'));
    const res = await post(gw, 'raw', INIT);
    assert.equal(res.status, 503);
    assert.match(String(res.headers['retry-after']), /^\d+$/);
    assert.match(res.json.error.message, /limits\.maxSessions/);
    // Existing sessions are unaffected.
    await stillServing();
    assert.equal((await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: opened[0].headers })).status, 200);
    await waitFor('the session to be released', () => gw.gateway.sessions.size < 4);
    const again = await rawSession(gw, 'raw');
    assert.match(again.sessionId, /\S/);
    for (const s of [...opened.slice(1), again]) await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: s.headers });
  });
});

describe('limits.maxResultBytes', () => {
  test('an upstream answer over the limit becomes a clear JSON-RPC error; the session goes on', async () => {
    const client = await connectHttp(gw.url('raw'));
    try {
      await assert.rejects(client.callTool({ name: 'echo', arguments: { pad: 'x'.repeat(5_000) } }), (e: Error) => {
        assert.match(e.message, /over the gateway's limit of 4096 \(limits\.maxResultBytes\)/, e.message);
        return true;
      });
      assert.equal(text(await client.callTool({ name: 'echo', arguments: { pad: 'x'.repeat(100) } })), JSON.stringify({ pad: 'x'.repeat(100) }));
    } finally {
      await client.close();
    }
  });
});

describe('limits.sessionIdleTimeout', () => {
  test('an idle session ends: its upstream process exits and its id gets 404', async () => {
    const g = await startTestGateway({ raw: upstreams.raw() }, { limits: { sessionIdleTimeout: '400ms' } });
    try {
      const s = await rawSession(g, 'raw');
      const pid = (g.gateway.sessions.get(s.sessionId)!.upstream as unknown as { transport: { pid: number } }).transport.pid;
      assert.ok(alive(pid));
      // Activity keeps it open.
      for (let i = 0; i < 4; i++) {
        await new Promise((r) => setTimeout(r, 200));
        assert.equal((await post(g, 'raw', { jsonrpc: '2.0', id: i, method: 'ping' }, s.headers)).status, 200);
      }
      await waitFor('the idle session to end', () => !g.gateway.sessions.has(s.sessionId), 3_000);
      await waitFor('its upstream to exit', () => !alive(pid), 5_000);
      assert.equal((await post(g, 'raw', { jsonrpc: '2.0', id: 9, method: 'ping' }, s.headers)).status, 404);
    } finally {
      await g.close();
    }
  });
});
