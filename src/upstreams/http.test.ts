// The Streamable HTTP connector against real servers: server-everything (SDK v1), an SDK v1
// server that closes streams mid-call to make the client poll and ends sessions, and an SDK v2
// dual-era server for the 2026-07-28 functions; plus a raw node:http server for answers no SDK
// server gives (no event id, redirects, junk). What the connector sent is checked at the server.
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { REGION_TOOL_SCHEMA, startDualEraUpstream, type DualEraUpstream } from '../../test/fixtures/dual-era-http-upstream.js';
import { startResumableUpstream, type ResumableUpstream } from '../../test/fixtures/resumable-http-upstream.js';
import { freePort, startEverythingHttp, waitFor, type Proc } from '../../test/e2e/harness.js';
import { McpHeaderError, PROTOCOL_VERSION_META } from '../protocol/mcp-headers.js';
import { probeHttpEra, StreamableHttpUpstreamTransport, UpstreamAnswerError, type HttpUpstreamOptions } from './http.js';

const FAST: HttpUpstreamOptions = { reconnect: { initialMs: 50, maxMs: 200, attempts: 3 } };
const INIT = { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'http-test', version: '1' } };
const META = { [PROTOCOL_VERSION_META]: '2026-07-28', 'io.modelcontextprotocol/clientInfo': { name: 'http-test', version: '1' }, 'io.modelcontextprotocol/clientCapabilities': {} };

type Answer = { id: RequestId; result?: Record<string, unknown>; error?: { code: number; message: string } };

/** A small JSON-RPC client over the connector: answers by id, everything else in `others` with when it came. */
function client(t: StreamableHttpUpstreamTransport) {
  const waiting = new Map<RequestId, (m: Answer) => void>();
  const others: Array<{ message: JSONRPCMessage; at: number }> = [];
  const errors: string[] = [];
  let closed = false;
  let next = 1;
  t.onmessage = (m) => {
    const a = m as Answer & { method?: string };
    if (a.method === undefined && waiting.has(a.id)) {
      waiting.get(a.id)!(a);
      waiting.delete(a.id);
    } else others.push({ message: m, at: Date.now() });
  };
  t.onerror = (e) => errors.push(e.message);
  t.onclose = () => (closed = true);
  return {
    others,
    errors,
    isClosed: () => closed,
    async call(method: string, params: Record<string, unknown> = {}): Promise<Answer> {
      const id = next++;
      const answer = new Promise<Answer>((r) => waiting.set(id, r));
      await t.send({ jsonrpc: '2.0', id, method, params } as JSONRPCMessage);
      return answer;
    },
    notify: (method: string) => t.send({ jsonrpc: '2.0', method } as JSONRPCMessage),
    async initialize(): Promise<Answer> {
      const a = await this.call('initialize', INIT);
      t.setProtocolVersion((a.result as { protocolVersion: string }).protocolVersion);
      await this.notify('notifications/initialized');
      return a;
    },
  };
}

const text = (a: Answer) => ((a.result?.content as Array<{ text: string }>) ?? []).map((c) => c.text).join('');

describe('legacy Streamable HTTP against server-everything', () => {
  let ev: Proc & { url: string };
  before(async () => (ev = await startEverythingHttp('streamableHttp')));
  after(() => ev?.stop());

  test('initializes, calls a tool, streams progress as it happens, and ends the session at the server on close', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(ev.url), FAST);
    const c = client(t);
    const init = await c.initialize();
    assert.equal((init.result?.serverInfo as { name: string }).name, 'mcp-servers/everything');
    const session = t.sessionId;
    assert.ok(session);
    assert.equal(text(await c.call('tools/call', { name: 'echo', arguments: { message: 'hi' } })), 'Echo: hi');

    const started = Date.now();
    const long = await c.call('tools/call', { name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 4 }, _meta: { progressToken: 'p1' } });
    const done = Date.now();
    assert.match(text(long), /completed/i);
    const progress = c.others.filter((o) => (o.message as { method?: string }).method === 'notifications/progress');
    assert.equal(progress.length, 4);
    // Each one was handed on when it came, not when the call ended.
    assert.ok(progress[0].at - started < (done - started) / 2, `first progress after ${progress[0].at - started} ms of ${done - started}`);

    await t.terminateSession();
    await t.close();
    assert.equal(c.isClosed(), true);
    // The server forgot the session: its id is refused now.
    const res = await rawPost(ev.url, { jsonrpc: '2.0', id: 9, method: 'ping' }, { 'mcp-session-id': session, 'mcp-protocol-version': '2025-11-25' });
    assert.ok(res.status === 400 || res.status === 404, String(res.status));
    assert.equal(c.errors.length, 0, c.errors.join('\n'));
  });
});

