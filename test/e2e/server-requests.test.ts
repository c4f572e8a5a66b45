// Issue 9: every message type is governed as docs/policy.md says, through the real gateway on
// both fronts. Requests the upstream sends to the client (sampling, elicitation, roots) are
// decided by `serverRequests` rules and audited; a refused one never reaches the client and the
// upstream gets a JSON-RPC error (it does not hang). tasks/* from the client are decided like
// any other method: without a `methods` rule, denied. A recording upstream (an SDK McpServer)
// proves what it received.
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { CreateMessageRequestSchema, ElicitRequestSchema, ListRootsRequestSchema, McpError, ResultSchema } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { policyPoint } from '../../src/gateway/decide.js';
import { compileBundle } from '../../src/policy/compile.js';
import { openStore } from '../../src/store/open.js';
import { text } from '../fixtures/everything-suite.js';
import { connectHttp, connectWrap, post, rawSession, ROOT, runPortcullis, startTestGateway, tempDir, writeConfig, type TestGateway, type WrapSession } from './harness.js';

const FIXTURE = join(ROOT, 'test/fixtures/server-requests-upstream.mjs');

/** Tools by the allow default; no `methods` rule, so every other client method (tasks/* too) is denied. */
const POLICY = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: asks }
server: "*"
default: allow
rules:
  - { name: alice-roots, effect: allow, who: { sub: alice }, serverRequests: [roots/list] }
  - { name: small-samples, effect: allow, serverRequests: [sampling/createMessage], when: "args.maxTokens <= 100" }
  - { name: no-elicitation, effect: deny, serverRequests: ["elicitation/*"], message: servers do not question our users }
