// share: credential (src/upstreams/shared.ts): the 2025-era sessions of one credential share ONE
// upstream process, another credential gets its own, and sharing stays invisible to each session.
// Proven at the recording upstream (raw-server.mjs, server-requests-upstream.mjs) and in the audit:
// - one process per credential (PID_FILE), one initialize per process (the gateway's own, audited
//   with rule protocol/gateway), and only gateway-made 'pcl-…' ids upstream, so colliding client
//   ids (every SDK client counts 0, 1, 2…) still get each session its own answers;
// - a session cannot cancel another session's request, whatever id it names (fast-check); its own
//   cancellation reaches the upstream under the id the upstream knows;
// - a request of the server reaches a client only when it can belong to no other session, and only
//   if that client declared the capability; otherwise the gateway answers the server with an error;
// - the last session of a credential ending stops the process; the next session starts a new one.
import { Client as ClientV2, StreamableHTTPClientTransport as HttpV2 } from '@modelcontextprotocol/client';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateApiKey, hashApiKey } from '../../src/auth/api-keys.js';
import { PROBE_ID } from '../../src/upstreams/era.js';
import { alive, CLIENT_INFO, post, rawSession, ROOT, startTestGateway, tempDir, upstreams, waitFor, type TestGateway } from './harness.js';

const keyA = generateApiKey();
const keyB = generateApiKey();
const AUTH = { apiKeys: [{ id: 'a', sha256: hashApiKey(keyA) }, { id: 'b', sha256: hashApiKey(keyB) }] };
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

const text = (r: unknown) => ((r as CallToolResult).content as Array<{ text?: string }>).map((c) => c.text ?? '').join('\n');
const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean) : []);
const received = (file: string): any[] => lines(file).map((l) => JSON.parse(l));
const pids = (file: string) => lines(file).map(Number);

/** An SDK client over Streamable HTTP with an API key; `setup` registers handlers before connecting. */
async function connectAs(url: string, key: string, options: ConstructorParameters<typeof Client>[1] = {}, setup?: (c: Client) => void): Promise<Client> {
  const client = new Client(CLIENT_INFO, options);
  setup?.(client);
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: bearer(key) } }));
  return client;
}
const sessionOf = (c: Client) => (c.transport as StreamableHTTPClientTransport).sessionId!;
/** Ends the session as a client does (DELETE; Client.close() alone only drops the connection). */
async function end(c: Client): Promise<void> {
  await (c.transport as StreamableHTTPClientTransport).terminateSession();
  await c.close();
}

