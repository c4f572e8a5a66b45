// The HTTP front's SSE streams (src/fronts/http-channel.ts), end to end: a real SDK client whose
// connection drops mid-stream resumes it with Last-Event-ID and loses nothing, sees nothing twice;
// one GET stream at a time; a message with line breaks in its strings is one SSE event and arrives
// unchanged; what DELETE and a finished stream do. Upstreams: server-everything (progress) and
// the raw fixture (notifications that belong to no request).
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { LoggingMessageNotificationSchema, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { CLIENT_INFO, post, raw, rawSession, startTestGateway, upstreams, waitFor, type TestGateway } from './harness.js';

let gw: TestGateway;
before(async () => {
  gw = await startTestGateway({ everything: upstreams.everything(), raw: upstreams.raw() });
});
after(() => gw?.close());

const text = (r: unknown) => ((r as CallToolResult).content as Array<{ text?: string }>).map((c) => c.text ?? '').join('\n');

// ---------------------------------------------------------------------------------------------
// An SDK client on a connection that drops

interface Sent {
  method: string;
  lastEventId?: string;
}

/**
 * A fetch for the SDK client that drops the first SSE response `matches` picks once `events`
 * events have come through: the connection is cut (the gateway sees it close) and the client's
 * reader fails, as on a network drop. Every request the client makes is logged.
 */
function droppingFetch(matches: (method: string, body: string | undefined) => boolean, events: number, sent: Sent[]): typeof fetch {
  let dropped = false;
  return async (url, init) => {
    const method = init?.method ?? 'GET';
    const lastEventId = new Headers(init?.headers).get('last-event-id') ?? undefined;
    sent.push({ method, ...(lastEventId && { lastEventId }) });
    const res = await fetch(url, init);
    if (dropped || !res.body || !res.headers.get('content-type')?.includes('text/event-stream') || !matches(method, init?.body as string | undefined)) return res;
    dropped = true;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let seen = 0;
    let cut = false;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (cut) {
          await reader.cancel(); // closes the connection
          return controller.error(new Error('connection dropped (test)'));
        }
        const { value, done } = await reader.read();
        if (done) return controller.close();
        seen += decoder.decode(value, { stream: true }).split('\n\n').length - 1;
        controller.enqueue(value);
        cut = seen >= events; // after the client has taken this chunk
      },
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

async function connectDropping(url: string, fetchFn: typeof fetch, setup?: (c: Client) => void): Promise<Client> {
  const client = new Client(CLIENT_INFO, { capabilities: {} });
  setup?.(client);
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    fetch: fetchFn,
    reconnectionOptions: { initialReconnectionDelay: 100, maxReconnectionDelay: 1_000, reconnectionDelayGrowFactor: 1.5, maxRetries: 5 },
  });
  await client.connect(transport);
  return client;
}