`;

/** What the client's handlers were asked: a denied request must never show up here. */
interface Asked {
  sampling: unknown[];
  elicitation: unknown[];
  roots: number;
}

const CAPABILITIES = { capabilities: { sampling: {}, elicitation: {}, roots: {} } };
function handlers(asked: Asked) {
  return (c: Client) => {
    c.setRequestHandler(CreateMessageRequestSchema, async (r) => (asked.sampling.push(r.params), { model: 'm', role: 'assistant', content: { type: 'text', text: 'hi from the client' } }));
    c.setRequestHandler(ElicitRequestSchema, async (r) => (asked.elicitation.push(r.params), { action: 'accept', content: { name: 'alice' } }));
    c.setRequestHandler(ListRootsRequestSchema, async () => (asked.roots++, { roots: [{ uri: 'file:///home/client', name: 'client root' }] }));
  };
}

/** Calls the fixture's `ask` tool: what the upstream got back for its request. */
async function ask(client: Client, kind: string, maxTokens?: number): Promise<{ result?: any; error?: { code: number; message: string; data?: any } }> {
  return JSON.parse(text(await client.callTool({ name: 'ask', arguments: { kind, ...(maxTokens !== undefined && { maxTokens }) } })));
}

/** Every message the upstream received, in order. */
function received(file: string): any[] {
  return existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
}

const fixture = (recordFile: string) => ({ transport: 'stdio' as const, command: process.execPath, args: [FIXTURE], env: { RECORD_FILE: recordFile } });

describe('server requests through the HTTP front (anonymous caller)', () => {
  let gw: TestGateway;
  let client: Client;
  const dir = tempDir('pcl-asks-');
  const record = join(dir.path, 'received.jsonl');
  const asked: Asked = { sampling: [], elicitation: [], roots: 0 };
  before(async () => {
    gw = await startTestGateway({ asks: fixture(record) }, { policy: policyPoint({ current: () => compileBundle({ 'asks.yaml': POLICY }) }) });
    client = await connectHttp(gw.url('asks'), CAPABILITIES, handlers(asked));
  });
  after(async () => {
    await client?.close();
    await gw?.close();
    dir.remove();
  });
  const serverDecisions = () => gw.audit.filter((r) => r.type === 'decision' && r.data.from === 'server');

  test('a denied elicitation never reaches the client; the upstream gets -32003 naming the rule; the decision is audited', async () => {
    const before = serverDecisions().length;
    const outcome = await ask(client, 'elicitation');
    assert.equal(asked.elicitation.length, 0, 'the client was asked');
    assert.equal(outcome.error?.code, -32003, JSON.stringify(outcome));
    assert.equal(outcome.error?.data.rule, 'asks/no-elicitation');
    assert.equal(outcome.error?.data.message, 'servers do not question our users');
    const [rec] = serverDecisions().slice(before);
    assert.deepEqual(
      { method: rec.data.method, effect: rec.data.effect, rule: rec.data.rule, sub: (rec.data.identity as { sub: string }).sub, decisionId: rec.data.decisionId },
      { method: 'elicitation/create', effect: 'deny', rule: 'asks/no-elicitation', sub: 'anonymous', decisionId: outcome.error?.data.decisionId },
    );
    // At the upstream: the gateway's error is the only answer to its request, none came from the client.
    const answers = received(record).filter((m) => m.id === rec.data.requestId && m.method === undefined);
    assert.deepEqual(answers.map((m) => m.error?.code), [-32003]);
  });

  test('a server request no rule names is denied by default, and policy decides per identity (roots only for alice)', async () => {
    const outcome = await ask(client, 'roots');
    assert.equal(asked.roots, 0);
    assert.equal(outcome.error?.code, -32003);
    assert.equal(outcome.error?.data.rule, '(no rule allows this server request)');
    assert.match(outcome.error?.data.message, /no rule allows the server to send "roots\/list" to the client \(serverRequests\)/);
  });

  test('an allowed sampling request reaches the client, its answer reaches the upstream, and the decision is audited', async () => {
    const before = serverDecisions().length;
    const outcome = await ask(client, 'sampling', 50);
    assert.equal(asked.sampling.length, 1);
    assert.equal(outcome.result?.content.text, 'hi from the client');
    const [rec] = serverDecisions().slice(before);
    assert.deepEqual([rec.data.method, rec.data.effect, rec.data.rule], ['sampling/createMessage', 'allow', 'asks/small-samples']);
    assert.equal(typeof rec.data.argsDigest, 'string', 'the params are digested like arguments');
    // `when` sees the params: a larger request is refused and never reaches the client.
    const big = await ask(client, 'sampling', 500);
    assert.equal(asked.sampling.length, 1);
    assert.equal(big.error?.code, -32003);
    assert.equal(big.error?.data.rule, '(no rule allows this server request)');
  });

  test('a server ping is protocol plumbing: allowed without a rule, and audited', async () => {
    const before = serverDecisions().length;
    assert.deepEqual(await ask(client, 'ping'), { result: {} });
    const [rec] = serverDecisions().slice(before);
    assert.deepEqual([rec.data.method, rec.data.effect, rec.data.rule], ['ping', 'allow', 'protocol/housekeeping']);
  });

  test('tasks/* and custom notifications without a methods rule are denied and never reach the upstream', async () => {
    const s = await rawSession(gw, 'asks');
    const calls = [
      ['tasks/get', { taskId: 'task-of-someone-else' }],
      ['tasks/result', { taskId: 'task-of-someone-else' }],
      ['tasks/cancel', { taskId: 'task-of-someone-else' }],
      ['tasks/list', {}],
    ] as const;
    for (const [i, [method, params]] of calls.entries()) {
      const res = await post(gw, 'asks', { jsonrpc: '2.0', id: 100 + i, method, params }, s.headers);
      assert.equal(res.json.error?.code, -32003, `${method}: ${res.text}`);
      assert.equal(res.json.error.data.rule, '(no rule allows this method)');
    }
    // A task id that is not a string is refused before policy (the upstream would read it otherwise).
    const bad = await post(gw, 'asks', { jsonrpc: '2.0', id: 110, method: 'tasks/get', params: { taskId: 7 } }, s.headers);
    assert.equal(bad.json.error?.code, -32602);
    const methods = received(record).map((m) => m.method);
    assert.ok(methods.includes('tools/call'), 'the recording works');
    assert.deepEqual(methods.filter((m) => typeof m === 'string' && m.startsWith('tasks/')), []);
    // A notification that is not protocol plumbing is decided the same way: denied, dropped, audited.
    const note = await post(gw, 'asks', { jsonrpc: '2.0', method: 'notifications/x-custom', params: {} }, s.headers);
    assert.equal(note.status, 202);
    const rec = gw.audit.find((r) => r.type === 'decision' && r.data.method === 'notifications/x-custom');
    assert.deepEqual([rec?.data.effect, rec?.data.rule], ['deny', '(no rule allows this method)']);
    await ask(client, 'ping'); // the upstream has read everything sent before this call
    assert.deepEqual(received(record).filter((m) => m.method === 'notifications/x-custom'), []);
    // The SDK client sees the same denial.
    await assert.rejects(client.request({ method: 'tasks/get', params: { taskId: 'x' } }, ResultSchema), (e: unknown) => e instanceof McpError && e.code === -32003);
  });
});

describe('server requests through portcullis wrap (alice)', () => {
  let w: WrapSession;
  const dir = tempDir('pcl-asks-wrap-');
  const record = join(dir.path, 'received.jsonl');
  const asked: Asked = { sampling: [], elicitation: [], roots: 0 };
  before(async () => {
    w = await connectWrap({ asks: fixture(record) }, 'asks', { client: CAPABILITIES, setup: handlers(asked), policies: { 'asks.yaml': POLICY } });
  });
  after(async () => {
    await w?.close();
    dir.remove();
  });
  let decisions: Record<string, any>[] = [];
  beforeEach(() => (decisions = []));
  /** The wrap process's own audit log (SQLite beside its config), read while it runs. */
  async function serverDecisions(): Promise<Record<string, any>[]> {
    const store = await openStore('sqlite:./data/portcullis.db', dirname(w.file), { mustExist: true });
    try {
      for await (const r of store.readAudit({})) if (r.type === 'decision' && r.data.from === 'server') decisions.push(r.data);
    } finally {
      await store.close();
    }
    return decisions;
  }

  test('roots/list is allowed for alice: the client is asked, the upstream gets its roots, the decision is audited', async () => {
    const outcome = await ask(w.client, 'roots');
    assert.equal(asked.roots, 1);
    assert.deepEqual(outcome.result?.roots, [{ uri: 'file:///home/client', name: 'client root' }]);
    const rec = (await serverDecisions()).find((d) => d.method === 'roots/list');
    assert.deepEqual([rec?.effect, rec?.rule, rec?.identity.sub], ['allow', 'asks/alice-roots', 'alice']);
  });

  test('a denied elicitation never reaches the client; the upstream gets -32003; audited', async () => {
    const outcome = await ask(w.client, 'elicitation');
    assert.equal(asked.elicitation.length, 0);
    assert.equal(outcome.error?.code, -32003);
    assert.equal(outcome.error?.data.rule, 'asks/no-elicitation');
    const rec = (await serverDecisions()).find((d) => d.method === 'elicitation/create');
    assert.deepEqual([rec?.effect, rec?.rule, rec?.decisionId], ['deny', 'asks/no-elicitation', outcome.error?.data.decisionId]);
    assert.deepEqual(received(record).filter((m) => m.id === rec?.requestId && m.method === undefined).map((m) => m.error?.code), [-32003]);
  });

  test('tasks/get without a methods rule is denied and never reaches the upstream', async () => {
    await assert.rejects(w.client.request({ method: 'tasks/get', params: { taskId: 'x' } }, ResultSchema), (e: unknown) => e instanceof McpError && e.code === -32003 && /no rule allows this method/.test(JSON.stringify(e.data)));
    assert.deepEqual(received(record).filter((m) => m.method === 'tasks/get'), []);
  });
});

describe('config settings not in force stop serve and wrap before they start', () => {
  for (const [section, value, says] of [
    ['admin', { tokens: [{ id: 'ops', sha256: 'a'.repeat(64) }] }, 'the admin API is not available in this version'],
    ['approvals', { timeout: '5m' }, 'holding calls for approval is not available in this version'],
  ] as const) {
    test(`${section}: exit 1 with one line naming the file, line and field`, async () => {
      const { file, dir } = writeConfig({ servers: { asks: fixture('/dev/null') }, [section]: value } as never);
      try {
        for (const args of [['serve', '-c', file], ['wrap', '-c', file, '--server', 'asks', '--identity', 'alice']]) {
          const p = runPortcullis(args);
          const { code } = await p.exited;
          assert.equal(code, 1, p.output());
          assert.match(p.output(), new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+: ${section}: ${says}, so this setting would do nothing: remove it`));
        }
      } finally {
        dir.remove();
      }
    });
  }
});
