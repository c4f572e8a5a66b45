// The gateway's upstream connector as an MCP client, measured: the official conformance suite's
// client scenarios (@modelcontextprotocol/conformance 0.2.0-alpha.12, on Node 22 from
// node-release.ts) at the 2026-07-28 wire, where the "client under test" is
// test/fixtures/conformance-client.ts: it starts a gateway whose HTTP upstream (era auto) is the
// scenario's mock server and drives a client through it, the SDK v2 client (2026-07-28) and the
// SDK v1 client (2025, which the gateway translates). What the mock checks is what the gateway's
// connector sent. Every check must pass (SUCCESS, INFO, or SKIPPED for what a scenario's mock
// does not exercise) except the EXPECTED entries below; an entry that passes is stale and fails.
//
//   node --import tsx --test test/e2e/conformance-client.test.ts
//
// The suite's result folders are kept under $TMPDIR/portcullis-conformance-client-*/ when a test fails.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { parse } from 'yaml';
import { conformance22, CONFORMANCE_VERSION, describeChecks, runClientScenario, type ClientScenarioRun } from '../fixtures/conformance.js';
import { DRIVER_MARK, INVALID_TOOLS, type DriverReport } from '../fixtures/conformance-client.js';
import { connectHttp, MCP_HEADERS, raw, ROOT, startTestGateway, upstreams } from './harness.js';

type ClientEra = '2026' | '2025';
const CLIENTS: ClientEra[] = ['2026', '2025'];

/** The client scenarios of 2026-07-28 that concern what an upstream connector sends (all but auth). */
const SCENARIOS = ['request-metadata', 'http-standard-headers', 'http-custom-headers', 'http-invalid-tool-headers', 'sep-2322-client-request-state', 'tools_call', 'json-schema-ref-no-deref'];

/**
 * Client scenarios of 2026-07-28 that cannot apply to the gateway's upstream connector, and why
 * (docs/conformance.md lists them too).
 */
const NOT_APPLICABLE: Record<string, string> = {
  'auth/*': 'the gateway does not run OAuth toward an upstream: its credentials are static headers in the config (servers.<name>.headers); a client\'s own token is never passed up',
  'json-schema-2020-12-preservation': 'not scored at 2026-07-28 (added after release); it checks what a client does with a tool schema, which the gateway passes on as it came',
};

/**
 * Checks that do not pass, with why, per client era: `scenario/checkId[name]` → status and reason.
 * A 2025 session on a 2026 upstream first offers the client's own initialize (a dual-era server
 * serves it natively, docs/eras.md): the mocks see that 2025-era POST, which carries no 2026
 * envelope nor headers.
 */
const BY_DESIGN_2025 = 'by design: a 2025 session first offers its own initialize (a 2025 request, no 2026 envelope or headers) so that a dual-era server can serve it natively';
const EXPECTED: Record<ClientEra, Record<string, { status: string; why: string }>> = {
  '2026': {},
  '2025': {
    'request-metadata/sep-2575-http-client-sends-version-header': { status: 'FAILURE', why: BY_DESIGN_2025 },
    'request-metadata/sep-2575-client-populates-meta': { status: 'FAILURE', why: BY_DESIGN_2025 },
    'request-metadata/sep-2575-client-sends-client-info': { status: 'WARNING', why: BY_DESIGN_2025 },
    'http-standard-headers/sep-2243-client-includes-standard-headers[ClientMcpMethodHeader_initialize]': { status: 'FAILURE', why: BY_DESIGN_2025 },
  },
};

/** Passing: SKIPPED is what a scenario's mock did not exercise (an initialize a 2026 client never sends). */
const PASSING = new Set(['SUCCESS', 'INFO', 'SKIPPED']);

const workDir = mkdtempSync(join(tmpdir(), 'portcullis-conformance-client-'));
let failed = false;
after(() => {
  if (!failed) rmSync(workDir, { recursive: true, force: true });
});

const DRIVER = join(ROOT, 'test/fixtures/conformance-client.ts');
/** The suite splits the command on spaces. */
const command = (client: ClientEra) => {
  const cmd = `${process.execPath} --import tsx ${DRIVER} --client ${client}`;
  assert.equal(cmd.split(' ').length, 6, `the suite splits --command on spaces: run the tests from a path without spaces (${cmd})`);
  return cmd;
};

function driverReport(run: ClientScenarioRun): DriverReport & { failed?: string } {
  const line = run.clientStdout.split('\n').find((l) => l.startsWith(DRIVER_MARK));
  assert.ok(line, `the driver printed no report\n--- suite stderr\n${run.stderr.slice(-3000)}`);
  return JSON.parse(line.slice(DRIVER_MARK.length)) as DriverReport & { failed?: string };
}