describe('one process per credential, shared by its sessions', () => {
  const dir = tempDir('pcl-share-');
  const RECORD = join(dir.path, 'received.jsonl');
  const PIDS = join(dir.path, 'pids');
  let gw: TestGateway;
  let clients: Client[] = [];
  before(async () => {
    gw = await startTestGateway({ raw: { ...upstreams.raw({ RECORD_FILE: RECORD, PID_FILE: PIDS }), share: 'credential', shareIdle: '1s' } }, { auth: AUTH });
    clients = [await connectAs(gw.url('raw'), keyA), await connectAs(gw.url('raw'), keyA), await connectAs(gw.url('raw'), keyA), await connectAs(gw.url('raw'), keyB)];
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    await gw?.close();
    dir.remove();
  });

  test('three sessions of key a share one process, key b gets its own; colliding client ids each get their own answer', async () => {
    assert.equal(pids(PIDS).length, 2, `pids: ${pids(PIDS)}`);
    // Every client sends ids 1, 2, 3 (0 was its initialize): the same ids, at once, on the shared process.
    const calls = clients.flatMap((c, i) => [300, 100, 200].map((ms, j) => ({ c, tag: `s${i}-c${j}`, ms })));
    const answers = await Promise.all(calls.map(({ c, tag, ms }) => c.callTool({ name: 'slow', arguments: { ms, tag } })));
    assert.deepEqual(answers.map(text), calls.map(({ tag }) => `slow done: ${tag}`));
    assert.equal(pids(PIDS).length, 2, 'a session started a process of its own');
  });

  test('the upstream saw one initialize per process (the gateway\'s, audited) and only pcl- ids; the audit keeps each session apart', () => {
    const got = received(RECORD);
    const inits = got.filter((m) => m.method === 'initialize');
    assert.equal(inits.length, 2, JSON.stringify(inits));
    for (const init of inits) assert.equal(init.params.clientInfo.name, 'portcullis');
    const ids = got.filter((m) => m.id !== undefined).map((m) => m.id);
    assert.ok(ids.length >= 2 + 12, `ids: ${ids}`);
    // Besides the era probe (once per configured server, before any session), only ids the gateway made.
    for (const id of ids) assert.ok(id === PROBE_ID || (typeof id === 'string' && id.startsWith('pcl-')), `a client's id reached the upstream: ${JSON.stringify(id)}`);
    // Each process numbers its own requests: key a's nine calls went up under nine ids.
    const upIds = (re: RegExp) => new Set(got.filter((m) => m.method === 'tools/call' && re.test(m.params.arguments.tag)).map((m) => m.id)).size;
    assert.equal(upIds(/^s[012]-/), 9, 'two requests in flight on one process shared an upstream id');
    assert.equal(upIds(/^s3-/), 3);

    const decisions = gw.audit.filter((r) => r.type === 'decision');
    for (const [i, c] of clients.entries()) {
      const mine = decisions.filter((r) => r.data.method === 'tools/call' && r.data.sessionId === sessionOf(c));
      assert.deepEqual(mine.map((r) => String(r.data.requestId)).sort(), ['1', '2', '3'], `session ${i}`);
      assert.equal((mine[0].data.identity as { keyId: string }).keyId, i < 3 ? 'a' : 'b');
    }
    const gateway = decisions.filter((r) => r.data.rule === 'protocol/gateway' && r.data.method === 'initialize');
    assert.equal(gateway.length, 2, 'the gateway\'s own initialize is on the record once per process');
    assert.equal(gateway.every((r) => r.data.sessionId === undefined), true);
  });

  test('the process outlives its last session by shareIdle: a session in that time takes it over; then it exits, and the next session starts a new one', async () => {
    const [pidA, pidB] = pids(PIDS);
    await end(clients[0]);
    await end(clients[1]);
    assert.equal(alive(pidA), true, 'the process went away while a session still used it');
    assert.match(text(await clients[2].callTool({ name: 'echo', arguments: { still: 'a' } })), /"still":"a"/);
    await end(clients[2]);
    // Within shareIdle (1 s here) the next session of key a takes the same process.
    clients[0] = await connectAs(gw.url('raw'), keyA);
    assert.match(text(await clients[0].callTool({ name: 'echo', arguments: { back: 'a' } })), /"back":"a"/);
    assert.equal(pids(PIDS).length, 2, 'a session within shareIdle started a process of its own');
    await end(clients[0]);
    await waitFor('the shared process of key a to exit once shareIdle has passed', () => !alive(pidA), 5_000);
    assert.equal(alive(pidB), true, 'key b\'s process went with key a\'s sessions');
    await end(clients[3]);
    await waitFor('the shared process of key b to exit', () => !alive(pidB), 5_000);

    clients = [await connectAs(gw.url('raw'), keyA)];
    assert.equal(text(await clients[0].callTool({ name: 'slow', arguments: { ms: 10, tag: 'again' } })), 'slow done: again');
    assert.equal(pids(PIDS).length, 3);
    assert.equal(alive(pids(PIDS)[2]), true);
  });

  test('a process kept for the next session ends when the gateway shuts down', async () => {
    const d = tempDir('pcl-share-down-');
    const pidFile = join(d.path, 'pids');
    const g = await startTestGateway({ raw: { ...upstreams.raw({ PID_FILE: pidFile }), share: 'credential' } }, { auth: AUTH });
    try {
      const c = await connectAs(g.url('raw'), keyA);
      await c.callTool({ name: 'echo', arguments: {} });
      await end(c);
      const [pid] = pids(pidFile);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(alive(pid), true, 'kept for the next session (shareIdle, 30 s by default)');
      await g.close();
      assert.equal(alive(pid), false, 'the gateway shut down and left the process running');
    } finally {
      await g.close();
      d.remove();
    }
  });
});