describe('resumption with Last-Event-ID (a real SDK client reconnects)', () => {
  test("a POST stream dropped mid-call: the client resumes it, and gets every progress notification and the result once, in order", async () => {
    const sent: Sent[] = [];
    const isCall = (method: string, body: string | undefined) => method === 'POST' && body !== undefined && body.includes('"tools/call"');
    const client = await connectDropping(gw.url('everything'), droppingFetch(isCall, 3, sent));
    try {
      const progress: number[] = [];
      const steps = 12;
      const result = await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 1.2, steps } }, undefined, { onprogress: (p) => progress.push(p.progress), timeout: 20_000 });
      assert.match(text(result), /Long running operation completed/);
      assert.deepEqual(progress, Array.from({ length: steps }, (_, i) => i + 1), 'every progress notification, once, in order');
      const resumed = sent.filter((s) => s.method === 'GET' && s.lastEventId !== undefined);
      assert.ok(resumed.length >= 1, `the client resumed: ${JSON.stringify(sent)}`);
      // Request streams are numbered from 1 (0 is the GET stream).
      assert.match(resumed[0].lastEventId!, /^[1-9]\d*\.\d+$/);
      // The session goes on.
      assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'after' } })), 'Echo: after');
    } finally {
      await client.close();
    }
  });

  test('the GET stream dropped while messages keep coming: the client resumes it, and gets each one once, in order', async () => {
    const sent: Sent[] = [];
    const got: number[] = [];
    const client = await connectDropping(gw.url('raw'), droppingFetch((method) => method === 'GET', 3, sent), (c) =>
      c.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void got.push((n.params.data as { n: number }).n)),
    );
    try {
      const count = 12;
      assert.equal(text(await client.callTool({ name: 'notify', arguments: { count, everyMs: 40, tag: 'get' } })), 'notifying');
      await waitFor(`${count} notifications`, () => got.length >= count);
      await new Promise((r) => setTimeout(r, 200)); // nothing more may come
      assert.deepEqual(got, Array.from({ length: count }, (_, i) => i), 'every notification, once, in order');
      const resumed = sent.filter((s) => s.method === 'GET' && s.lastEventId !== undefined);
      assert.ok(resumed.length >= 1, `the client resumed: ${JSON.stringify(sent)}`);
      assert.match(resumed[0].lastEventId!, /^0\.\d+$/);
    } finally {
      await client.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Raw SSE

interface SseEvent {
  id?: string;
  data?: string;
  retry?: string;
  /** The event's lines as sent. */
  lines: string[];
}

interface SseConnection {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  events: SseEvent[];
  ended: Promise<void>;
  close(): void;
}

/** A GET on /mcp/<server> read as it comes: its SSE events (comments left out), and when it ends. */
function openGet(server: string, headers: Record<string, string>): Promise<SseConnection> {
  const u = new URL(gw.base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path: `/mcp/${server}`, method: 'GET', headers: { accept: 'text/event-stream', ...headers } }, (res) => {
      let buffered = '';
      let endResolve!: () => void;
      const conn: SseConnection = { status: res.statusCode ?? 0, headers: res.headers, body: '', events: [], ended: new Promise((r) => (endResolve = r)), close: () => req.destroy() };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        conn.body += chunk;
        buffered += chunk;
        let end;
        while ((end = buffered.indexOf('\n\n')) !== -1) {
          const lines = buffered.slice(0, end).split('\n');
          buffered = buffered.slice(end + 2);
          if (lines.every((l) => l.startsWith(':'))) continue;
          const field = (name: string) => lines.find((l) => l.startsWith(`${name}:`))?.slice(name.length + 1).trimStart();
          conn.events.push({ id: field('id'), data: field('data'), retry: field('retry'), lines });
        }
      });
      res.on('end', () => endResolve());
      res.on('close', () => endResolve());
      resolve(conn);
    });
    req.on('error', (e) => ((e as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(e)));
    req.end();
  });
}

const call = (id: number | string, name: string, args: Record<string, unknown>) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } });

