// MCP 2026-07-28 clients on /mcp/<server>: no session, each request on its own, the same policy,
// audit and masking as a 2025 session, and headers that can never say something the body does
// not. What a refused request would have carried is proved absent at the upstream (the raw
// fixture records every line it receives).
import { Client as ClientV2, StreamableHTTPClientTransport as HttpV2 } from '@modelcontextprotocol/client';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { encodeHeaderValue } from '../../src/protocol/mcp-headers.js';
import { policyPoint } from '../../src/gateway/decide.js';
import { compileBundle } from '../../src/policy/compile.js';
import { StdioClientTransport as StdioV2 } from '@modelcontextprotocol/client/stdio';
import { BIN, connectHttp, MCP_HEADERS, raw, rawWrap, ROOT, startTestGateway, tempDir, upstreams, writeConfig, type TestGateway } from './harness.js';

const ASKING = join(ROOT, 'test/fixtures/server-requests-upstream.mjs');

const V = '2026-07-28';
const META = { 'io.modelcontextprotocol/protocolVersion': V, 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 'raw-2026', version: '1' } };

const POLICY = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: stateless }
server: "*"
default: deny
rules:
  - { name: tools, effect: allow, tools: ["echo", "route", "slow", "get-sum"] }
  - { name: docs, effect: allow, resources: ["demo://resource/static/document/**"] }
  - { name: prompts, effect: allow, prompts: ["simple-prompt"] }
  - { name: asking, effect: allow, tools: ["ask"] }
  - { name: asks, effect: allow, serverRequests: ["elicitation/create", "roots/list"] }
masks:
  - { name: no-emails, tools: ["echo"], detectors: [email] }
