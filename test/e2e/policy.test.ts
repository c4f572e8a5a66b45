// Issue 3 end to end: policy decides every message through the real gateway (wired as `serve`
// wires it: policy files, SQLite audit, API-key identities), with the SDK client and real
// upstreams. What is denied is proved at the upstream: a recording fixture logs every line it
// receives, server-filesystem writes (or does not write) files.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CallToolResultSchema, McpError, ResultSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hashApiKey } from '../../src/auth/api-keys.js';
import type { AuditRecord } from '../../src/store/store.js';
import { CLIENT_INFO, ROOT, runPortcullis, startConfiguredGateway, tempDir, upstreams, waitFor, type ConfiguredGateway } from './harness.js';

const FIXTURE = join(ROOT, 'test/fixtures/policy-upstream.mjs');
const KEYS = { alice: 'pcl_test-alice-0123456789', bob: 'pcl_test-bob-0123456789' } as const;
type Who = keyof typeof KEYS;
const apiKeys = [
  { id: 'alice', sha256: hashApiKey(KEYS.alice), groups: ['analysts'] },
  { id: 'bob', sha256: hashApiKey(KEYS.bob), groups: ['ops'] },
];
const CYRILLIC_ECHO = '\u0435cho'; // "еcho": Cyrillic е, then "cho"

const head = (name: string, server: string, def = 'deny') => `apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: ${name} }\nserver: ${server}\ndefault: ${def}\nrules:\n`;

const EVERYTHING_POLICY = `${head('everything', 'everything')}
  - name: analysts-tools
    effect: allow
    who: { groups: [analysts] }
    tools: [echo, get-sum]
  - name: greetings-only
    effect: deny
    tools: [echo]
    when: '!args.message.matches("(?i)^\\\\s*hello\\\\b")'
    message: echo says hello and nothing else
  - name: ops-tools
    effect: allow
    who: { groups: [ops] }
    tools: [get-env, "get-tiny-*", trigger-long-running-operation]
  - name: ops-small-sums
    effect: allow
    who: { groups: [ops] }
    tools: [get-sum]
    when: 'args.a <= 10 && args.b <= 10'
  - name: annotated-needs-a-lead
    effect: approve
    who: { groups: [ops] }
    tools: [get-annotated-message]
    approvers: { groups: [leads] }
    timeout: 400ms
  - name: analysts-docs
    effect: allow
    who: { groups: [analysts] }
    resources: ["demo://resource/static/document/*.md"]
    prompts: [simple-prompt, args-prompt]
  - name: no-atlantis
    effect: deny
    prompts: [args-prompt]
    when: 'args.city == "Atlantis"'
    message: Atlantis is not a city
  - name: ops-dynamic
    effect: allow
    who: { groups: [ops] }
    resources: ["demo://resource/dynamic/text/*", "demo://resource/static/document/startup.md"]
    prompts: [resource-prompt]
`;

const fxPolicy = `${head('fx', 'fx')}
  - name: analysts-echo
    effect: allow
    who: { groups: [analysts] }
    tools: [echo]
  - name: analysts-docs
    effect: allow
    who: { groups: [analysts] }
    resources: ["fixture://docs/*"]
    prompts: [greet]
  - name: ops-secrets
    effect: allow
    who: { groups: [ops] }
    resources: ["fixture://secret/**"]
  - name: deploy-needs-approval
    effect: approve
    tools: [deploy]
    approvers: { groups: [leads] }
    timeout: 400ms
  - name: hello-method
    effect: allow
    methods: [fixture/hello]
`;

const FXOPEN_POLICY = `${head('fxopen', 'fxopen', 'allow')}
  - name: never-wipe
    effect: deny
    tools: [wipe]
    message: wiping is never allowed
`;

const filesPolicy = (dir: string) => `${head('files', 'files')}
  - name: analysts-read
    effect: allow
    who: { groups: [analysts] }
    tools: [read_text_file, list_directory]
  - name: analysts-write-public
    effect: allow
    who: { groups: [analysts] }
    tools: [write_file]
    when: 'args.path.startsWith("${dir}/public/") && !args.path.contains("..")'
`;

async function connect(gw: ConfiguredGateway, server: string, who: Who): Promise<Client> {
  const client = new Client(CLIENT_INFO);
  await client.connect(new StreamableHTTPClientTransport(new URL(gw.url(server)), { requestInit: { headers: { Authorization: `Bearer ${KEYS[who]}` } } }));
  return client;
}

