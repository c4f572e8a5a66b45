// The core proxy, end to end: the official SDK client, through the gateway's Streamable HTTP
// front, to the real @modelcontextprotocol/server-everything as a stdio child, as a Streamable
// HTTP server and as a legacy SSE server. Every MCP feature must pass through unchanged.
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { CreateMessageRequestSchema, ElicitRequestSchema, ListRootsRequestSchema, LoggingMessageNotificationSchema, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connectHttp, connectStdioDirect, EVERYTHING, rawSession, startEverythingHttp, startTestGateway, upstreams, waitFor, type Proc, type TestGateway } from './harness.js';

const DOCS = join(EVERYTHING, '..', 'docs');

let gw: TestGateway;
let evHttp: Proc & { url: string };
let evSse: Proc & { url: string };

before(async () => {
  [evHttp, evSse] = await Promise.all([startEverythingHttp('streamableHttp'), startEverythingHttp('sse')]);
  gw = await startTestGateway({
    'ev-stdio': upstreams.everything(),
    'ev-http': { transport: 'http', url: evHttp.url },
    'ev-sse': { transport: 'sse', url: evSse.url },
  });
});

after(async () => {
  await gw?.close();
  await Promise.all([evHttp?.stop(), evSse?.stop()]);
});

const text = (r: unknown) => ((r as CallToolResult).content as Array<{ type: string; text?: string }>).map((c) => c.text ?? '').join('\n');