`;

const dir = tempDir('pcl-stateless-');
const record = join(dir.path, 'upstream.jsonl');
const askRecord = join(dir.path, 'asking.jsonl');
let gw: TestGateway;
before(async () => {
  writeFileSync(record, '');
  writeFileSync(askRecord, '');
  gw = await startTestGateway(
    { raw: upstreams.raw({ RECORD_FILE: record }), everything: upstreams.everything(), asking: { transport: 'stdio', command: process.execPath, args: [ASKING], env: { RECORD_FILE: askRecord } } },
    { policy: policyPoint({ current: () => compileBundle({ 'p.yaml': POLICY }) }) },
  );
});
after(async () => {
  await gw?.close();
  dir.remove();
});

let seq = 0;
/** The lines the raw upstream received that carry `marker`. */
const received = (marker: string) => readFileSync(record, 'utf8').split('\n').filter((l) => l.includes(marker));

/** A 2026 request as a conforming client sends it; `headers` override or remove (undefined) the standard ones. */
function modern(server: string, method: string, params: Record<string, unknown>, headers: Record<string, string | string[] | undefined> = {}, id: unknown = ++seq) {
  const name = method === 'resources/read' ? params.uri : ['tools/call', 'prompts/get'].includes(method) ? params.name : undefined;
  const all: Record<string, string | string[] | undefined> = { ...MCP_HEADERS, 'mcp-protocol-version': V, 'mcp-method': method, ...(typeof name === 'string' && { 'mcp-name': encodeHeaderValue(name) }), ...headers };
  const sent = Object.fromEntries(Object.entries(all).filter(([, v]) => v !== undefined)) as Record<string, string | string[]>;
  return raw(gw.base, `/mcp/${server}`, { headers: sent, body: JSON.stringify({ jsonrpc: '2.0', id, method, params: { ...params, _meta: { ...META, ...(params._meta as object) } } }) });
}

describe('a 2026-07-28 client', () => {
  test('the SDK v2 client negotiates 2026-07-28 and works without a session: list, call, read, prompt; denials hold', async () => {
    const client = new ClientV2({ name: 'v2-e2e', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } });
    await client.connect(new HttpV2(new URL(gw.url('everything'))));
    try {
      assert.equal(client.getNegotiatedProtocolVersion(), V);
      const tools = await client.listTools();
      assert.deepEqual(tools.tools.map((t) => t.name).sort(), ['echo', 'get-sum'], 'the list is filtered by policy');
      const echoed = await client.callTool({ name: 'echo', arguments: { message: 'hello 2026' } });
      assert.match(JSON.stringify(echoed.content), /hello 2026/);
      const doc = await client.readResource({ uri: 'demo://resource/static/document/architecture.md' });
      assert.ok(doc.contents.length > 0);
      const prompt = await client.getPrompt({ name: 'simple-prompt' });
      assert.ok(prompt.messages.length > 0);
      const denied = await client.callTool({ name: 'get-env', arguments: {} });
      assert.equal(denied.isError, true);
      assert.match(JSON.stringify(denied.content), /Denied by policy/);
    } finally {
      await client.close();
    }
    const decided = gw.audit.filter((r) => r.type === 'decision' && r.data.server === 'everything').map((r) => `${r.data.effect}:${r.data.tool ?? r.data.resource ?? r.data.prompt ?? r.data.method}`);
    assert.ok(decided.includes('allow:echo') && decided.includes('deny:get-env'), decided.join(' '));
  });

  test('server/discover names what the endpoint serves, and the upstream behind it', async () => {
    const res = await modern('everything', 'server/discover', {});
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json.result.supportedVersions, [V]);
    assert.equal(res.json.result.resultType, 'complete');
    assert.ok(res.json.result.capabilities.tools);
    assert.equal(res.json.result._meta['io.modelcontextprotocol/serverInfo'].name, 'mcp-servers/everything');
    assert.equal(res.json.result.cacheScope, 'private');
  });

  test('results carry the 2026 shape: resultType, cache hints private to the caller, the server named', async () => {
    const list = await modern('everything', 'tools/list', {});
    assert.equal(list.status, 200, list.text);
    assert.equal(list.json.result.resultType, 'complete');
    assert.equal(list.json.result.cacheScope, 'private', 'a list filtered per identity is never for a shared cache');
    assert.equal(typeof list.json.result.ttlMs, 'number');
    assert.ok(list.json.result._meta['io.modelcontextprotocol/serverInfo']);
    const call = await modern('everything', 'tools/call', { name: 'echo', arguments: { message: 'x' } });
    assert.equal(call.json.result.resultType, 'complete');
    assert.equal(call.json.result.cacheScope, undefined, 'a call result is not cacheable');
  });

  test('masks apply to a 2026 result as to a 2025 one; the recording and audit name the decision', async () => {
    const res = await modern('everything', 'tools/call', { name: 'echo', arguments: { message: 'write to ada@example.com' } });
    assert.equal(res.status, 200, res.text);
    assert.doesNotMatch(res.text, /ada@example\.com/);
    assert.match(res.json.result.content[0].text, /\[REDACTED:email\]|\*\*\*|redacted/i);
  });

  test('two clients with the same request id at once each get their own answer', async () => {
    const [a, b] = await Promise.all([
      modern('raw', 'tools/call', { name: 'slow', arguments: { ms: 150, tag: 'A' } }, {}, 7),
      modern('raw', 'tools/call', { name: 'slow', arguments: { ms: 10, tag: 'B' } }, {}, 7),
    ]);
    assert.equal(a.json.id, 7);
    assert.equal(b.json.id, 7);
    assert.match(JSON.stringify(a.json.result), /slow done: A/);
    assert.match(JSON.stringify(b.json.result), /slow done: B/);
  });

  test('an unsupported version gets 400 and -32022 with the supported list; nothing reaches the upstream', async () => {
    const marker = `unsupported-${Date.now()}`;
    const res = await raw(gw.base, '/mcp/raw', {
      headers: { ...MCP_HEADERS, 'mcp-protocol-version': '2099-01-01', 'mcp-method': 'tools/call', 'mcp-name': 'echo' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { marker }, _meta: { ...META, 'io.modelcontextprotocol/protocolVersion': '2099-01-01' } } }),
    });
    assert.equal(res.status, 400, res.text);
    assert.equal(res.json.error.code, -32022);
    assert.deepEqual(res.json.error.data.supported, [V], 'the versions a request may name, as server/discover lists them');
    assert.equal(res.json.error.data.requested, '2099-01-01');
    assert.deepEqual(received(marker), []);
  });

  test('methods 2026-07-28 removed get 404 and -32601', async () => {
    for (const method of ['ping', 'logging/setLevel', 'resources/subscribe']) {
      const res = await modern('raw', method, method === 'logging/setLevel' ? { level: 'info' } : method === 'resources/subscribe' ? { uri: 'file:///x' } : {});
      assert.equal(res.status, 404, `${method}: ${res.text}`);
      assert.equal(res.json.error.code, -32601);
    }
  });
});

describe('headers never disagree with the body', () => {
  // Every standard header against every method that needs it: missing, mismatched, duplicated,
  // wrongly encoded. Each case carries a marker in its arguments; none may reach the upstream.
  const NAMED = [
    { method: 'tools/call', params: (marker: string) => ({ name: 'echo', arguments: { marker } }), header: 'mcp-name' },
    { method: 'prompts/get', params: (marker: string) => ({ name: 'simple-prompt', arguments: { marker } }), header: 'mcp-name' },
    { method: 'resources/read', params: (marker: string) => ({ uri: `demo://resource/static/document/${marker}.md` }), header: 'mcp-name' },
  ];
  const BAD: Array<[string, (method: string, name: string) => Record<string, string | string[] | undefined>]> = [
    ['MCP-Protocol-Version missing', () => ({ 'mcp-protocol-version': undefined })],
    ['MCP-Protocol-Version mismatched', () => ({ 'mcp-protocol-version': '2025-11-25' })],
    ['MCP-Protocol-Version twice', () => ({ 'mcp-protocol-version': [V, V] })],
    ['Mcp-Method missing', () => ({ 'mcp-method': undefined })],
    ['Mcp-Method mismatched', () => ({ 'mcp-method': 'tools/list' })],
    ['Mcp-Method in another case', (m) => ({ 'mcp-method': m.toUpperCase() })],
    ['Mcp-Method twice', (m) => ({ 'mcp-method': [m, m] })],
    ['Mcp-Name missing', () => ({ 'mcp-name': undefined })],
    ['Mcp-Name mismatched', () => ({ 'mcp-name': 'something-else' })],
    ['Mcp-Name twice', (_m, n) => ({ 'mcp-name': [n, n] })],
    ['Mcp-Name base64 of another value', () => ({ 'mcp-name': `=?base64?${Buffer.from('other').toString('base64')}?=` })],
    ['Mcp-Name invalid base64', () => ({ 'mcp-name': '=?base64?@@@?=' })],
    ['Mcp-Name non-canonical base64', (_m, n) => ({ 'mcp-name': `=?base64?${Buffer.from(n).toString('base64').replace(/=+$/, '')}?=` })],
    ['Mcp-Name with a different case', (_m, n) => ({ 'mcp-name': n.toUpperCase() })],
  ];
  for (const { method, params } of NAMED) {
    for (const [what, headers] of BAD) {
      test(`${method}: ${what} → 400 -32020, not forwarded`, async () => {
        const marker = `hdr${++seq}x${Date.now()}`;
        const p = params(marker);
        const name = (p as { name?: string; uri?: string }).name ?? (p as { uri: string }).uri;
        if (what.includes('different case') && name.toUpperCase() === name) return;
        if (what.includes('non-canonical') && !Buffer.from(name).toString('base64').endsWith('=')) return;
        const res = await modern('raw', method, p, headers(method, name));
        assert.equal(res.status, 400, res.text);
        assert.equal(res.json.error.code, -32020, res.text);
        assert.deepEqual(received(marker), []);
      });
    }
  }

  test('Mcp-Name encoded as the spec says (base64 sentinel) is accepted', async () => {
    const marker = `ok${Date.now()}`;
    const res = await modern('raw', 'tools/call', { name: 'echo', arguments: { marker } }, { 'mcp-name': `=?base64?${Buffer.from('echo').toString('base64')}?=` });
    assert.equal(res.status, 200, res.text);
    assert.equal(received(marker).length, 1);
  });

  test('Mcp-Param headers of an annotated tool must match its arguments; unknown ones are ignored', async () => {
    const ok = (args: Record<string, unknown>, headers: Record<string, string | string[]>) => modern('raw', 'tools/call', { name: 'route', arguments: args }, headers);
    const m = () => `p${++seq}x${Date.now()}`;
    let marker = m();
    let res = await ok({ region: 'us-west1', count: 42, dry: true, target: { zone: 'b' }, note: marker }, { 'mcp-param-region': 'us-west1', 'mcp-param-count': '42.0', 'mcp-param-dry-run': 'true', 'mcp-param-zone': 'b', 'mcp-param-unknown': 'whatever' });
    assert.equal(res.status, 200, res.text);
    assert.equal(received(marker).length, 1);
    const cases: Array<[string, Record<string, unknown>, Record<string, string | string[]>]> = [
      ['missing while the argument is set', { region: 'eu' }, {}],
      ['mismatched', { region: 'eu' }, { 'mcp-param-region': 'us' }],
      ['present while the argument is not', {}, { 'mcp-param-region': 'eu' }],
      ['twice', { region: 'eu' }, { 'mcp-param-region': ['eu', 'eu'] }],
      ['integer mismatched', { count: 42 }, { 'mcp-param-count': '43' }],
      ['integer not a number', { count: 42 }, { 'mcp-param-count': '42abc' }],
      ['boolean spelled otherwise', { dry: true }, { 'mcp-param-dry-run': 'TRUE' }],
      ['nested value mismatched', { target: { zone: 'a' } }, { 'mcp-param-zone': 'b' }],
      ['non-ASCII sent unencoded', { region: 'zürich' }, { 'mcp-param-region': Buffer.from('zürich').toString('latin1') }],
    ];
    for (const [what, args, headers] of cases) {
      marker = m();
      res = await ok({ ...args, note: marker }, headers);
      assert.equal(res.status, 400, `${what}: ${res.text}`);
      assert.equal(res.json.error.code, -32020, what);
      assert.deepEqual(received(marker), [], what);
    }
    marker = m();
    res = await ok({ region: 'zürich', note: marker }, { 'mcp-param-region': encodeHeaderValue('zürich') });
    assert.equal(res.status, 200, res.text);
  });

  test('generated spellings of a tool name reach the upstream only when they are exactly an allowed name, on HTTP and on wrap', async () => {
    // The raw upstream has tools "crash" and "hang", which policy does not allow: no spelling of
    // them (case, padding, invisible or look-alike characters) may get a call through.
    const spelling = fc.tuple(
      fc.constantFrom('crash', 'hang', 'echo'),
      fc.constantFrom((n: string) => n, (n: string) => n.toUpperCase(), (n: string) => ` ${n}`, (n: string) => `${n}\u200b`, (n: string) => n.replace('a', '\u0430'), (n: string) => n.normalize('NFD') + '\u0301', (n: string) => `${n}\u0000`),
    ).map(([n, f]) => f(n));
    const w = await rawWrap({ raw: upstreams.raw({ RECORD_FILE: record }) }, 'raw', { 'p.yaml': POLICY });
    try {
      let id = 1000;
      await fc.assert(
        fc.asyncProperty(spelling, async (name) => {
          const marker = `sp${++seq}x${Date.now()}`;
          const res = await modern('raw', 'tools/call', { name, arguments: { marker } });
          w.send(JSON.stringify({ jsonrpc: '2.0', id: ++id, method: 'tools/call', params: { name, arguments: { marker: `${marker}w` }, _meta: META } }));
          const viaWrap = await w.reply(id);
          const reached = received(marker).map((l) => JSON.parse(l).params?.name);
          if (name === 'echo') {
            assert.equal(res.status, 200, res.text);
            assert.deepEqual(reached, ['echo', 'echo'], 'both fronts forwarded the allowed name');
          } else {
            assert.deepEqual(reached, [], `${JSON.stringify(name)} reached the upstream`);
            assert.ok(res.status !== 200 || res.json.result?.isError === true || res.json.error, res.text);
            assert.ok(viaWrap.error || viaWrap.result?.isError === true, JSON.stringify(viaWrap));
          }
        }),
        { numRuns: 40 },
      );
    } finally {
      await w.close();
    }
  });

  test('generated names: a request passes only when Mcp-Name says exactly what the body says', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }), async (body, header) => {
        const marker = `g${++seq}x${Date.now()}`;
        const res = await modern('raw', 'tools/call', { name: body, arguments: { marker } }, { 'mcp-name': encodeHeaderValue(header) });
        if (body === header) {
          assert.notEqual(res.status, 400, res.text);
        } else {
          assert.equal(res.status, 400, `${JSON.stringify(body)} vs ${JSON.stringify(header)}: ${res.text}`);
          assert.deepEqual(received(marker), []);
        }
      }),
      { numRuns: 60 },
    );
  });
});

