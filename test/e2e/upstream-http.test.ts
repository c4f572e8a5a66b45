// Through the gateway to a Streamable HTTP upstream that makes its clients poll (it closes a
// call's stream mid-call, SEP-1699) and that ends sessions: the client gets every progress
// notification and the answer, and a session the upstream ended ends at the gateway with a
// reason that names the server, never its URL.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startResumableUpstream, type ResumableUpstream } from '../fixtures/resumable-http-upstream.js';
import { connectHttp, post, startTestGateway, waitFor, type TestGateway } from './harness.js';

let up: ResumableUpstream;
let gw: TestGateway;

before(async () => {
  up = await startResumableUpstream({ retryMs: 100 });
  gw = await startTestGateway({ poller: { transport: 'http', url: `${up.url}?api_key=sk_live_abcdef123456`, headers: { Authorization: 'Bearer upstream-token-123456' } } });
});
after(async () => {
  await gw?.close();
  await up?.close();
});

const text = (r: unknown) => ((r as CallToolResult).content as Array<{ text?: string }>).map((c) => c.text ?? '').join('');

describe('a Streamable HTTP upstream through the gateway', () => {
  test('a call whose stream the upstream closes mid-call: the client gets both progress notifications and the answer', async () => {
    const client = await connectHttp(gw.url('poller'));
    const progress: number[] = [];
    const result = await client.callTool({ name: 'poll', arguments: { ms: 300 } }, undefined, { onprogress: (p) => progress.push(p.progress) });
    assert.equal(text(result), 'done after 300 ms');
    assert.deepEqual(progress, [1, 2]);
    assert.ok(up.seen.some((s) => s.method === 'GET' && s.headers['last-event-id'] && s.headers.authorization === 'Bearer upstream-token-123456'), 'the stream was resumed, with the configured headers');
    await client.close();
  });

  test('the upstream ends the session: the gateway ends it too, with a reason naming the server only', async () => {
    const client = await connectHttp(gw.url('poller'));
    const sessionId = (client.transport as { sessionId?: string }).sessionId!;
    assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'hi' } })), 'Echo: hi');
    for (const id of up.sessions()) await up.endSession(id);
    await waitFor('the gateway session to end', () => !gw.gateway.sessions.has(sessionId), 5_000);
    const end = gw.audit.find((r) => r.type === 'session.end' && r.data.sessionId === sessionId);
    assert.equal(end?.data.reason, 'upstream "poller" ended the session (HTTP 404 for its session id) (PCL_UPSTREAM_UNAVAILABLE)');
    const res = await post(gw, 'poller', { jsonrpc: '2.0', id: 2, method: 'ping' }, { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' });
    assert.equal(res.status, 404);
    await client.close().catch(() => undefined);
    // A new session works.
    const again = await connectHttp(gw.url('poller'));
    assert.equal(text(await again.callTool({ name: 'echo', arguments: { message: 'again' } })), 'Echo: again');
    await again.close();
  });
});