describe('the GET stream', () => {
  test('one at a time: a second GET gets 409 while the first is open, and is served once it has closed', async () => {
    const s = await rawSession(gw, 'raw');
    const first = await openGet('raw', s.headers);
    assert.equal(first.status, 200);
    assert.equal(first.headers['content-type'], 'text/event-stream');
    assert.equal(first.headers['x-accel-buffering'], 'no');
    const second = await raw(gw.base, '/mcp/raw', { method: 'GET', headers: { ...s.headers, accept: 'text/event-stream' } });
    assert.equal(second.status, 409, second.text);
    assert.match(second.json.error.message, /one at a time/);
    first.close();
    await first.ended;
    const third = await waitFor('a GET to be served again', async () => {
      const c = await openGet('raw', s.headers);
      if (c.status === 200) return c;
      c.close();
      return undefined;
    });
    third.close();
    await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: s.headers });
  });

  test('messages sent while it was closed wait; Last-Event-ID replays what followed that event, then what waited, each once', async () => {
    const s = await rawSession(gw, 'raw');
    const first = await openGet('raw', s.headers);
    assert.equal((await post(gw, 'raw', call(1, 'notify', { count: 8, everyMs: 30, tag: 'w' }), s.headers)).status, 200);
    await waitFor('three notifications', () => first.events.length >= 3);
    first.close();
    await first.ended;
    const seen = first.events.map((e) => JSON.parse(e.data!).params.data.n as number);
    const last = first.events.at(-1)!.id!;
    assert.match(last, /^0\.\d+$/);
    await new Promise((r) => setTimeout(r, 400)); // the rest are sent meanwhile
    const resumed = await openGet('raw', { ...s.headers, 'last-event-id': last });
    assert.equal(resumed.status, 200);
    await waitFor('the rest', () => seen.length + resumed.events.length >= 8);
    await new Promise((r) => setTimeout(r, 100));
    const all = [...seen, ...resumed.events.map((e) => JSON.parse(e.data!).params.data.n as number)];
    assert.deepEqual(all, [0, 1, 2, 3, 4, 5, 6, 7]);
    const ids = [...first.events, ...resumed.events].map((e) => e.id);
    assert.equal(new Set(ids).size, ids.length, 'event ids are unique');
    resumed.close();
    await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: s.headers });
  });

  test('what a GET must carry: text/event-stream in Accept (406), an event id of this session in Last-Event-ID (400)', async () => {
    const s = await rawSession(gw, 'raw');
    const get = (headers: Record<string, string>) => raw(gw.base, '/mcp/raw', { method: 'GET', headers: { ...s.headers, ...headers } });
    assert.equal((await get({ accept: 'application/json' })).status, 406);
    for (const bad of ['nonsense', '99.1', '1', '-1.2', `0.${'9'.repeat(40)}`]) {
      const res = await get({ accept: 'text/event-stream', 'last-event-id': bad });
      assert.equal(res.status, 400, `${bad}: ${res.text}`);
      assert.match(res.json.error.message, /Last-Event-ID/);
    }
    await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: s.headers });
  });
});