describe('both eras at once', () => {
  test('a 2025 session and 2026 requests on the same endpoint, side by side', async () => {
    const old = await connectHttp(gw.url('everything'));
    try {
      const [a, b] = await Promise.all([old.callTool({ name: 'echo', arguments: { message: 'old' } }), modern('everything', 'tools/call', { name: 'echo', arguments: { message: 'new' } })]);
      assert.match(JSON.stringify(a.content), /old/);
      assert.match(b.text, /new/);
      assert.equal(b.headers['mcp-session-id'], undefined, 'no session for a 2026 request');
    } finally {
      await old.close();
    }
  });
});

describe('a 2025 upstream asks a 2026 client: input-required results', () => {
  test('the SDK v2 client answers an elicitation through an input-required round trip; the call continues', async () => {
    const client = new ClientV2({ name: 'v2-asked', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' }, capabilities: { elicitation: { form: {} } } });
    client.setRequestHandler('elicitation/create', async () => ({ action: 'accept', content: { name: 'Ada' } }));
    await client.connect(new HttpV2(new URL(gw.url('asking'))));
    try {
      assert.equal(client.getNegotiatedProtocolVersion(), V);
      const res = await client.callTool({ name: 'ask', arguments: { kind: 'elicitation' } });
      assert.deepEqual(JSON.parse((res.content as Array<{ text: string }>)[0].text), { result: { action: 'accept', content: { name: 'Ada' } } });
    } finally {
      await client.close();
    }
    const asked = gw.audit.filter((r) => r.type === 'decision' && r.data.server === 'asking' && r.data.method === 'elicitation/create');
    assert.equal(asked.length, 1, 'the server request was decided and audited');
    assert.equal(asked[0].data.effect, 'allow');
  });

  const call = (args: Record<string, unknown>, extra: Record<string, unknown> = {}, capabilities: Record<string, unknown> = { elicitation: {}, roots: {} }) =>
    modern('asking', 'tools/call', { name: 'ask', arguments: args, ...extra, _meta: { 'io.modelcontextprotocol/clientCapabilities': capabilities } });

  test('a requestState is bound to its call: tampered, or reused for other arguments, it is refused and nothing is answered upstream', async () => {
    const first = await call({ kind: 'roots' });
    assert.equal(first.json.result.resultType, 'input_required', first.text);
    const [key] = Object.keys(first.json.result.inputRequests);
    assert.equal(first.json.result.inputRequests[key].method, 'roots/list');
    const state: string = first.json.result.requestState;
    const answers = { [key]: { roots: [{ uri: 'file:///ok' }] } };
    const tampered = state.slice(0, -3) + (state.endsWith('AAA') ? 'BBB' : 'AAA');
    for (const [what, res] of [
      ['tampered', await call({ kind: 'roots' }, { requestState: tampered, inputResponses: answers })],
      ['other arguments', await call({ kind: 'roots', maxTokens: 5 }, { requestState: state, inputResponses: answers })],
    ] as const) {
      assert.equal(res.json.error?.code, -32602, `${what}: ${res.text}`);
      assert.match(res.json.error.message, /requestState/);
    }
    assert.doesNotMatch(readFileSync(askRecord, 'utf8'), /file:\/\/\/ok/, 'no answer reached the upstream');
    const done = await call({ kind: 'roots' }, { requestState: state, inputResponses: answers });
    assert.equal(done.json.result.resultType, 'complete', done.text);
    assert.deepEqual(JSON.parse(done.json.result.content[0].text), { result: { roots: [{ uri: 'file:///ok' }] } });
    const again = await call({ kind: 'roots' }, { requestState: state, inputResponses: answers });
    assert.equal(again.json.error?.code, -32602, 'a requestState continues its call once');
  });

  test('a request the client did not declare, or policy denies, is refused to the upstream; the client gets the outcome of the call', async () => {
    const undeclared = await call({ kind: 'elicitation' }, {}, { roots: {} });
    assert.equal(undeclared.json.result.resultType, 'complete', undeclared.text);
    assert.match(undeclared.json.result.content[0].text, /did not declare the elicitation capability/);
    const denied = await call({ kind: 'sampling' }, {}, { sampling: {} });
    assert.match(denied.json.result.content[0].text, /Forbidden by policy/);
  });
});

describe('a 2026-07-28 client on wrap (stdio)', () => {
  test('the SDK v2 client probes with server/discover, stays on 2026-07-28, and is governed like on HTTP', async () => {
    const { file, dir: cfg } = writeConfig({ servers: { everything: upstreams.everything() }, logging: { level: 'warn' } }, { 'p.yaml': POLICY });
    const client = new ClientV2({ name: 'v2-stdio', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } });
    await client.connect(new StdioV2({ command: process.execPath, args: [BIN, 'wrap', '-c', file, '--server', 'everything', '--identity', 'alice'], stderr: 'ignore' }));
    try {
      assert.equal(client.getNegotiatedProtocolVersion(), V);
      assert.deepEqual((await client.listTools()).tools.map((t) => t.name).sort(), ['echo', 'get-sum']);
      const echoed = await client.callTool({ name: 'echo', arguments: { message: 'over stdio' } });
      assert.match(JSON.stringify(echoed.content), /over stdio/);
      const denied = await client.callTool({ name: 'get-env', arguments: {} });
      assert.equal(denied.isError, true);
    } finally {
      await client.close();
      cfg.remove();
    }
  });

  test('lines after a 2026 first line: a legacy request, an unsupported version, a removed method are answered with why', async () => {
    const w = await rawWrap({ raw: upstreams.raw() }, 'raw', { 'p.yaml': POLICY });
    try {
      const req = (id: number, method: string, params: Record<string, unknown> = {}, meta: Record<string, unknown> = META) => w.send(JSON.stringify({ jsonrpc: '2.0', id, method, params: { ...params, _meta: meta } }));
      req(1, 'server/discover');
      assert.deepEqual((await w.reply(1)).result.supportedVersions, [V]);
      req(2, 'tools/call', { name: 'echo', arguments: { a: 1 } });
      assert.equal((await w.reply(2)).result.resultType, 'complete');
      w.send(JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/list' }));
      assert.equal((await w.reply(3)).error.code, -32600);
      req(4, 'tools/list', {}, { ...META, 'io.modelcontextprotocol/protocolVersion': '2099-01-01' });
      const unsupported = await w.reply(4);
      assert.equal(unsupported.error.code, -32022);
      assert.ok(unsupported.error.data.supported.includes(V));
      req(5, 'ping');
      assert.equal((await w.reply(5)).error.code, -32601);
    } finally {
      await w.close();
    }
  });
});

describe('subscriptions/listen', () => {
  test('on a 2025 upstream the gateway acknowledges the flags it can honour and delivers list changes tagged with the subscription', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 'sub-1', method: 'subscriptions/listen', params: { notifications: { toolsListChanged: true, resourceSubscriptions: ['demo://resource/static/document/architecture.md'] }, _meta: META } });
    const events: any[] = [];
    const u = new URL(gw.url('everything'));
    const req = httpRequest({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { ...MCP_HEADERS, 'mcp-protocol-version': V, 'mcp-method': 'subscriptions/listen' } });
    const opened = new Promise<import('node:http').IncomingMessage>((resolve) => req.once('response', resolve));
    req.end(body);
    const res = await opened;
    assert.equal(res.headers['content-type'], 'text/event-stream');
    let buf = '';
    res.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i; (i = buf.indexOf('\n\n')) >= 0; buf = buf.slice(i + 2)) {
        const data = buf.slice(0, i).split('\n').find((l) => l.startsWith('data: '));
        if (data) events.push(JSON.parse(data.slice(6)));
      }
    });
    const waitFor = async (n: number) => {
      for (let t = 0; events.length < n && t < 200; t++) await new Promise((r) => setTimeout(r, 25));
    };
    await waitFor(1);
    assert.equal(events[0].method, 'notifications/subscriptions/acknowledged');
    assert.equal(events[0].params._meta['io.modelcontextprotocol/subscriptionId'], 'sub-1');
    assert.deepEqual(events[0].params.notifications, { toolsListChanged: true }, 'resource subscriptions are not honoured on a 2025 upstream');
    gw.gateway.policyChanged(); // what a new policy version does: lists may have changed
    await waitFor(2);
    assert.equal(events[1]?.method, 'notifications/tools/list_changed');
    assert.equal(events[1].params._meta['io.modelcontextprotocol/subscriptionId'], 'sub-1');
    req.destroy();
  });
});