describe('one credential, both eras and both SDKs, one process', () => {
  const dir = tempDir('pcl-share-eras-');
  const RECORD = join(dir.path, 'received.jsonl');
  const PIDS = join(dir.path, 'pids');
  let gw: TestGateway;
  before(async () => {
    gw = await startTestGateway({ raw: { ...upstreams.raw({ RECORD_FILE: RECORD, PID_FILE: PIDS }), share: 'credential' } }, { auth: AUTH });
  });
  after(async () => {
    await gw?.close();
    dir.remove();
  });

  test('share one process: the 2026 requests are one more session on it, with the same renumbering', async () => {
    const client = await connectAs(gw.url('raw'), keyA);
    try {
      const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 'raw-2026', version: '1' } };
      const modern = (id: number, tag: string) =>
        post(gw, 'raw', { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'slow', arguments: { ms: 100, tag }, _meta: meta } }, { ...bearer(keyA), 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'slow' });
      const [a, b, c] = await Promise.all([modern(1, 'new-1'), modern(1, 'new-2'), client.callTool({ name: 'slow', arguments: { ms: 100, tag: 'old' } })]);
      assert.deepEqual([a.json?.result?.content?.[0]?.text, b.json?.result?.content?.[0]?.text, text(c)], ['slow done: new-1', 'slow done: new-2', 'slow done: old']);
      assert.equal(a.json.result.resultType, 'complete');
      assert.equal(pids(PIDS).length, 1, `pids: ${pids(PIDS)}`);
      const got = received(RECORD);
      assert.equal(got.filter((m) => m.method === 'initialize').length, 1);
      const ids = got.filter((m) => m.method !== undefined && m.id !== undefined && m.id !== PROBE_ID).map((m) => m.id);
      assert.ok(ids.every((id) => typeof id === 'string' && id.startsWith('pcl-')), JSON.stringify(ids));
      assert.equal(new Set(ids).size, ids.length, 'two requests went up under one id');
    } finally {
      await end(client);
    }
  });

  test('the SDK v2 client (2025 session) and the v1 client share it too, each answered as the server answered the gateway', async () => {
    const v1 = await connectAs(gw.url('raw'), keyA);
    const v2 = new ClientV2({ name: 'v2-shared', version: '1.0.0' });
    await v2.connect(new HttpV2(new URL(gw.url('raw')), { requestInit: { headers: bearer(keyA) } }));
    try {
      assert.deepEqual(v2.getServerVersion(), v1.getServerVersion());
      assert.deepEqual(v2.getServerVersion(), { name: 'raw-fixture', version: '1.0.0' });
      const [x, y] = await Promise.all([v2.callTool({ name: 'echo', arguments: { from: 'v2' } }), v1.callTool({ name: 'echo', arguments: { from: 'v1' } })]);
      assert.deepEqual([text(x), text(y)], ['{"from":"v2"}', '{"from":"v1"}']);
      assert.equal(pids(PIDS).length, 1, `pids: ${pids(PIDS)}`);
    } finally {
      await v2.close();
      await end(v1);
    }
  });
});

describe('a cancellation reaches only the session\'s own request', () => {
  const dir = tempDir('pcl-share-cancel-');
  const RECORD = join(dir.path, 'received.jsonl');
  let gw: TestGateway;
  before(async () => {
    gw = await startTestGateway({ raw: { ...upstreams.raw({ RECORD_FILE: RECORD }), share: 'credential' } }, { auth: AUTH });
  });
  after(async () => {
    await gw?.close();
    dir.remove();
  });
  const slowCall = (id: number, tag: string, ms = 1500) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'slow', arguments: { ms, tag } } });
  /** The upstream id of the tools/call carrying `tag`, once the upstream has it. */
  const upIdOf = (tag: string) => waitFor(`the call ${tag} upstream`, () => received(RECORD).find((m) => m.method === 'tools/call' && m.params.arguments.tag === tag)?.id as string | undefined);
  const cancellations = () => received(RECORD).filter((m) => m.method === 'notifications/cancelled');

  test('session Y of the same key cannot cancel X\'s call, whatever id it names; X can', async () => {
    const x = await rawSession(gw, 'raw', '2025-11-25', bearer(keyA));
    const y = await rawSession(gw, 'raw', '2025-11-25', bearer(keyA));
    const xCall = post(gw, 'raw', slowCall(7, 'x1'), x.headers);
    const upId = await upIdOf('x1');
    assert.match(upId, /^pcl-/);

    const named = fc.oneof(fc.integer(), fc.string(), fc.constantFrom(7, upId, 'pcl-1', 'pcl-2', 'pcl-3', 'pcl-open'));
    await fc.assert(
      fc.asyncProperty(named, async (requestId) => {
        const res = await post(gw, 'raw', { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId, reason: 'not yours' } }, y.headers);
        assert.equal(res.status, 202, res.text);
      }),
      { numRuns: 50 },
    );
    // Y's own request goes upstream after its cancellations: the upstream's stdin is in order.
    const echo = await post(gw, 'raw', { jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'echo', arguments: { from: 'y' } } }, y.headers);
    assert.match(echo.json.result.content[0].text, /"from":"y"/);
    const done = await xCall;
    assert.equal(done.json?.id, 7, done.text);
    assert.equal(done.json.result.content[0].text, 'slow done: x1');
    assert.deepEqual(cancellations(), [], 'another session\'s cancellation reached the upstream');

    // Round two: X cancels its own id 7; it arrives under the id the upstream knows the call by.
    const second = post(gw, 'raw', slowCall(7, 'x2', 3000), x.headers).catch((e: Error) => e);
    const upId2 = await upIdOf('x2');
    assert.equal((await post(gw, 'raw', { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 7, reason: 'mine' } }, x.headers)).status, 202);
    const [cancel] = await waitFor('X\'s cancellation upstream', () => cancellations().length > 0 && cancellations());
    assert.deepEqual(cancel.params, { requestId: upId2, reason: 'mine' });
    assert.equal(cancellations().length, 1);
    await second;
  });
});