async function auditRecords(gw: ConfiguredGateway): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for await (const r of gw.running.wiring.auditing.store.readAudit()) out.push(r);
  return out;
}

const textOf = (r: unknown) => (((r as { content?: unknown }).content as Array<{ type: string; text?: string }>) ?? []).map((c) => c.text ?? '').join('');

/** The McpError a request rejected with. */
async function rejection(p: Promise<unknown>): Promise<McpError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof McpError, `expected an McpError, got ${String(e)}`);
    return e;
  }
  assert.fail('the request succeeded');
}

/** Every JSON-RPC message the recording fixture received (across every session). */
function received(file: string): Array<{ id?: unknown; method?: string; params?: Record<string, any> }> {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

describe('policy through the gateway', () => {
  let gw: ConfiguredGateway;
  const work = tempDir('pcl-policy-');
  const recordFile = join(work.path, 'received.jsonl');
  const filesDir = join(work.path, 'files');
  const clients: Client[] = [];
  const open = async (server: string, who: Who) => {
    const c = await connect(gw, server, who);
    clients.push(c);
    return c;
  };

  before(async () => {
    mkdirSync(join(filesDir, 'public'), { recursive: true });
    mkdirSync(join(filesDir, 'private'), { recursive: true });
    writeFileSync(join(filesDir, 'public', 'hello.txt'), 'hello');
    const fixture = { transport: 'stdio' as const, command: process.execPath, args: [FIXTURE], env: { RECORD_FILE: recordFile } };
    gw = await startConfiguredGateway(
      { servers: { everything: upstreams.everything(), files: upstreams.filesystem(filesDir), fx: fixture, fxopen: fixture }, auth: { apiKeys } },
      { 'everything.yaml': EVERYTHING_POLICY, 'fx.yaml': fxPolicy, 'fxopen.yaml': FXOPEN_POLICY, 'files.yaml': filesPolicy(filesDir) },
    );
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await gw?.close();
    work.remove();
  });

  it('each identity sees only its own tools, resources, templates and prompts', async () => {
    const alice = await open('everything', 'alice');
    const bob = await open('everything', 'bob');
    const names = async (c: Client) => ({
      tools: (await c.listTools()).tools.map((t) => t.name).sort(),
      resources: (await c.listResources()).resources.map((r) => r.uri).sort(),
      templates: (await c.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate).sort(),
      prompts: (await c.listPrompts()).prompts.map((p) => p.name).sort(),
    });
    const docs = ['architecture', 'extension', 'features', 'how-it-works', 'instructions', 'startup', 'structure'].map((d) => `demo://resource/static/document/${d}.md`);
    assert.deepEqual(await names(alice), { tools: ['echo', 'get-sum'], resources: docs, templates: [], prompts: ['args-prompt', 'simple-prompt'] });
    assert.deepEqual(await names(bob), {
      tools: ['get-annotated-message', 'get-env', 'get-sum', 'get-tiny-image', 'trigger-long-running-operation'],
      resources: ['demo://resource/static/document/startup.md'],
      templates: ['demo://resource/dynamic/text/{resourceId}'],
      prompts: ['resource-prompt'],
    });
  });

  it('hidden items called by name are denied: a tool error naming the rule, -32003 for resources and prompts', async () => {
    const alice = await open('everything', 'alice');
    const bob = await open('everything', 'bob');
    const env = await alice.callTool({ name: 'get-env', arguments: {} });
    assert.equal(env.isError, true);
    assert.equal(textOf(env), 'Denied by policy rule everything/default');
    assert.doesNotMatch(textOf(env), /PATH|HOME/);

    const read = await rejection(bob.readResource({ uri: 'demo://resource/static/document/architecture.md' }));
    assert.equal(read.code, -32003);
    // The SDK prefixes "MCP error -32003: "; the rule is in the text itself, for clients that show only that.
    assert.match(read.message, /Forbidden by policy: Denied by policy rule everything\/default$/);
    const data = read.data as { rule: string; decisionId: string };
    assert.equal(data.rule, 'everything/default');
    assert.match(data.decisionId, /^[0-9a-f-]{36}$/);

    const prompt = await rejection(bob.getPrompt({ name: 'simple-prompt' }));
    assert.equal(prompt.code, -32003);
    assert.equal((prompt.data as { rule: string }).rule, 'everything/default');
    assert.match(prompt.message, /Forbidden by policy: Denied by policy rule everything\/default$/);

    const template = await rejection(alice.readResource({ uri: 'demo://resource/dynamic/text/1' }));
    assert.equal(template.code, -32003);

    // The decisionId of each refusal is the id of its record in the SQLite audit log.
    const records = await auditRecords(gw);
    const rec = records.find((r) => r.type === 'decision' && r.data.decisionId === data.decisionId);
    assert.ok(rec, 'no audit record carries the decisionId');
    assert.equal(rec.actor, 'bob');
    assert.equal(rec.data.effect, 'deny');
    assert.equal(rec.data.rule, 'everything/default');
    assert.equal(rec.data.method, 'resources/read');
    assert.equal(rec.data.resource, 'demo://resource/static/document/architecture.md');
    assert.equal(rec.data.bundleVersion, gw.running.wiring.options.policy.current().version);
    const promptRec = records.find((r) => r.data.decisionId === (prompt.data as { decisionId: string }).decisionId);
    assert.equal(promptRec?.data.prompt, 'simple-prompt');
    assert.equal(promptRec?.data.effect, 'deny');
  });

  it('completions are governed by the prompt or resource template they complete', async () => {
    const alice = await open('everything', 'alice');
    const bob = await open('everything', 'bob');
    const argument = { name: 'city', value: 'P' };
    const ok = await alice.complete({ ref: { type: 'ref/prompt', name: 'args-prompt' }, argument });
    assert.ok(Array.isArray(ok.completion.values));
    const hiddenPrompt = await rejection(alice.complete({ ref: { type: 'ref/prompt', name: 'completable-prompt' }, argument: { name: 'department', value: 'E' } }));
    assert.equal(hiddenPrompt.code, -32003);
    const template = { type: 'ref/resource' as const, uri: 'demo://resource/dynamic/text/{resourceId}' };
    const hiddenTemplate = await rejection(alice.complete({ ref: template, argument: { name: 'resourceId', value: '1' } }));
    assert.equal(hiddenTemplate.code, -32003);
    const allowed = await bob.complete({ ref: template, argument: { name: 'resourceId', value: '1' } });
    assert.ok(Array.isArray(allowed.completion.values));
  });

  it('the audit log the CLI exports holds the decision a refusal names', async () => {
    const bob = await open('everything', 'bob');
    const e = await rejection(bob.getPrompt({ name: 'args-prompt', arguments: { city: 'Paris' } }));
    const { decisionId, rule } = e.data as { decisionId: string; rule: string };
    const store = `sqlite:${join(gw.dir, 'data/portcullis.db')}`;
    assert.ok(existsSync(join(gw.dir, 'data/portcullis.db')));
    const proc = runPortcullis(['audit', 'export', '--store', store]);
    assert.equal((await proc.exited).code, 0, proc.output());
    const lines = proc.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    const rec = lines.find((l) => l.data.decisionId === decisionId);
    assert.ok(rec, `decision ${decisionId} not in the export`);
    assert.equal(rec.type, 'decision');
    assert.equal(rec.data.rule, rule);
    assert.equal(rec.data.prompt, 'args-prompt');
  });

  it('allowed calls reach server-everything and come back; CEL on arguments splits neighbours (including !matches)', async () => {
    const alice = await open('everything', 'alice');
    const bob = await open('everything', 'bob');
    const hello = await alice.callTool({ name: 'echo', arguments: { message: 'HELLO there' } });
    assert.notEqual(hello.isError, true);
    assert.match(textOf(hello), /Echo: HELLO there/);
    const drop = await alice.callTool({ name: 'echo', arguments: { message: 'drop table users' } });
    assert.equal(drop.isError, true);
    assert.equal(textOf(drop), 'Denied by policy rule everything/greetings-only: echo says hello and nothing else');

    const small = await bob.callTool({ name: 'get-sum', arguments: { a: 2, b: 3 } });
    assert.notEqual(small.isError, true);
    assert.match(textOf(small), /5/);
    const big = await bob.callTool({ name: 'get-sum', arguments: { a: 20, b: 3 } });
    assert.equal(big.isError, true);
    assert.equal(textOf(big), 'Denied by policy rule everything/default');

    const paris = await alice.getPrompt({ name: 'args-prompt', arguments: { city: 'Paris' } });
    assert.match(JSON.stringify(paris.messages), /Paris/);
    const atlantis = await rejection(alice.getPrompt({ name: 'args-prompt', arguments: { city: 'Atlantis' } }));
    assert.equal(atlantis.code, -32003);
    assert.equal((atlantis.data as { rule: string }).rule, 'everything/no-atlantis');

    const doc = await alice.readResource({ uri: 'demo://resource/static/document/features.md' });
    assert.equal(doc.contents[0]?.uri, 'demo://resource/static/document/features.md');
    const dyn = await bob.readResource({ uri: 'demo://resource/dynamic/text/1' });
    assert.equal(dyn.contents[0]?.uri, 'demo://resource/dynamic/text/1');
  });

  it('server-filesystem: an allowed write makes the file, a denied one never reaches the server', async () => {
    const alice = await open('files', 'alice');
    const bob = await open('files', 'bob');
    assert.deepEqual((await alice.listTools()).tools.map((t) => t.name).sort(), ['list_directory', 'read_text_file', 'write_file']);
    assert.deepEqual((await bob.listTools()).tools.map((t) => t.name), []);

    const ok = await alice.callTool({ name: 'write_file', arguments: { path: join(filesDir, 'public/ok.txt'), content: 'written' } });
    assert.notEqual(ok.isError, true, textOf(ok));
    assert.equal(readFileSync(join(filesDir, 'public/ok.txt'), 'utf8'), 'written');

    const denied = [join(filesDir, 'private/no.txt'), `${filesDir}/public/../escaped.txt`, join(filesDir, 'public/ok.txt').replace('public', 'Public')];
    for (const path of denied) {
      const r = await alice.callTool({ name: 'write_file', arguments: { path, content: 'must not exist' } });
      assert.equal(r.isError, true, path);
      assert.equal(textOf(r), 'Denied by policy rule files/default');
    }
    const bobWrite = await bob.callTool({ name: 'write_file', arguments: { path: join(filesDir, 'public/bob.txt'), content: 'bob' } });
    assert.equal(bobWrite.isError, true);
    assert.equal(existsSync(join(filesDir, 'private/no.txt')), false);
    assert.equal(existsSync(join(filesDir, 'escaped.txt')), false);
    assert.equal(existsSync(join(filesDir, 'Public')), false);
    assert.equal(existsSync(join(filesDir, 'public/bob.txt')), false);
    assert.equal(readFileSync(join(filesDir, 'public/ok.txt'), 'utf8'), 'written');

    const read = await alice.callTool({ name: 'read_text_file', arguments: { path: join(filesDir, 'public/hello.txt') } });
    assert.equal(textOf(read), 'hello');
  });

  it('names are exact end to end: Echo, "echo ", Cyrillic еcho are other tools, denied and never sent', async () => {
    const alice = await open('fx', 'alice');
    // Only `echo` (and `deploy`, which an approve rule could let anyone use), none of its lookalikes.
    assert.deepEqual((await alice.listTools()).tools.map((t) => t.name), ['echo', 'deploy']);
    const marker = `m-${Date.now()}`;
    const ok = await alice.callTool({ name: 'echo', arguments: { marker } });
    assert.equal(textOf(ok), `called echo {"marker":"${marker}"}`);
    for (const name of ['Echo', 'echo ', CYRILLIC_ECHO, ' echo', 'echo\u200b', 'ech']) {
      const r = await alice.callTool({ name, arguments: { marker } });
      assert.equal(r.isError, true, JSON.stringify(name));
      assert.equal(textOf(r), 'Denied by policy rule fx/default');
    }
    const calls = received(recordFile).filter((m) => m.method === 'tools/call' && m.params?.arguments?.marker === marker);
    assert.deepEqual(
      calls.map((m) => m.params!.name),
      ['echo'],
    );
    // What reached the upstream is the parsed message, the name unchanged.
    assert.deepEqual(calls[0]!.params, { name: 'echo', arguments: { marker } });
  });

  it('resources: URI globs, and spellings that are not canonical refused, at the upstream', async () => {
    const alice = await open('fx', 'alice');
    const bob = await open('fx', 'bob');
    const doc = await alice.readResource({ uri: 'fixture://docs/doc-1.md' });
    assert.equal((doc.contents[0] as { text: string }).text, 'content of fixture://docs/doc-1.md');
    const denied = [
      ['alice', 'fixture://docs/sub/doc-1.md'], // * stays within one segment
      ['alice', 'fixture://secret/s-10.txt'],
      ['bob', 'fixture://docs/doc-2.md'],
    ] as const;
    for (const [who, uri] of denied) {
      const e = await rejection((who === 'alice' ? alice : bob).readResource({ uri }));
      assert.equal(e.code, -32003, uri);
      assert.equal((e.data as { rule: string }).rule, 'fx/default', uri);
    }
    // Dot segments, encoded dots, case: refused before any decision (docs/policy.md, canonical URIs).
    const refused = [
      ['alice', 'fixture://docs/../secret/s-10.txt'],
      ['alice', 'fixture://docs/%2e%2e/secret/s-10.txt'],
      ['alice', 'fixture://docs/./doc-1.md'],
      ['alice', 'Fixture://docs/doc-1.md'],
      ['bob', 'fixture://secret/../docs/doc-1.md'],
    ] as const;
    for (const [who, uri] of refused) {
      const e = await (who === 'alice' ? alice : bob).readResource({ uri }).then(
        () => assert.fail(`${uri} was read`),
        (err: Error) => err,
      );
      assert.match(e.message, /HTTP 400|-32602/, uri);
      assert.match(e.message, /params\.uri is not a canonical URI/, uri);
    }
    const deep = await bob.readResource({ uri: 'fixture://secret/a/b/c.txt' }); // ** crosses segments
    assert.equal((deep.contents[0] as { text: string }).text, 'content of fixture://secret/a/b/c.txt');
    const reads = received(recordFile)
      .filter((m) => m.method === 'resources/read')
      .map((m) => m.params!.uri);
    for (const [, uri] of [...denied, ...refused]) assert.ok(!reads.includes(uri), `${uri} reached the upstream`);
    assert.ok(reads.includes('fixture://docs/doc-1.md'));
    assert.ok(reads.includes('fixture://secret/a/b/c.txt'));
  });

  it('prompts: exact names, hidden ones denied and never sent', async () => {
    const alice = await open('fx', 'alice');
    assert.deepEqual((await alice.listPrompts()).prompts.map((p) => p.name), ['greet']);
    const ok = await alice.getPrompt({ name: 'greet', arguments: { who: 'x' } });
    assert.match(JSON.stringify(ok.messages), /prompt greet/);
    for (const name of ['Greet', 'admin', 'greet ']) {
      const e = await rejection(alice.getPrompt({ name }));
      assert.equal(e.code, -32003, name);
    }
    const gets = received(recordFile).filter((m) => m.method === 'prompts/get').map((m) => m.params!.name);
    assert.deepEqual(gets, ['greet']);
  });

  it('pagination: every page is filtered, the cursor chain is the upstream one, unbroken', async () => {
    const expected = (keep: (uri: string) => boolean) => {
      const all = Array.from({ length: 25 }, (_, i) => (i >= 10 && i < 20 ? `fixture://secret/s-${i}.txt` : `fixture://docs/doc-${i}.md`));
      return [all.slice(0, 10), all.slice(10, 20), all.slice(20)].map((page) => page.filter(keep));
    };
    for (const [who, keep] of [
      ['alice', (u: string) => u.startsWith('fixture://docs/')],
      ['bob', (u: string) => u.startsWith('fixture://secret/')],
    ] as const) {
      const c = await open('fx', who);
      const pages: string[][] = [];
      const cursors: Array<string | undefined> = [];
      let cursor: string | undefined;
      do {
        const r = await c.listResources(cursor === undefined ? {} : { cursor });
        pages.push(r.resources.map((x) => x.uri));
        cursor = r.nextCursor;
        cursors.push(cursor);
      } while (cursor !== undefined && pages.length < 10);
      assert.deepEqual(pages, expected(keep), who);
      assert.deepEqual(cursors, ['offset:10', 'offset:20', undefined], who);
      const templates = (await c.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate);
      assert.deepEqual(templates, [who === 'alice' ? 'fixture://docs/{name}' : 'fixture://secret/{name}']);
    }
    const lists = received(recordFile).filter((m) => m.method === 'resources/list');
    assert.deepEqual(
      lists.map((m) => m.params?.cursor),
      [undefined, 'offset:10', 'offset:20', undefined, 'offset:10', 'offset:20'],
    );
  });

  it('an approve rule holds the call; undecided, it expires: a tool error saying so, nothing sent', async () => {
    const bob = await open('everything', 'bob');
    const r = await bob.callTool({ name: 'get-annotated-message', arguments: { messageType: 'error' } });
    assert.equal(r.isError, true);
    assert.match(textOf(r), /expired/);
    assert.match(textOf(r), /everything\/annotated-needs-a-lead/);

    const alice = await open('fx', 'alice');
    assert.ok((await alice.listTools()).tools.some((t) => t.name === 'deploy'), 'approve rules show the tool');
    const marker = `deploy-${Date.now()}`;
    const d = await alice.callTool({ name: 'deploy', arguments: { marker } });
    assert.equal(d.isError, true);
    assert.match(textOf(d), /Approval .* expired .*\(rule fx\/deploy-needs-approval\)/);
    const approval = (d._meta as Record<string, { status: string; rule: string }>)['portcullis.dev/approval'];
    assert.deepEqual([approval.status, approval.rule], ['expired', 'fx/deploy-needs-approval']);
    const meta = (d._meta as Record<string, { decisionId: string; effect: string }>)['portcullis.dev/decision'];
    assert.equal(meta.effect, 'approve');
    assert.ok(!received(recordFile).some((m) => m.method === 'tools/call' && m.params?.arguments?.marker === marker), 'the held call reached the upstream');
    const rec = (await auditRecords(gw)).find((x) => x.type === 'decision' && x.data.tool === 'deploy');
    assert.equal(rec?.data.effect, 'approve');
    assert.equal(rec?.data.rule, 'fx/deploy-needs-approval');
    assert.equal(rec?.data.decisionId, meta.decisionId, 'the tool result names the audit record of its decision');
  });

  it('unknown methods are denied (-32003) unless a methods rule allows them, even under default allow', async () => {
    const alice = await open('fx', 'alice');
    const hello = await alice.request({ method: 'fixture/hello', params: { n: 1 } }, ResultSchema.passthrough());
    assert.equal((hello as { method?: string }).method, 'fixture/hello');
    for (const method of ['fixture/Hello', 'fixture/hello ', 'fixture/other']) {
      const e = await rejection(alice.request({ method, params: { n: 2 } }, ResultSchema));
      assert.equal(e.code, -32003, method);
      assert.equal((e.data as { rule: string }).rule, '(no rule allows this method)', method);
    }
    const open2 = await open('fxopen', 'alice');
    const e = await rejection(open2.request({ method: 'fixture/hello', params: { n: 3 } }, ResultSchema));
    assert.equal(e.code, -32003);
    // Under default allow, ordinary calls pass and a deny rule names itself and its message.
    const echo = await open2.callTool({ name: 'echo', arguments: { n: 4 } });
    assert.equal(textOf(echo), 'called echo {"n":4}');
    const wipe = await open2.callTool({ name: 'wipe', arguments: { n: 5 } });
    assert.equal(wipe.isError, true);
    assert.equal(textOf(wipe), 'Denied by policy rule fxopen/never-wipe: wiping is never allowed');
    const got = received(recordFile);
    assert.deepEqual(
      got.filter((m) => m.method?.startsWith('fixture/')).map((m) => [m.method, m.params?.n]),
      [['fixture/hello', 1]],
    );
    assert.ok(!got.some((m) => m.method === 'tools/call' && m.params?.name === 'wipe'));
  });
});

describe('hot reload', () => {
  const V1 = `${head('hr', 'everything')}
  - name: ops
    effect: allow
    who: { groups: [ops] }
    tools: [trigger-long-running-operation, echo]
`;
  const V2 = `${head('hr', 'everything')}
  - name: ops
    effect: allow
    who: { groups: [ops] }
    tools: [echo]
`;
  let gw: ConfiguredGateway;
  let client: Client | undefined;
  const errors: string[] = [];

  before(async () => {
    gw = await startConfiguredGateway({ servers: { everything: upstreams.everything() }, auth: { apiKeys }, policy: { path: './policies', watch: true } }, { 'hr.yaml': V1 });
    // The gateway logs a rejected policy change at error level; keep what it logs (the test logger is silent).
    const log = gw.running.wiring.log;
    const original = log.error.bind(log);
    log.error = ((obj: unknown, msg?: string, ...rest: unknown[]) => {
      errors.push(`${msg ?? ''} ${JSON.stringify(obj)}`);
      return (original as (...a: unknown[]) => void)(obj, msg, ...rest);
    }) as typeof log.error;
  });
  after(async () => {
    await client?.close().catch(() => undefined);
    await gw?.close();
  });

  const policyFile = () => join(gw.dir, 'policies', 'hr.yaml');
  const decisions = async () => (await auditRecords(gw)).filter((r) => r.type === 'decision');
  const changes = async () => (await auditRecords(gw)).filter((r) => r.type === 'policy.change');

  it('an edit changes the next decision, not the one in flight', async () => {
    client = await connect(gw, 'everything', 'bob');
    let listChanged = 0;
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => void listChanged++);
    assert.deepEqual((await client.listTools()).tools.map((t) => t.name).sort(), ['echo', 'trigger-long-running-operation']);
    let progressed!: () => void;
    const firstProgress = new Promise<void>((r) => (progressed = r));
    const inFlight = client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 2, steps: 4 } }, CallToolResultSchema, {
      onprogress: () => progressed(),
      timeout: 20_000,
    });
    await firstProgress; // the call is at the upstream
    listChanged = 0; // server-everything announces one of its own after initialize: count only the gateway's
    writeFileSync(policyFile(), V2);
    const [change] = await waitFor('the policy change', async () => {
      const c = await changes();
      return c.length ? c : undefined;
    });
    // The client is told its tool list changed, and the list it gets now is the new policy's.
    await waitFor('notifications/tools/list_changed', () => listChanged > 0);
    assert.deepEqual((await client.listTools()).tools.map((t) => t.name), ['echo']);
    const result = await inFlight;
    assert.notEqual(result.isError, true, textOf(result));
    assert.match(textOf(result), /completed/i);
    const next = await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 0.1, steps: 1 } });
    assert.equal(next.isError, true);
    assert.equal(textOf(next), 'Denied by policy rule hr/default');
    // Each was decided under exactly one version: the first under the old, the next under the new.
    const [first, second] = (await decisions()).filter((d) => d.data.tool === 'trigger-long-running-operation');
    assert.equal(first!.data.effect, 'allow');
    assert.equal(first!.data.bundleVersion, change!.data.previous);
    assert.equal(second!.data.effect, 'deny');
    assert.equal(second!.data.bundleVersion, change!.data.version);
  });

  it('a broken edit (invalid YAML, a CEL syntax error) is refused and logged; the old policy stays in force', async () => {
    client ??= await connect(gw, 'everything', 'bob');
    const before = (await changes()).length;
    const inForce = (await changes()).at(-1)!.data.version;
    const broken = [
      ['invalid YAML', `${head('hr', 'everything')}  - name: ops\n    effect: [allow\n`],
      ['a CEL syntax error', `${head('hr', 'everything')}  - name: nope\n    effect: deny\n    tools: [echo]\n    when: 'args.message.matches('\n`],
    ] as const;
    for (const [what, text] of broken) {
      const logged = errors.length;
      writeFileSync(policyFile(), text);
      await waitFor(`the ${what} to be logged`, () => errors.length > logged);
      assert.match(errors.at(-1)!, /policy change rejected/, what);
      assert.match(errors.at(-1)!, /hr\.yaml/, what);
      // The previous version still decides: echo allowed, the long operation denied.
      const echo = await client.callTool({ name: 'echo', arguments: { message: what } });
      assert.notEqual(echo.isError, true, what);
      assert.match(textOf(echo), new RegExp(`Echo: ${what}`));
      const long = await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 0.1, steps: 1 } });
      assert.equal(long.isError, true, what);
      const last = (await decisions()).at(-1)!;
      assert.equal(last.data.bundleVersion, inForce, what);
    }
    assert.equal((await changes()).length, before, 'a broken edit became a version');
    // The watch survives: a good edit after the broken ones takes effect.
    writeFileSync(policyFile(), `${head('hr', 'everything')}  - { name: nothing, effect: allow, tools: [get-env], who: { groups: [nobody] } }\n`);
    await waitFor('the good edit', async () => (await changes()).length > before);
    const echo = await client.callTool({ name: 'echo', arguments: { message: 'after' } });
    assert.equal(echo.isError, true);
    assert.equal(textOf(echo), 'Denied by policy rule hr/default');
  });
});
