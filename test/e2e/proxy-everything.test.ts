// The core proxy, end to end: the official SDK client, through the gateway's Streamable HTTP
// front, to the real @modelcontextprotocol/server-everything as a stdio child, as a Streamable
// HTTP server and as a legacy SSE server. Every MCP feature must pass through unchanged.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { everythingSuite } from '../fixtures/everything-suite.js';
import { connectHttp, connectStdioDirect, EVERYTHING, post, raw, rawSession, startEverythingHttp, startTestGateway, upstreams, type Proc, type TestGateway } from './harness.js';

let gw: TestGateway;
let evHttp: Proc & { url: string };
let evSse: Proc & { url: string };

before(async () => {
  [evHttp, evSse] = await Promise.all([startEverythingHttp('streamableHttp'), startEverythingHttp('sse')]);
  gw = await startTestGateway({
    'ev-stdio': upstreams.everything(),
    // One process shared by the sessions of a credential (share: credential): the same suite passes.
    'ev-shared': { ...upstreams.everything(), share: 'credential' },
    'ev-http': { transport: 'http', url: evHttp.url },
    'ev-sse': { transport: 'sse', url: evSse.url },
  });
});

after(async () => {
  await gw?.close();
  await Promise.all([evHttp?.stop(), evSse?.stop()]);
});

for (const [kind, server] of [
  ['stdio', 'ev-stdio'],
  ['shared stdio', 'ev-shared'],
  ['Streamable HTTP', 'ev-http'],
  ['legacy SSE', 'ev-sse'],
] as const) {
  everythingSuite(`server-everything as a ${kind} upstream, through /mcp/${server}`, async (options, setup) => {
    const client = await connectHttp(gw.url(server), options, setup);
    return { client, close: () => client.close() };
  }, {
    inFlight: () => [...gw.gateway.sessions.values()].some((s) => s.busy),
  });
}

describe('progress on the wire', () => {
  for (const server of ['ev-stdio', 'ev-shared', 'ev-http', 'ev-sse']) {
    test(`${server}: every progress notification reaches the request's stream, in order, before the result`, async () => {
      const s = await rawSession(gw, server);
      try {
        for (let round = 0; round < 5; round++) {
          const res = await post(gw, server, { jsonrpc: '2.0', id: `lro-${round}`, method: 'tools/call', params: { name: 'trigger-long-running-operation', arguments: { duration: 0.05, steps: 5 }, _meta: { progressToken: `tok-${round}` } } }, s.headers);
          assert.equal(res.status, 200);
          // (The server may also log on this stream: only progress and the result are compared.)
          const kinds = res.messages.filter((m) => m.method === 'notifications/progress' || m.id !== undefined).map((m) => (m.method === 'notifications/progress' ? `${m.params.progressToken}:${m.params.progress}/${m.params.total}` : m.id));
          assert.deepEqual(kinds, [1, 2, 3, 4, 5].map((n) => `tok-${round}:${n}/5`).concat(`lro-${round}`));
        }
      } finally {
        await raw(gw.base, `/mcp/${server}`, { method: 'DELETE', headers: s.headers });
      }
    });
  }
});

describe('transparency', () => {
  test('initialize through the gateway equals initialize direct (stdio upstream)', async () => {
    const direct = await connectStdioDirect(process.execPath, [EVERYTHING, 'stdio']);
    const viaGw = await connectHttp(gw.url('ev-stdio'));
    try {
      assert.deepEqual(viaGw.getServerVersion(), direct.getServerVersion());
      assert.deepEqual(viaGw.getServerCapabilities(), direct.getServerCapabilities());
      assert.equal(viaGw.getInstructions(), direct.getInstructions());
      const tDirect = await direct.listTools();
      const tGw = await viaGw.listTools();
      assert.deepEqual(tGw, tDirect);
    } finally {
      await Promise.all([direct.close(), viaGw.close()]);
    }
  });

  test('initialize through the gateway equals initialize direct (Streamable HTTP upstream)', async () => {
    const direct = await connectHttp(evHttp.url);
    const viaGw = await connectHttp(gw.url('ev-http'));
    try {
      assert.deepEqual(viaGw.getServerVersion(), direct.getServerVersion());
      assert.deepEqual(viaGw.getServerCapabilities(), direct.getServerCapabilities());
      assert.equal(viaGw.getInstructions(), direct.getInstructions());
      const dt = direct.transport as { protocolVersion?: string };
      const gt = viaGw.transport as { protocolVersion?: string };
      assert.equal(gt.protocolVersion, dt.protocolVersion);
    } finally {
      await Promise.all([direct.close(), viaGw.close()]);
    }
  });

  for (const version of ['2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05']) {
    test(`the protocol version negotiated is the upstream's: client asks ${version}`, async () => {
      for (const server of ['ev-stdio', 'ev-http']) {
        const s = await rawSession(gw, server, version);
        assert.equal(s.result.protocolVersion, version, `${server} negotiated ${s.result.protocolVersion}`);
        assert.equal(s.result.serverInfo.name, 'mcp-servers/everything');
      }
    });
  }

  test('an unsupported protocol version gets the upstream\'s counter-offer, unchanged', async () => {
    const s = await rawSession(gw, 'ev-stdio', '1999-01-01').catch((e) => e as Error);
    // The SDK server answers an unknown version with its latest; the gateway must pass that on.
    assert.ok(!(s instanceof Error), String(s));
    assert.equal(s.result.protocolVersion, '2025-11-25');
  });
});