describe('requests of the server on a shared process', () => {
  const dir = tempDir('pcl-share-asks-');
  const RECORD = join(dir.path, 'received.jsonl');
  const FIXTURE = join(ROOT, 'test/fixtures/server-requests-upstream.mjs');
  let gw: TestGateway;
  const open: Client[] = [];
  before(async () => {
    gw = await startTestGateway({ asks: { transport: 'stdio', command: process.execPath, args: [FIXTURE], env: { RECORD_FILE: RECORD }, share: 'credential' } }, { auth: AUTH });
  });
  after(async () => {
    for (const c of open) await c.close().catch(() => undefined);
    await gw?.close();
    dir.remove();
  });
  /** A client of key a declaring sampling, whose handler counts its calls (and waits for `gate` when given). */
  async function sampler(gate?: Promise<void>) {
    const state = { asked: 0 };
    const c = await connectAs(gw.url('asks'), keyA, { capabilities: { sampling: {} } }, (c) =>
      c.setRequestHandler(CreateMessageRequestSchema, async () => (state.asked++, await gate, { model: 'm', role: 'assistant', content: { type: 'text', text: 'hi from the client' } })),
    );
    open.push(c);
    return Object.assign(state, { c });
  }
  const ask = async (c: Client) => JSON.parse(text(await c.callTool({ name: 'ask', arguments: { kind: 'sampling' } })));

  test('a session alone on the process is asked, and its answer goes back', async () => {
    const a = await sampler();
    const outcome = await ask(a.c);
    assert.equal(outcome.result?.content?.text, 'hi from the client', JSON.stringify(outcome));
    assert.equal(a.asked, 1);
  });

  test('while requests of several sessions are in flight, no client is asked; the server gets the gateway\'s error', async () => {
    let open_!: () => void;
    const holder = await sampler(new Promise<void>((r) => (open_ = r)));
    const held = ask(holder.c); // in flight, its sampling request waiting in its client's handler
    await waitFor('the holder to be asked', () => holder.asked === 1);
    const [a, b] = [await sampler(), await sampler()];
    const outcomes = await Promise.all([ask(a.c), ask(b.c)]);
    for (const o of outcomes) assert.match(o.error?.message ?? '', /belongs to no single session/, JSON.stringify(o));
    assert.equal(a.asked + b.asked, 0, 'a client was asked a request that may belong to another session');
    open_();
    assert.equal((await held).result?.content?.text, 'hi from the client');
    const refusals = received(RECORD).filter((m) => m.method === undefined && /belongs to no single session/.test(m.error?.message ?? ''));
    assert.equal(refusals.length, 2, JSON.stringify(refusals));
  });

  test('a session whose client did not declare sampling is not asked: an error names the capability', async () => {
    const c = await connectAs(gw.url('asks'), keyA);
    open.push(c);
    const outcome = await ask(c);
    assert.match(outcome.error?.message ?? '', /did not declare the sampling capability/, JSON.stringify(outcome));
  });
});