describe('request streams', () => {
  test('an answer that comes first, and soon, is one application/json body; otherwise a stream, which for 2025-11-25 opens with a priming event (id, retry:)', async () => {
    const s = await rawSession(gw, 'everything');
    const withProgress = (id: number) => ({ ...call(id, 'trigger-long-running-operation', {}), params: { name: 'trigger-long-running-operation', arguments: { duration: 0.1, steps: 2 }, _meta: { progressToken: `p${id}` } } });
    // Progress comes before the answer: a stream.
    const streamed = await post(gw, 'everything', withProgress(1), s.headers);
    assert.equal(streamed.headers['content-type'], 'text/event-stream');
    assert.equal(streamed.headers['mcp-session-id'], s.sessionId);
    const events = streamed.text.split('\n\n').filter(Boolean);
    assert.match(events[0], /^id: [1-9]\d*\.\d+\nretry: 1000\ndata: $/, 'priming event, with the reconnection delay');
    for (const e of events.slice(1)) assert.match(e, /^event: message\nid: [1-9]\d*\.\d+\ndata: \{.*\}$/);
    assert.equal(JSON.parse(events.at(-1)!.split('data: ')[1]).id, 1, 'the stream ends after the answer');
    assert.equal(streamed.messages.filter((m) => m.method === 'notifications/progress').length, 2);
    // Nothing before the answer: JSON, the same answer without the framing.
    const quick = await post(gw, 'everything', call(2, 'echo', { message: 'hi' }), s.headers);
    assert.equal(quick.headers['content-type'], 'application/json');
    assert.equal(quick.headers['mcp-session-id'], s.sessionId);
    assert.deepEqual(JSON.parse(quick.text), { jsonrpc: '2.0', id: 2, result: { content: [{ type: 'text', text: 'Echo: hi' }] } });
    // An older revision's stream has no priming event (its clients would try to parse the empty data).
    const old = await rawSession(gw, 'everything', '2025-03-26');
    const oldRes = await post(gw, 'everything', withProgress(3), old.headers);
    assert.deepEqual([...new Set(oldRes.text.split('\n\n').filter(Boolean).map((e) => e.split('\n')[0]))], ['event: message']);
    for (const h of [s.headers, old.headers]) await raw(gw.base, '/mcp/everything', { method: 'DELETE', headers: h });
  });

  test('a client that ranks text/event-stream first (by order or q-value) gets a stream at once, even for an answer that comes first', async () => {
    const s = await rawSession(gw, 'everything');
    const cases: Array<[string, string]> = [
      ['text/event-stream, application/json', 'text/event-stream'],
      ['application/json;q=0.5, text/event-stream', 'text/event-stream'],
      ['application/json, text/event-stream', 'application/json'],
      ['text/event-stream;q=0.9, application/json', 'application/json'],
    ];
    let id = 10;
    for (const [accept, type] of cases) {
      const res = await post(gw, 'everything', call(++id, 'echo', { message: 'hi' }), { ...s.headers, accept });
      assert.equal(res.headers['content-type'], type, accept);
      assert.deepEqual(res.messages.filter((m) => 'id' in m), [{ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'Echo: hi' }] } }], accept);
      if (type === 'text/event-stream') assert.match(res.text, /^id: [1-9]\d*\.\d+\nretry: 1000\ndata: \n\n/, 'opened by its priming event');
    }
    await raw(gw.base, '/mcp/everything', { method: 'DELETE', headers: s.headers });
    // At once: on a slow call, the headers and priming event come long before the quarter second a JSON-first client waits.
    const slow = await rawSession(gw, 'raw');
    const t0 = performance.now();
    const primedAt = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(new URL(gw.url('raw')), { method: 'POST', headers: { ...slow.headers, 'content-type': 'application/json', accept: 'text/event-stream, application/json' } }, (res) => {
        res.setEncoding('utf8');
        let text = '';
        res.on('data', (d: string) => {
          if ((text += d).includes('retry: 1000')) resolve(performance.now() - t0);
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(JSON.stringify(call(20, 'slow', { ms: 800 })));
    });
    assert.ok(primedAt < 200, `priming event after ${primedAt.toFixed(0)} ms`);
    await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: slow.headers });
  });

  test('a slow answer: the stream starts on its own (priming event) a quarter second in, well before the answer', async () => {
    const s = await rawSession(gw, 'raw');
    // A slow call (0.8 s; this server sends nothing else on the stream before the answer).
    const body = JSON.stringify(call(4, 'slow', { ms: 800 }));
    const chunks: Array<{ at: number; text: string }> = [];
    let type: string | undefined;
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(new URL(gw.url('raw')), { method: 'POST', headers: { ...s.headers, 'content-type': 'application/json', accept: 'application/json, text/event-stream' } }, (res) => {
        type = res.headers['content-type'];
        res.setEncoding('utf8');
        res.on('data', (d: string) => chunks.push({ at: performance.now() - t0, text: d }));
        res.on('end', resolve);
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
    assert.equal(type, 'text/event-stream');
    const text = chunks.map((c) => c.text).join('');
    const primedAt = chunks.find((c) => c.text.includes('retry: 1000'))!.at;
    const answeredAt = chunks.find((c) => c.text.includes('"id":4'))!.at;
    assert.match(text, /^id: [1-9]\d*\.\d+\nretry: 1000\ndata: \n\n/, 'the priming event comes first');
    assert.ok(answeredAt - primedAt > 300, `priming at ${primedAt.toFixed(0)} ms, answer at ${answeredAt.toFixed(0)} ms: the client held an event id well before the answer`);
    await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: s.headers });
  });

  test('a POST dropped before its stream started: a GET naming that stream gets its answer there, as a stream', async () => {
    const s = await rawSession(gw, 'raw');
    // initialize was stream 1; this call is stream 2, its priming event 2.2 (not sent yet).
    const req = httpRequest(new URL(gw.url('raw')), { method: 'POST', headers: { ...s.headers, 'content-type': 'application/json', accept: 'application/json, text/event-stream' } });
    req.on('error', () => {});
    req.end(JSON.stringify(call(6, 'slow', { ms: 600, tag: 'dropped' })));
    await new Promise((r) => setTimeout(r, 100));
    req.destroy();
    await new Promise((r) => setTimeout(r, 50));
    const resumed = await openGet('raw', { ...s.headers, 'last-event-id': '2.2' });
    await waitFor('the answer on the resumed stream', () => resumed.events.length > 0, 3_000);
    await resumed.ended;
    assert.equal(resumed.status, 200);
    assert.equal(resumed.headers['content-type'], 'text/event-stream');
    assert.deepEqual(resumed.events.map((e) => JSON.parse(e.data!)), [{ jsonrpc: '2.0', id: 6, result: { content: [{ type: 'text', text: 'slow done: dropped' }] } }]);
    await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: s.headers });
  });

  test('a stream that has ended can still be resumed: what followed the given event, then the end', async () => {
    const s = await rawSession(gw, 'everything');
    const res = await post(gw, 'everything', { ...call(2, 'trigger-long-running-operation', { duration: 0.2, steps: 3 }), params: { name: 'trigger-long-running-operation', arguments: { duration: 0.2, steps: 3 }, _meta: { progressToken: 'p' } } }, s.headers);
    // priming, (server-everything's list_changed on a first request,) 3 progress, the answer
    const ids = res.text.split('\n\n').filter(Boolean).map((e) => /^id: (.*)$/m.exec(e)![1]);
    assert.ok(ids.length >= 5, res.text);
    const resumed = await openGet('everything', { ...s.headers, 'last-event-id': ids.at(-3)! });
    await resumed.ended;
    assert.equal(resumed.status, 200);
    assert.deepEqual(resumed.events.map((e) => e.id), ids.slice(-2));
    assert.equal(JSON.parse(resumed.events.at(-1)!.data!).id, 2);
    await raw(gw.base, '/mcp/everything', { method: 'DELETE', headers: s.headers });
  });

  test('SSE framing: line breaks (CR, LF, CRLF) and U+2028/2029 in a message stay inside one data line, and arrive unchanged', async () => {
    const message = 'a\nb\r\nc\rd\u2028e\u2029f\n\nevent: fake\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n';
    // A slow answer, so it goes on a stream.
    const s = await rawSession(gw, 'raw');
    const res = await post(gw, 'raw', call(3, 'slow', { ms: 400, tag: message }), s.headers);
    assert.equal(res.headers['content-type'], 'text/event-stream');
    const events = res.text.split('\n\n').filter(Boolean);
    const answer = events.find((e) => e.includes('"id":3'))!;
    assert.equal(events.at(-1), answer, res.text);
    const lines = answer.split(/\r\n|\r|\n/);
    assert.deepEqual(lines.map((l) => l.split(':')[0]), ['event', 'id', 'data']);
    assert.equal(JSON.parse(lines[2].slice('data: '.length)).result.content[0].text, `slow done: ${message}`);
    await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: s.headers });
    // And through the SDK client's SSE parser.
    const client = new Client(CLIENT_INFO);
    await client.connect(new StreamableHTTPClientTransport(new URL(gw.url('raw'))));
    try {
      assert.equal(text(await client.callTool({ name: 'slow', arguments: { ms: 400, tag: message } })), `slow done: ${message}`);
    } finally {
      await client.close();
    }
  });

  test('DELETE with a request in flight: the request gets its "session ended" error on its stream, then the stream ends', async () => {
    const s = await rawSession(gw, 'raw');
    const pending = post(gw, 'raw', call('h', 'hang', {}), s.headers);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await raw(gw.base, '/mcp/raw', { method: 'DELETE', headers: s.headers })).status, 200);
    const res = await pending;
    const answer = res.messages.find((m) => m.id === 'h');
    assert.equal(answer?.error?.code, -32010, res.text);
    assert.match(answer.error.message, /session ended: client closed the session/);
  });
});