describe(`MCP conformance suite ${CONFORMANCE_VERSION} (client scenarios at 2026-07-28) against the gateway's upstream connector`, { concurrency: 2 }, () => {
  test(`installs Node 22 and the suite ${CONFORMANCE_VERSION}; every client scenario 2026-07-28 runs is run here or excused`, async () => {
    const { requirementsDir } = await conformance22();
    const doc = parse(await readFile(join(requirementsDir, '2026-07-28.yaml'), 'utf8')) as { client?: string[]; not_scored?: Array<{ scenario: string; leg: string }> };
    const all = [...(doc.client ?? []), ...(doc.not_scored ?? []).filter((n) => n.leg === 'client').map((n) => n.scenario)];
    const excused = (s: string) => Object.hasOwn(NOT_APPLICABLE, s) || (s.startsWith('auth/') && Object.hasOwn(NOT_APPLICABLE, 'auth/*'));
    assert.deepEqual(all.filter((s) => !SCENARIOS.includes(s) && !excused(s)), [], 'client scenarios neither run nor listed in NOT_APPLICABLE');
  });

  for (const client of CLIENTS) {
    for (const scenario of SCENARIOS) {
      test(`${scenario}, a ${client} client through the gateway`, async (t) => {
        try {
          const run = await runClientScenario(command(client), scenario, join(workDir, `${scenario}-${client}`));
          const report = driverReport(run);
          const expected = EXPECTED[client];
          const outcome = [...run.checks].filter(([key]) => key.startsWith(`${scenario}/`));
          const unexpected = outcome.filter(([key, c]) => !PASSING.has(c.status) && expected[key]?.status !== c.status).map(([key]) => key);
          const stale = Object.keys(expected).filter((key) => key.startsWith(`${scenario}/`) && run.checks.get(key)?.status !== expected[key]!.status);
          console.log(`conformance client ${scenario} (${client} client): ${outcome.filter(([, c]) => c.status === 'SUCCESS').length} passed, ${outcome.filter(([, c]) => !PASSING.has(c.status)).length} not, in ${(run.durationMs / 1000).toFixed(1)} s`);
          assert.deepEqual(
            { unexpected: describeChecks(run, unexpected), stale, driverFailed: report.failed },
            { unexpected: [], stale: [], driverFailed: undefined },
            `${scenario} with a ${client} client through the gateway\n--- suite output\n${run.stderr.slice(-3000)}`,
          );
          assert.ok(outcome.some(([, c]) => c.status === 'SUCCESS'), 'the scenario passed something: it ran');

          // What the client saw, beyond what the mock checks.
          if (scenario === 'http-invalid-tool-headers') {
            assert.deepEqual(report.listed, ['valid_tool'], 'the gateway lists only the valid tool');
            for (const name of INVALID_TOOLS) {
              const call = report.calls.find((c) => c.tool === name);
              assert.match(call?.error ?? '', /is not available: upstream "up" defines it with invalid x-mcp-header annotations/, `${name} is refused`);
            }
          }
          if (scenario === 'sep-2322-client-request-state') {
            assert.deepEqual(report.calls.map((c) => c.text), ['echo-state-ok', 'unrelated-ok', 'no-state-ok', 'no-result-type-test-ok']);
          }
          if (scenario === 'http-custom-headers') assert.deepEqual(report.calls.map((c) => c.text), ['Custom headers test completed', 'Custom headers test completed']);
        } catch (e) {
          failed = true;
          t.diagnostic(`results kept in ${workDir}`);
          throw e;
        }
      });
    }
  }
});

