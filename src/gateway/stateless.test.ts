// eraOf keeps modern verdicts (see modernKey in stateless.ts): whatever the body and headers, its
// answer must be the SDK's own, first time and every time after.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { eraBySdk, eraOf } from './stateless.js';

const V = 'io.modelcontextprotocol/protocolVersion';
const value = fc.oneof(fc.string({ maxLength: 6 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.constant({}), fc.constant([]));
const version = fc.oneof(fc.constantFrom('2026-07-28', '2025-11-25', '2025-06-18', '2099-01-01', '', ' 2026-07-28'), value);
const meta = fc.record(
  {
    [V]: version,
    'io.modelcontextprotocol/clientCapabilities': fc.oneof(fc.constant({}), fc.constant({ elicitation: {} }), fc.constant({ sampling: 'yes' }), value),
    'io.modelcontextprotocol/clientInfo': fc.oneof(fc.constant({ name: 'c', version: '1' }), fc.constant({ name: 1 }), value),
    'io.modelcontextprotocol/logLevel': fc.oneof(fc.constantFrom('debug', 'info', 'loud'), value),
    progressToken: value,
    'io.modelcontextprotocol/related-task': fc.oneof(fc.constant({ taskId: 't' }), value),
    other: value,
  },
  { requiredKeys: [] },
);
const method = fc.oneof(fc.constantFrom('tools/call', 'tools/list', 'server/discover', 'initialize', 'ping', 'resources/read', 'notifications/cancelled'), fc.string({ maxLength: 8 }), value);
const id = fc.oneof(fc.string({ maxLength: 4 }), fc.integer(), fc.constantFrom(1.5, -0, 2 ** 60, Number.MAX_SAFE_INTEGER), fc.constant(null), fc.boolean());
const params = fc.oneof(
  fc.record({ _meta: fc.oneof(meta, value), name: value, arguments: fc.oneof(fc.constant({ a: 1 }), value) }, { requiredKeys: [] }),
  value,
);
// A valid 2026 request, then one thing changed (often: nothing): most kept verdicts come from here.
const validMeta = { [V]: '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 'c', version: '1' } };
const nearlyValid = fc
  .record({ id: fc.oneof(fc.integer({ min: 0, max: 9 }), fc.constantFrom('a', 'b')), method: fc.constantFrom('tools/call', 'tools/list', 'server/discover', 'prompts/get'), key: fc.constantFrom(...Object.keys(validMeta), 'progressToken', 'io.modelcontextprotocol/logLevel', 'x'), v: fc.option(value, { nil: undefined }), change: fc.boolean() })
  .map(({ id, method, key, v, change }) => ({ jsonrpc: '2.0', id, method, params: { name: 'echo', _meta: change ? { ...validMeta, [key]: v } : validMeta } }));
const body = fc.oneof(
  nearlyValid,
  nearlyValid,
  fc.record({ jsonrpc: fc.oneof(fc.constant('2.0'), value), id, method, params, result: value, error: value, extra: value }, { requiredKeys: [] }),
  fc.record({ jsonrpc: fc.constant('2.0'), id, method, params }, { requiredKeys: ['jsonrpc', 'method', 'params'] }),
  fc.array(value, { maxLength: 2 }),
  value,
);
const header = fc.option(fc.oneof(fc.constantFrom('2026-07-28', '2025-11-25', 'tools/call', 'tools/list', ' tools/call ', 'server/discover'), fc.string({ maxLength: 6 })), { nil: undefined });

test("eraOf answers as the SDK's classifyInboundRequest does, also when it answers from what it kept", () => {
  let modern = 0;
  fc.assert(
    fc.property(body, header, header, header, (b, protocolVersionHeader, mcpMethodHeader, mcpNameHeader) => {
      // JSON bodies only, as a front hands them on.
      const parsed = JSON.parse(JSON.stringify(b) ?? 'null') as unknown;
      const headers = { protocolVersionHeader, mcpMethodHeader, mcpNameHeader };
      const sdk = eraBySdk(parsed, headers);
      if (sdk.kind === 'modern') modern++;
      assert.deepEqual(eraOf(parsed, headers), sdk);
      assert.deepEqual(eraOf(parsed, headers), sdk, 'the second time (kept)');
    }),
    { numRuns: 20_000 },
  );
  assert.ok(modern > 100, `the generator reaches modern verdicts (${modern})`);
});

test('a kept verdict is not shared by a request that differs where the SDK looks', () => {
  const meta = { [V]: '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} };
  const call = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', _meta: meta } };
  assert.equal(eraOf(call, { mcpMethodHeader: 'tools/call' }).kind, 'modern');
  assert.equal(eraOf({ ...call, extra: 1 }, { mcpMethodHeader: 'tools/call' }).kind, 'refused', 'a member JSON-RPC does not have');
  assert.equal(eraOf(call, { mcpMethodHeader: 'tools/list' }).kind, 'refused', 'Mcp-Method disagrees');
  assert.equal(eraOf(call, { protocolVersionHeader: '2025-11-25' }).kind, 'refused', 'the header names another version');
  assert.equal(eraOf({ ...call, params: { ...call.params, _meta: { ...meta, progressToken: {} } } }).kind, 'refused', 'a progress token that is no token');
});