describe('legacy Streamable HTTP against a server that polls, closes streams and ends sessions (SDK v1 server with an event store)', () => {
  let up: ResumableUpstream;
  before(async () => (up = await startResumableUpstream({ retryMs: 150 })));
  after(() => up?.close());

  test('sends the configured headers, the session id and the protocol version it was given', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(up.url), { ...FAST, headers: { Authorization: 'Bearer upstream-secret', 'X-Tenant': 'acme', 'Content-Length': '1' } });
    const c = client(t);
    const from = up.seen.length;
    await c.initialize();
    await c.call('tools/call', { name: 'echo', arguments: { message: 'x' } });
    const posts = up.seen.slice(from).filter((s) => s.method === 'POST');
    assert.deepEqual(
      posts.map((p) => [p.rpc, p.headers['mcp-session-id'] !== undefined, p.headers['mcp-protocol-version']]),
      [
        ['initialize', false, undefined],
        ['notifications/initialized', true, '2025-11-25'],
        ['tools/call', true, '2025-11-25'],
      ],
    );
    for (const p of posts) {
      assert.equal(p.headers.authorization, 'Bearer upstream-secret');
      assert.equal(p.headers['x-tenant'], 'acme');
      assert.equal(p.headers.accept, 'application/json, text/event-stream');
      assert.equal(p.headers['content-type'], 'application/json');
    }
    await waitFor('the GET stream', () => up.seen.slice(from).find((s) => s.method === 'GET'));
    const get = up.seen.slice(from).find((s) => s.method === 'GET')!;
    assert.equal(get.headers.accept, 'text/event-stream');
    assert.equal(get.headers.authorization, 'Bearer upstream-secret');
    await t.terminateSession();
    await t.close();
    assert.ok(up.seen.slice(from).some((s) => s.method === 'DELETE' && s.headers['mcp-session-id'] === posts[1].headers['mcp-session-id']));
  });

  test('a call whose stream the server closes mid-call is resumed with GET and Last-Event-ID after the retry delay: its progress and answer arrive', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(up.url), FAST);
    const c = client(t);
    await c.initialize();
    const from = up.seen.length;
    const sent = Date.now();
    const answer = await c.call('tools/call', { name: 'poll', arguments: { ms: 400 }, _meta: { progressToken: 'poll-1' } });
    assert.equal(text(answer), 'done after 400 ms');
    const progress = c.others.map((o) => o.message as { method?: string; params?: { progress?: number } }).filter((m) => m.method === 'notifications/progress');
    assert.deepEqual(
      progress.map((m) => m.params?.progress),
      [1, 2],
    );
    const resumes = up.seen.slice(from).filter((s) => s.method === 'GET' && s.headers['last-event-id']);
    assert.ok(resumes.length >= 1, 'no GET with Last-Event-ID');
    assert.ok(Date.now() - sent >= 400);
    await t.terminateSession();
    await t.close();
  });

  test('the GET stream: closed by the server, it is reopened with Last-Event-ID and what was sent meanwhile arrives', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(up.url), FAST);
    const c = client(t);
    await c.initialize();
    const id = t.sessionId!;
    const logged = () => c.others.map((o) => (o.message as { params?: { data?: unknown } }).params?.data);
    await waitFor('the GET stream to open', () => up.seen.some((s) => s.method === 'GET' && s.headers['mcp-session-id'] === id));
    await waitFor('the first message on the GET stream', async () => (await up.notify(id, 'one'), logged().includes('one')), 5_000, 100);
    up.closeGetStream(id);
    await up.notify(id, 'two'); // stored: nobody listens right now
    await waitFor('the message sent while the stream was closed', () => logged().includes('two'), 5_000);
    assert.ok(up.seen.some((s) => s.method === 'GET' && s.headers['mcp-session-id'] === id && s.headers['last-event-id']));
    await t.terminateSession();
    await t.close();
  });

  test('the server ends the session: the next answer is 404 for its id, and the connector closes saying why', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(up.url), FAST);
    const c = client(t);
    await c.initialize();
    await up.endSession(t.sessionId!);
    await waitFor('the connector to close', () => c.isClosed(), 5_000);
    assert.match(t.endedBecause ?? '', /ended the session \(HTTP 404/);
    await assert.rejects(c.call('ping'), /closed/);
  });

  test('an answer over maxMessageBytes fails its call at once with a clear error; the session goes on', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(up.url), { ...FAST, maxMessageBytes: 4096 });
    const c = client(t);
    await c.initialize();
    await assert.rejects(c.call('tools/call', { name: 'big', arguments: { bytes: 10_000 } }), /over 4096 characters/);
    assert.equal(text(await c.call('tools/call', { name: 'echo', arguments: { message: 'still here' } })), 'Echo: still here');
    await t.close();
  });

  test('sockets are kept alive and shared: 30 calls in a row, and a second session, on the connections already open', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(up.url), FAST);
    const c = client(t);
    await c.initialize();
    const before = up.connections();
    for (let i = 0; i < 30; i++) assert.equal(text(await c.call('tools/call', { name: 'echo', arguments: { message: String(i) } })), `Echo: ${i}`);
    const t2 = new StreamableHttpUpstreamTransport(new URL(up.url), FAST);
    await client(t2).initialize();
    assert.ok(up.connections() - before <= 2, `${up.connections() - before} new connections`);
    await Promise.all([t.close(), t2.close()]);
  });

  test('close() ends the streams still open at the server (this session\'s, and none of the sessions before is left open)', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(up.url), FAST);
    const c = client(t);
    await c.initialize();
    const call = t.send({ jsonrpc: '2.0', id: 99, method: 'tools/call', params: { name: 'poll', arguments: { ms: 5_000 } } });
    await waitFor('the GET stream and the call to be open', () => up.open(t.sessionId).length >= 2);
    await t.close();
    await call; // settles quietly: nobody waits for its answer any more
    await waitFor('every stream to end at the server', () => up.open().length === 0, 5_000).catch((e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(up.open().map((r) => [r.method, r.rpc, r.headers['mcp-session-id']]))}`);
    });
  });
});

describe('legacy Streamable HTTP with JSON answers', () => {
  let up: ResumableUpstream;
  before(async () => (up = await startResumableUpstream({ json: true })));
  after(() => up?.close());

  test('each answer is one JSON body', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(up.url), FAST);
    const c = client(t);
    await c.initialize();
    assert.equal(text(await c.call('tools/call', { name: 'echo', arguments: { message: 'json' } })), 'Echo: json');
    await t.terminateSession();
    await t.close();
  });
});

describe('answers no SDK server gives (raw node:http)', () => {
  let server: Server;
  let url: string;
  let answer: (req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>) => void;
  before(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => answer(req, res, body ? JSON.parse(body) : {}));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });
  const sse = (res: ServerResponse, text: string) => res.writeHead(200, { 'content-type': 'text/event-stream' }).end(text);

  test('a stream that ends without the answer and without an event id fails the call at once', async () => {
    answer = (_req, res) => sse(res, 'data: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}\n\n');
    const c = client(new StreamableHttpUpstreamTransport(new URL(url), FAST));
    await assert.rejects(c.call('tools/list'), /ended the event stream without the answer/);
    assert.equal(c.others.length, 1, 'the notification before still arrived');
    // Likewise a JSON body that is not this request's answer (here an error without an id).
    answer = (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}');
    await assert.rejects(c.call('tools/list'), /not the answer to this request/);
    assert.equal(c.others.length, 2, 'and it was handed on');
  });

  test('CR and CRLF line ends, comments and junk events: the valid messages arrive, the junk is reported', async () => {
    answer = (_req, res, body) => sse(res, `: hello\r\n\r\ndata: not json\r\rdata: {"a":1}\r\n\r\nevent: ping\ndata: {}\n\ndata: {"jsonrpc":"2.0","id":${JSON.stringify(body.id)},\rdata: "result":{"ok":true}}\r\r`);
    const c = client(new StreamableHttpUpstreamTransport(new URL(url), FAST));
    assert.deepEqual((await c.call('tools/list')).result, { ok: true });
    assert.deepEqual(c.errors, ['the upstream sent something that is not JSON', 'the upstream sent JSON that is not a JSON-RPC message']);
  });

  test('redirects are not followed; error statuses fail with the status; an odd content type fails', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(url), FAST);
    const c = client(t);
    answer = (_req, res) => res.writeHead(307, { location: 'http://elsewhere.example/mcp' }).end();
    await assert.rejects(c.call('ping'), (e: Error) => e instanceof UpstreamAnswerError && /HTTP 307 \(redirects are not followed\)/.test(e.message));
    answer = (_req, res) => res.writeHead(500, { 'content-type': 'text/plain' }).end('boom');
    await assert.rejects(c.call('ping'), /HTTP 500: boom/);
    answer = (_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>');
    await assert.rejects(c.call('ping'), /content type "text\/html"/);
    assert.equal(c.isClosed(), false, 'none of these ends the session');
  });

  test('a GET stream the server keeps ending at once, empty and without retry:, is reopened with growing delays, not in a busy loop', async () => {
    let gets = 0;
    answer = (req, res, body) => {
      if (req.method === 'GET') return void (gets++, sse(res, ''));
      if (body.method === 'initialize') return void res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 'quiet' }).end(JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { protocolVersion: '2025-11-25', capabilities: {}, serverInfo: { name: 'q', version: '1' } } }));
      res.writeHead(202).end();
    };
    const t = new StreamableHttpUpstreamTransport(new URL(url), { reconnect: { initialMs: 100, maxMs: 800, attempts: 3 } });
    await client(t).initialize();
    await new Promise((r) => setTimeout(r, 1_600));
    await t.close();
    // 100, 200, 400, 800 ms apart: 5 in 1.6 s (a fixed 100 ms would be 16).
    assert.ok(gets >= 3 && gets <= 6, `${gets} GETs`);
  });

  test('a session id with characters other than visible ASCII is refused', async () => {
    answer = (_req, res, body) => res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 'a b' }).end(JSON.stringify({ jsonrpc: '2.0', id: body.id, result: {} }));
    await assert.rejects(client(new StreamableHttpUpstreamTransport(new URL(url), FAST)).call('initialize', INIT), /session id/);
  });

  test('an upstream that does not listen: the error names the cause', async () => {
    const dead = `http://127.0.0.1:${await freePort()}/mcp`;
    await assert.rejects(client(new StreamableHttpUpstreamTransport(new URL(dead), FAST)).call('initialize', INIT), /ECONNREFUSED/);
  });
});