/** A 2026-only HTTP upstream listing one valid tool and two whose x-mcp-header annotations are invalid; it records every call it gets. */
function invalidToolsUpstream(): Promise<{ url: string; called: string[]; close(): Promise<void> }> {
  const called: string[] = [];
  const tools = [
    { name: 'ok', inputSchema: { type: 'object', properties: { region: { type: 'string', 'x-mcp-header': 'Region' } } } },
    { name: 'spaced', inputSchema: { type: 'object', properties: { v: { type: 'string', 'x-mcp-header': 'My Region' } } } },
    { name: 'twice', inputSchema: { type: 'object', properties: { a: { type: 'string', 'x-mcp-header': 'A' }, b: { type: 'string', 'x-mcp-header': 'a' } } } },
  ];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d));
    req.on('end', () => {
      const m = JSON.parse(body || '{}') as { id?: unknown; method?: string; params?: { name?: string } };
      const answer = (result: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: m.id, result }));
      if (req.headers['mcp-protocol-version'] !== '2026-07-28') {
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: m.id ?? null, error: { code: -32022, message: 'Unsupported protocol version', data: { supported: ['2026-07-28'] } } }));
        return;
      }
      if (m.method === 'server/discover') return answer({ resultType: 'complete', supportedVersions: ['2026-07-28'], capabilities: { tools: {} }, _meta: { 'io.modelcontextprotocol/serverInfo': { name: 'invalid-tools', version: '1' } } });
      if (m.method === 'tools/list') return answer({ resultType: 'complete', ttlMs: 0, cacheScope: 'private', tools });
      if (m.method === 'tools/call') {
        called.push(m.params?.name ?? '?');
        return answer({ resultType: 'complete', content: [{ type: 'text', text: `called ${m.params?.name}` }] });
      }
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: m.id ?? null, error: { code: -32601, message: 'Method not found' } }));
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`, called, close: () => new Promise((r) => server.close(() => r())) })),
  );
}

test('tools with invalid x-mcp-header annotations: left out of tools/list for 2025 and 2026 clients, refused when called, logged once per tool', async () => {
  const upstream = await invalidToolsUpstream();
  const lines: Array<{ level: number; msg: string; tool?: string }> = [];
  const sink = new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(...chunk.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l))), done()) });
  const gw = await startTestGateway({ up: { transport: 'http', url: upstream.url } }, { log: pino({ level: 'warn' }, sink) });
  try {
    // a 2026 client, raw (the SDK v2 would drop invalid tools itself)
    const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} };
    const post2026 = (id: number, method: string, params: Record<string, unknown>, extra: Record<string, string> = {}) =>
      raw(gw.base, '/mcp/up', { headers: { ...MCP_HEADERS, 'mcp-protocol-version': '2026-07-28', 'mcp-method': method, ...extra }, body: JSON.stringify({ jsonrpc: '2.0', id, method, params: { ...params, _meta: meta } }) });
    for (const id of [1, 2]) {
      const listed = await post2026(id, 'tools/list', {});
      assert.deepEqual(listed.json.result.tools.map((t: { name: string }) => t.name), ['ok'], 'a 2026 client is listed the valid tool only');
    }
    const refused = await post2026(3, 'tools/call', { name: 'spaced', arguments: { v: 'x' } }, { 'mcp-name': 'spaced' });
    assert.equal(refused.json.error?.code, -32602);
    assert.match(refused.json.error.message, /Tool "spaced" is not available: upstream "up" defines it with invalid x-mcp-header annotations \(x-mcp-header on v: "My Region" is not an HTTP token\)/);
    const ok = await post2026(4, 'tools/call', { name: 'ok', arguments: { region: 'eu' } }, { 'mcp-name': 'ok', 'mcp-param-region': 'eu' });
    assert.equal(ok.json.result?.content?.[0]?.text, 'called ok');

    // a 2025 client: the gateway is the 2026 client for its session; a call before any listing is refused too
    const v1 = await connectHttp(gw.url('up'));
    try {
      await assert.rejects(v1.callTool({ name: 'twice', arguments: { a: 'x', b: 'y' } }), /-32602.*Tool "twice" is not available.*not case-insensitively unique|-32602.*Tool "twice" is not available.*already used by/);
      assert.deepEqual((await v1.listTools()).tools.map((t) => t.name), ['ok'], 'a 2025 client is listed the valid tool only');
    } finally {
      await v1.close();
    }
    assert.deepEqual(upstream.called, ['ok'], 'no invalid tool was ever called upstream');
    const warned = lines.filter((l) => l.msg.startsWith('upstream tool left out of tools/list')).map((l) => l.tool);
    assert.deepEqual(warned.sort(), ['spaced', 'twice'], 'each invalid tool logged once, whatever the number of sessions and listings');
  } finally {
    await gw.close();
    await upstream.close();
  }
});

test("a stdio upstream's tool with invalid x-mcp-header annotations is left out of tools/list too, for 2025 and 2026 clients, and logged once", async () => {
  const lines: Array<{ level: number; msg: string; tool?: string }> = [];
  const sink = new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(...chunk.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l))), done()) });
  const gw = await startTestGateway({ raw: upstreams.raw() }, { log: pino({ level: 'warn' }, sink) });
  try {
    const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} };
    const listed2026 = await raw(gw.base, '/mcp/raw', { headers: { ...MCP_HEADERS, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/list' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: meta } }) });
    const names2026: string[] = listed2026.json.result.tools.map((t: { name: string }) => t.name);
    assert.ok(names2026.includes('route') && !names2026.includes('bad-header'), names2026.join(', '));
    const v1 = await connectHttp(gw.url('raw'));
    try {
      const names2025 = (await v1.listTools()).tools.map((t) => t.name);
      assert.ok(names2025.includes('route') && !names2025.includes('bad-header'), names2025.join(', '));
    } finally {
      await v1.close();
    }
    const warned = lines.filter((l) => l.msg.startsWith('upstream tool left out of tools/list'));
    assert.deepEqual(warned.map((l) => [l.tool, (l as { problem?: string }).problem]), [['bad-header', 'x-mcp-header on amount: the property must be a string, an integer or a boolean, not "number"']]);
  } finally {
    await gw.close();
  }
});
