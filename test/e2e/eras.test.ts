// Upstreams of the 2026-07-28 era behind the gateway, for clients of both eras: each cell of the
// matrix in docs/eras.md that involves a 2026 upstream, with the SDK's v1 (2025) and v2 (2026)
// clients and an SDK v2 server over stdio, 2026-only or dual-era. The fixture records what it
// received, so what the gateway sent up (the envelope, the retry, the untouched requestState) is
// proved where it lands.
import { Client as ClientV2, StreamableHTTPClientTransport as HttpV2 } from '@modelcontextprotocol/client';
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { policyPoint } from '../../src/gateway/decide.js';
import { compileBundle } from '../../src/policy/compile.js';
import { startDualEraUpstream, type DualEraUpstream } from '../fixtures/dual-era-http-upstream.js';
import { connectHttp, MCP_HEADERS, raw, ROOT, startTestGateway, tempDir, type TestGateway } from './harness.js';

const FIXTURE = join(ROOT, 'test/fixtures/modern-server.ts');
const POLICY = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: eras }
server: "*"
default: deny
rules:
  - { name: tools, effect: allow, tools: ["echo", "confirm"] }
  - { name: ask, effect: allow, serverRequests: ["elicitation/create"] }
`;
const NO_ASKING = POLICY.replace('  - { name: ask, effect: allow, serverRequests: ["elicitation/create"] }\n', '');

const dir = tempDir('pcl-eras-');
const records = { modern: join(dir.path, 'modern.jsonl'), dual: join(dir.path, 'dual.jsonl'), strict: join(dir.path, 'strict.jsonl'), retry: join(dir.path, 'retry.jsonl') };
const fixture = (env: Record<string, string>) => ({ transport: 'stdio' as const, command: process.execPath, args: ['--import', 'tsx', FIXTURE], env });
let gw: TestGateway;
let strict: TestGateway;
before(async () => {
  for (const f of Object.values(records)) writeFileSync(f, '');
  const policy = (text: string) => policyPoint({ current: () => compileBundle({ 'p.yaml': text }) });
  gw = await startTestGateway(
    { modern: fixture({ RECORD_FILE: records.modern }), dual: fixture({ RECORD_FILE: records.dual, ERA: 'dual' }), retry: fixture({ RECORD_FILE: records.retry, REFUSE_FIRST_DISCOVER: '1' }) },
    { policy: policy(POLICY) },
  );
  strict = await startTestGateway({ modern: fixture({ RECORD_FILE: records.strict }) }, { policy: policy(NO_ASKING) });
});
after(async () => {
  await gw?.close();
  await strict?.close();
  dir.remove();
});

const received = (file: string) =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { id?: unknown; method?: string; params?: Record<string, any> });

function v2(url: string, elicit?: (message: string) => Record<string, unknown>) {
  const client = new ClientV2({ name: 'v2-eras', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' }, capabilities: elicit ? { elicitation: { form: {} } } : {} });
  if (elicit) client.setRequestHandler('elicitation/create', async (r) => elicit(r.params.message) as never);
  return client.connect(new HttpV2(new URL(url))).then(() => client);
}

describe('a 2026 client in front of a 2026-only upstream', () => {
  test('requests pass as they are; an input-required result and its requestState reach the client untouched, the retry reaches the upstream', async () => {
    const client = await v2(gw.url('modern'), (message) => ({ action: 'accept', content: { ok: message === 'Really ship?' } }));
    try {
      assert.equal(client.getNegotiatedProtocolVersion(), '2026-07-28');
      assert.deepEqual((await client.listTools()).tools.map((t) => t.name).sort(), ['confirm', 'echo']);
      const echoed = await client.callTool({ name: 'echo', arguments: { message: 'hi' } });
      assert.deepEqual(echoed.content, [{ type: 'text', text: 'echo: hi' }]);
      const confirmed = await client.callTool({ name: 'confirm', arguments: { action: 'ship' } });
      assert.deepEqual(JSON.parse((confirmed.content as Array<{ text: string }>)[0].text), { action: 'ship', ok: true, stateIntact: true });
    } finally {
      await client.close();
    }
    const calls = received(records.modern).filter((m) => m.method === 'tools/call' && m.params?.name === 'confirm');
    assert.equal(calls.length, 2, 'the call, then the client\'s retry');
    assert.deepEqual(calls[1].params?.inputResponses, { ok: { action: 'accept', content: { ok: true } } });
    const asked = gw.audit.filter((r) => r.type === 'decision' && r.data.server === 'modern' && r.data.method === 'elicitation/create');
    assert.equal(asked.length, 1, 'the input request inside the result was decided and audited');
  });

  test('subscriptions/listen passes to the upstream; a resource subscription policy does not allow refuses the stream, audited', async () => {
    const client = await v2(gw.url('modern'));
    try {
      await assert.rejects(client.listen({ resourceSubscriptions: ['file:///secret.txt'] }), /Forbidden|denied|-32003/i);
      const sub = await client.listen({ toolsListChanged: true });
      assert.deepEqual(sub.honoredFilter, { toolsListChanged: true });
      await sub.close?.();
    } finally {
      await client.close();
    }
    const denied = gw.audit.find((r) => r.type === 'decision' && r.data.server === 'modern' && r.data.resource === 'file:///secret.txt');
    assert.equal(denied?.data.effect, 'deny');
  });

  test('an input request policy does not allow never reaches the client: the call is refused', async () => {
    let asked = 0;
    const client = await v2(strict.url('modern'), () => (asked++, { action: 'accept', content: { ok: true } }));
    try {
      await assert.rejects(client.callTool({ name: 'confirm', arguments: { action: 'ship' } }), /Forbidden by policy: the server asked the client for elicitation\/create/);
      assert.equal(asked, 0);
    } finally {
      await client.close();
    }
  });
});

describe('a 2025 client in front of a 2026 upstream', () => {
  test('2026-only: the gateway answers initialize from server/discover and carries every request up in the 2026 envelope; input-required becomes a real elicitation', async () => {
    const client = await connectHttp(gw.url('modern'), { capabilities: { elicitation: {} } }, (c) =>
      c.setRequestHandler(ElicitRequestSchema, async (r) => ({ action: 'accept', content: { ok: r.params.message === 'Really deploy?' } })),
    );
    try {
      assert.equal(client.getServerVersion()?.name, 'modern-fixture');
      assert.deepEqual((await client.listTools()).tools.map((t) => t.name).sort(), ['confirm', 'echo']);
      const echoed = await client.callTool({ name: 'echo', arguments: { message: 'old client' } });
      assert.deepEqual(echoed.content, [{ type: 'text', text: 'echo: old client' }]);
      assert.equal((echoed as Record<string, unknown>).resultType, undefined, 'a 2025 client sees a 2025 result');
      const confirmed = await client.callTool({ name: 'confirm', arguments: { action: 'deploy' } });
      assert.deepEqual(JSON.parse((confirmed.content as Array<{ text: string }>)[0].text), { action: 'deploy', ok: true, stateIntact: true });
    } finally {
      await client.close();
    }
    const up = received(records.modern).filter((m) => m.method === 'tools/call' && m.params?.arguments?.message === 'old client');
    assert.equal(up.length, 1);
    assert.equal(up[0].params?._meta?.['io.modelcontextprotocol/protocolVersion'], '2026-07-28');
    assert.deepEqual(up[0].params?._meta?.['io.modelcontextprotocol/clientCapabilities'], { elicitation: {} });
    assert.equal(up[0].params?._meta?.['io.modelcontextprotocol/clientInfo']?.name, 'e2e-client');
  });

  test('dual-era: the upstream answers the client\'s own initialize, and the session passes through as a 2025 one', async () => {
    const client = await connectHttp(gw.url('dual'));
    try {
      const echoed = await client.callTool({ name: 'echo', arguments: { message: 'native' } });
      assert.deepEqual(echoed.content, [{ type: 'text', text: 'echo: native' }]);
    } finally {
      await client.close();
    }
    const got = received(records.dual);
    assert.ok(got.some((m) => m.method === 'initialize'), 'the initialize went up');
    const call = got.find((m) => m.method === 'tools/call' && m.params?.arguments?.message === 'native');
    assert.equal(call?.params?._meta?.['io.modelcontextprotocol/protocolVersion'], undefined, 'no 2026 envelope on a 2025 session');
  });

  test('a stdio upstream that refuses the first server/discover with -32022 listing 2026-07-28 is asked once more, and served as a 2026 one', async () => {
    const client = await v2(gw.url('retry'));
    try {
      assert.deepEqual((await client.listTools()).tools.map((t) => t.name).sort(), ['confirm', 'echo']);
    } finally {
      await client.close();
    }
    const probes = received(records.retry).filter((m) => m.method === 'server/discover' && m.id === 'portcullis-discover');
    assert.equal(probes.length, 2, 'asked, refused, asked again');
    assert.equal(received(records.retry).filter((m) => m.method === 'initialize').length, 0, 'never taken for a 2025 server');
  });

  test('each server is asked its era once', () => {
    const probes = received(records.modern).filter((m) => m.method === 'server/discover' && m.id === 'portcullis-discover');
    assert.equal(probes.length, 1, 'one probe for every session the gateway opened');
  });
});

describe('a 2026 client in front of a 2026 HTTP upstream', () => {
  let upstream: DualEraUpstream;
  let http: TestGateway;
  before(async () => {
    upstream = await startDualEraUpstream({ legacy: 'reject' });
    http = await startTestGateway({ up: { transport: 'http', url: upstream.url } });
  });
  after(async () => {
    await http?.close();
    await upstream?.close();
  });

  test('headers go up regenerated from the decided body; an Mcp-Param header the gateway does not know is passed on as it came', async () => {
    const body = {
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: { name: 'region', arguments: { region: 'eu-west', query: 'q' }, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} } },
    };
    const headers = { ...MCP_HEADERS, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'region', 'mcp-param-region': 'eu-west', 'mcp-param-tenant': 'acme' };
    const res = await raw(http.base, '/mcp/up', { headers, body: JSON.stringify(body) });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(JSON.parse(res.json.result.content[0].text), { region: 'eu-west', query: 'q' });
    const call = upstream.seen.find((h) => h['mcp-method'] === 'tools/call' && h['mcp-name'] === 'region');
    assert.equal(call?.['mcp-param-region'], 'eu-west', 'regenerated from the body');
    assert.equal(call?.['mcp-param-tenant'], 'acme', 'unknown to the gateway: forwarded');
  });
});