describe('2026-07-28 against an SDK v2 dual-era server', () => {
  let dual: DualEraUpstream;
  let modernOnly: DualEraUpstream;
  let ev: Proc & { url: string };
  before(async () => {
    [dual, modernOnly, ev] = await Promise.all([startDualEraUpstream(), startDualEraUpstream({ legacy: 'reject' }), startEverythingHttp('streamableHttp')]);
  });
  after(() => Promise.all([dual?.close(), modernOnly?.close(), ev?.stop()]));

  test('probeHttpEra: a dual-era or modern-only server is modern with its versions; server-everything and a plain 404 are legacy; no server is an error', async () => {
    const probed = await probeHttpEra(dual.url, { Authorization: 'Bearer k' });
    assert.equal(probed.era, 'modern');
    assert.ok(probed.era === 'modern' && probed.supportedVersions.includes('2026-07-28'));
    const sent = dual.seen.at(-1)!;
    assert.equal(sent['mcp-method'], 'server/discover');
    assert.equal(sent['mcp-protocol-version'], '2026-07-28');
    assert.equal(sent.authorization, 'Bearer k');
    assert.equal((await probeHttpEra(modernOnly.url)).era, 'modern');
    assert.equal((await probeHttpEra(ev.url)).era, 'legacy');
    const plain = createServer((_req, res) => res.writeHead(404).end('not here'));
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
    const legacy = await probeHttpEra(`http://127.0.0.1:${(plain.address() as AddressInfo).port}/mcp`);
    assert.deepEqual(legacy, { era: 'legacy', reason: 'HTTP 404: not here' });
    // A modern error on 400 marks a modern server: its supported versions come from the error.
    plain.removeAllListeners('request');
    plain.on('request', (_req, res) => res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: 'portcullis-discover', error: { code: -32022, message: 'Unsupported protocol version', data: { supported: ['2027-01-01'], requested: '2026-07-28' } } })));
    assert.deepEqual(await probeHttpEra(`http://127.0.0.1:${(plain.address() as AddressInfo).port}/mcp`), { era: 'modern', supportedVersions: ['2027-01-01'] });
    plain.closeAllConnections();
    plain.close();
    await assert.rejects(probeHttpEra(`http://127.0.0.1:${await freePort()}/mcp`), /ECONNREFUSED/);
  });

  test('sendModern: a tools/call carries headers regenerated from its body, which the server checks and accepts (Mcp-Param-* from x-mcp-header, base64 where needed)', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(dual.url), { headers: { Authorization: 'Bearer k' } });
    const list = (await t.sendModern({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: META } } as JSONRPCMessage)) as Answer;
    const tool = (list.result!.tools as Array<{ name: string; inputSchema: unknown }>).find((x) => x.name === 'region')!;
    assert.deepEqual(tool.inputSchema, REGION_TOOL_SCHEMA);
    const args = { region: 'Zürich ', count: 42, verbose: false, query: 'SELECT 1' };
    const call = (await t.sendModern({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { _meta: META, name: 'region', arguments: args } } as JSONRPCMessage, { tool })) as Answer;
    assert.deepEqual(JSON.parse(text(call)), args);
    const sent = dual.seen.at(-1)!;
    assert.equal(sent['mcp-session-id'], undefined);
    assert.equal(sent.authorization, 'Bearer k');
    assert.deepEqual(
      [sent['mcp-protocol-version'], sent['mcp-method'], sent['mcp-name'], sent['mcp-param-region'], sent['mcp-param-count'], sent['mcp-param-verbose'], sent['mcp-param-query']],
      ['2026-07-28', 'tools/call', 'region', `=?base64?${Buffer.from('Zürich ').toString('base64')}?=`, '42', 'false', undefined],
    );
    // The server does check: without the tool's definition the Mcp-Param headers are missing and it refuses (400, -32020).
    const refused = (await t.sendModern({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { _meta: META, name: 'region', arguments: args } } as JSONRPCMessage)) as Answer;
    assert.equal(refused.error?.code, -32020);
  });

  test('sendModern: Mcp-Name for resources/read and prompts/get (base64 for a name outside ASCII), progress before the answer, -32022 returned as the answer', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(dual.url));
    const read = (await t.sendModern({ jsonrpc: '2.0', id: 1, method: 'resources/read', params: { _meta: META, uri: 'demo://doc' } } as JSONRPCMessage)) as Answer;
    assert.equal((read.result!.contents as Array<{ text: string }>)[0].text, 'the doc');
    assert.equal(dual.seen.at(-1)!['mcp-name'], 'demo://doc');
    const prompt = (await t.sendModern({ jsonrpc: '2.0', id: 2, method: 'prompts/get', params: { _meta: META, name: 'grüße', arguments: { name: 'Ada' } } } as JSONRPCMessage)) as Answer;
    assert.match(JSON.stringify(prompt.result), /Grüß dich, Ada/);
    assert.equal(dual.seen.at(-1)!['mcp-name'], `=?base64?${Buffer.from('grüße').toString('base64')}?=`);
    const notes: JSONRPCMessage[] = [];
    const progressed = (await t.sendModern({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { _meta: { ...META, progressToken: 'pp' }, name: 'progress', arguments: {} } } as JSONRPCMessage, { onmessage: (m) => notes.push(m) })) as Answer;
    assert.equal(text(progressed), 'progressed');
    assert.deepEqual(
      notes.map((n) => (n as unknown as { params: { progress: number } }).params.progress),
      [1, 2],
    );
    const old = (await t.sendModern({ jsonrpc: '2.0', id: 4, method: 'tools/list', params: { _meta: { ...META, [PROTOCOL_VERSION_META]: '1999-01-01' } } } as JSONRPCMessage)) as Answer & { error: { data: { supported: string[] } } };
    assert.equal(old.error.code, -32022);
    assert.ok(old.error.data.supported.includes('2026-07-28'));
  });

  test('sendModern refuses, before sending anything, what it cannot mirror: no protocol version in _meta, an invalid x-mcp-header tool', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(dual.url));
    const before = dual.seen.length;
    await assert.rejects(t.sendModern({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} } as JSONRPCMessage), McpHeaderError);
    const invalid = { name: 'n', inputSchema: { type: 'object', properties: { n: { type: 'number', 'x-mcp-header': 'N' } } } };
    await assert.rejects(t.sendModern({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { _meta: META, name: 'n', arguments: { n: 1 } } } as JSONRPCMessage, { tool: invalid }), /tool "n" is invalid/);
    assert.equal(dual.seen.length, before);
  });

  test('the same server in the legacy era through the session transport: no session id, no GET stream (405), calls work', async () => {
    const t = new StreamableHttpUpstreamTransport(new URL(dual.url), FAST);
    const c = client(t);
    await c.initialize();
    assert.equal(t.sessionId, undefined);
    assert.equal(text(await c.call('tools/call', { name: 'echo', arguments: { message: 'old' } })), 'Echo: old');
    await t.terminateSession();
    await t.close();
    assert.deepEqual(c.errors, []);
  });
});

function rawPost(url: string, body: unknown, headers: Record<string, string>): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers } }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0 });
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}