for (const [kind, server] of [
  ['stdio', 'ev-stdio'],
  ['Streamable HTTP', 'ev-http'],
  ['legacy SSE', 'ev-sse'],
] as const) {
  describe(`server-everything as a ${kind} upstream, through /mcp/${server}`, () => {
    let client: Client;
    const logs: string[] = [];
    const sampled: unknown[] = [];
    const elicited: unknown[] = [];
    let rootsAsked = 0;

    before(async () => {
      client = await connectHttp(gw.url(server), { capabilities: { sampling: {}, elicitation: {}, roots: { listChanged: true } } }, (c) => {
        c.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void logs.push(JSON.stringify(n.params.data)));
        c.setRequestHandler(CreateMessageRequestSchema, async (req) => {
          sampled.push(req.params);
          return { model: 'e2e-model', role: 'assistant', content: { type: 'text', text: 'sampled through the gateway' } };
        });
        c.setRequestHandler(ElicitRequestSchema, async (req) => {
          elicited.push(req.params);
          return { action: 'accept', content: { name: 'Ada Lovelace', check: true } };
        });
        c.setRequestHandler(ListRootsRequestSchema, async () => {
          rootsAsked++;
          return { roots: [{ uri: 'file:///srv/e2e-root', name: 'E2E Root' }] };
        });
      });
    });
    after(async () => {
      await client?.close();
    });

    test('initialize: server info, capabilities and instructions are the upstream\'s', () => {
      assert.deepEqual(client.getServerVersion(), { name: 'mcp-servers/everything', title: 'Everything Reference Server', version: '2.0.0' });
      const caps = client.getServerCapabilities()!;
      assert.deepEqual(caps.resources, { subscribe: true, listChanged: true });
      assert.ok(caps.tools && caps.prompts && caps.logging);
      assert.match(client.getInstructions() ?? '', /\S/);
    });

    test('tools: list, echo, get-sum, get-structured-content with structuredContent intact', async () => {
      const { tools } = await client.listTools();
      const names = tools.map((t) => t.name);
      for (const n of ['echo', 'get-sum', 'get-structured-content', 'trigger-long-running-operation', 'trigger-sampling-request', 'trigger-elicitation-request', 'get-roots-list']) {
        assert.ok(names.includes(n), `tools/list lacks ${n}: ${names.join(', ')}`);
      }
      const structured = tools.find((t) => t.name === 'get-structured-content')!;
      assert.equal(structured.outputSchema?.type, 'object');
      assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'héllo ✓ "quoted"' } })), 'Echo: héllo ✓ "quoted"');
      assert.equal(text(await client.callTool({ name: 'get-sum', arguments: { a: 2, b: 40.5 } })), 'The sum of 2 and 40.5 is 42.5.');
      const weather = (await client.callTool({ name: 'get-structured-content', arguments: { location: 'Chicago' } })) as CallToolResult;
      assert.deepEqual(weather.structuredContent, { temperature: 36, conditions: 'Light rain / drizzle', humidity: 82 });
      assert.deepEqual(JSON.parse(text(weather)), weather.structuredContent);
    });

    test('a tool error from the upstream reaches the client as the upstream sent it', async () => {
      const r = (await client.callTool({ name: 'get-sum', arguments: { a: 'not a number', b: 1 } })) as CallToolResult;
      assert.equal(r.isError, true);
      assert.match(text(r), /a|number/i);
    });

    test('resources: read a static document, list resource templates', async () => {
      const uri = 'demo://resource/static/document/architecture.md';
      const r = await client.readResource({ uri });
      assert.equal(r.contents.length, 1);
      assert.equal(r.contents[0].uri, uri);
      assert.equal(r.contents[0].mimeType, 'text/markdown');
      assert.equal((r.contents[0] as { text?: string }).text, readFileSync(join(DOCS, 'architecture.md'), 'utf8'));
      const { resources } = await client.listResources();
      assert.ok(resources.some((x) => x.uri === uri));
      const { resourceTemplates } = await client.listResourceTemplates();
      assert.deepEqual(resourceTemplates.map((t) => t.uriTemplate).sort(), ['demo://resource/dynamic/blob/{resourceId}', 'demo://resource/dynamic/text/{resourceId}']);
      const dyn = await client.readResource({ uri: 'demo://resource/dynamic/text/7' });
      assert.match(String((dyn.contents[0] as { text?: string }).text), /^Resource 7: This is a plaintext resource/);
    });

    test('prompts: simple-prompt, args-prompt with arguments', async () => {
      const { prompts } = await client.listPrompts();
      assert.ok(prompts.some((p) => p.name === 'args-prompt' && p.arguments?.some((a) => a.name === 'city' && a.required)));
      const simple = await client.getPrompt({ name: 'simple-prompt' });
      assert.deepEqual(simple.messages, [{ role: 'user', content: { type: 'text', text: 'This is a simple prompt without arguments.' } }]);
      const withArgs = await client.getPrompt({ name: 'args-prompt', arguments: { city: 'Zürich', state: 'ZH' } });
      assert.deepEqual(withArgs.messages, [{ role: 'user', content: { type: 'text', text: "What's weather in Zürich, ZH?" } }]);
    });

    test('completions for a prompt argument and a resource template', async () => {
      const c = await client.complete({ ref: { type: 'ref/prompt', name: 'completable-prompt' }, argument: { name: 'department', value: 'Ma' } });
      assert.deepEqual(c.completion.values, ['Marketing']);
      const ctx = await client.complete({ ref: { type: 'ref/prompt', name: 'completable-prompt' }, argument: { name: 'name', value: '' }, context: { arguments: { department: 'Sales' } } });
      assert.deepEqual(ctx.completion.values, ['David', 'Eve', 'Frank']);
      const r = await client.complete({ ref: { type: 'ref/resource', uri: 'demo://resource/dynamic/text/{resourceId}' }, argument: { name: 'resourceId', value: '12' } });
      assert.deepEqual(r.completion.values, ['12']);
    });

    test('logging/setLevel, resources/subscribe and unsubscribe, ping; the server\'s log messages reach the client', async () => {
      assert.deepEqual(await client.setLoggingLevel('debug'), {});
      const uri = 'demo://resource/static/document/features.md';
      assert.deepEqual(await client.subscribeResource({ uri }), {});
      await waitFor('the subscribe log message', () => logs.some((l) => l.includes(`Received Subscribe Resource request for URI: ${uri}`)), 5_000);
      assert.deepEqual(await client.unsubscribeResource({ uri }), {});
      assert.deepEqual(await client.ping(), {});
    });

    test('progress: every step of a long-running operation reaches onprogress, in order', async () => {
      const seen: Array<{ progress: number; total?: number }> = [];
      const r = await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 0.5, steps: 5 } }, undefined, {
        onprogress: (p) => void seen.push({ progress: p.progress, total: p.total }),
      });
      assert.equal(text(r), 'Long running operation completed. Duration: 0.5 seconds, Steps: 5.');
      assert.deepEqual(seen, [1, 2, 3, 4, 5].map((progress) => ({ progress, total: 5 })));
    });

    test('cancellation: an aborted call rejects with the abort; the session keeps working', async () => {
      const controller = new AbortController();
      const started = Date.now();
      const call = client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 20, steps: 20 } }, undefined, { signal: controller.signal });
      setTimeout(() => controller.abort(new Error('user pressed stop')), 300);
      await assert.rejects(call, /user pressed stop|abort/i);
      assert.ok(Date.now() - started < 5_000, 'the abort was not immediate');
      assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'still here' } })), 'Echo: still here');
      assert.equal(gw.gateway.sessions.size >= 1, true);
      // The cancelled request is no longer in flight at the gateway.
      await waitFor('the cancelled request to leave the gateway', () => [...gw.gateway.sessions.values()].every((s) => !s.busy), 3_000);
    });

    test('sampling: the server\'s sampling/createMessage reaches the client and its answer reaches the server', async () => {
      const r = await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'what is a portcullis?', maxTokens: 33 } });
      assert.equal(sampled.length, 1);
      const params = sampled[0] as { messages: Array<{ content: { text: string } }>; maxTokens: number; systemPrompt: string };
      assert.equal(params.messages[0].content.text, 'Resource trigger-sampling-request context: what is a portcullis?');
      assert.equal(params.maxTokens, 33);
      assert.equal(params.systemPrompt, 'You are a helpful test server.');
      const body = JSON.parse(text(r).replace(/^LLM sampling result: \n/, ''));
      assert.deepEqual(body, { model: 'e2e-model', role: 'assistant', content: { type: 'text', text: 'sampled through the gateway' } });
    });

    test('elicitation: elicitation/create reaches the client and the user\'s answer reaches the server', async () => {
      const r = await client.callTool({ name: 'trigger-elicitation-request', arguments: {} });
      assert.equal(elicited.length, 1);
      assert.equal((elicited[0] as { message: string }).message, 'Please provide inputs for the following fields:');
      assert.match(text(r), /User provided the requested information/);
      assert.match(text(r), /- Name: Ada Lovelace/);
      assert.match(text(r), /- Agreed to terms: true/);
    });

    test('roots: the server asks roots/list and sees the client\'s roots', async () => {
      const r = await client.callTool({ name: 'get-roots-list', arguments: {} });
      assert.ok(rootsAsked >= 1, 'the client was never asked roots/list');
      assert.match(text(r), /Current MCP Roots \(1 total\)/);
      assert.match(text(r), /E2E Root\n\s+URI: file:\/\/\/srv\/e2e-root/);
    });
  });
}

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
