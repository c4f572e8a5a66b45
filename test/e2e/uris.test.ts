// Issue 9 end to end: one resource, one decision, and completions that reveal nothing lists hide.
// Through both fronts (HTTP /mcp/<server> and `portcullis wrap`) against an upstream on the SDK's
// McpServer that resolves URIs as leniently as a file system and records every message it
// received and every file it served: what the gateway refused or denied never got there.
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CompleteResultSchema, EmptyResultSchema, McpError } from '@modelcontextprotocol/sdk/types.js';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolved, uriSpellings } from '../support/uri-spellings.js';
import { connectHttp, connectWrap, ROOT, startConfiguredGateway, tempDir, type ConfiguredGateway, type ServersInput, type WrapSession } from './harness.js';

const FIXTURE = join(ROOT, 'test/fixtures/resources-upstream.ts');
const head = (name: string, def: string) => `apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: ${name} }\nserver: ${name}\ndefault: ${def}\nrules:\n`;
const POLICIES = {
  'open.yaml': `${head('open', 'allow')}
  - name: secret
    effect: deny
    resources: ["file:///tree/secret/**", "tree://host/secret/**"]
  - name: not-for-red
    effect: deny
    prompts: [report]
    when: 'has(args.team) && args.team == "red"'
`,
  'closed.yaml': `${head('closed', 'deny')}
  - name: public
    effect: allow
    resources: ["file:///tree/public/**", "tree://host/public/**", "file:///tree/{+path}", "tree://host/{dir}/{name}"]
    prompts: [report]
`,
};
const SERVERS = ['open', 'closed'] as const;
type ServerName = (typeof SERVERS)[number];
const DENIED_BY: Record<ServerName, string> = { open: 'open/secret', closed: 'closed/default' };

/** Spellings of secret/key.txt that the upstream serves as the secret (it resolves all of these). */
const SECRET_SPELLINGS = [
  'file:///tree/public/../secret/key.txt',
  'file:///tree/public/%2E%2E/secret/key.txt',
  'file:///tree/public/%2e%2e/secret/key.txt',
  'file:///tree/public/.%2E/secret/key.txt',
  'file:///tree/./secret/key.txt',
  'file:///tree//secret/key.txt',
  'file:///tree/public/..%2Fsecret%2Fkey.txt',
  'file:///tree/public\\..\\secret/key.txt',
  'file:///tree/%73ecret/key.txt',
  'file:///tree/sec\tret/key.txt',
  'file:///tree/secret/key.txt\n',
  'file:///tree/sec\r\nret/key.txt',
  ' file:///tree/secret/key.txt',
  'file:///tree/secret/key.txt\u0000',
  'file:///tree/public/..\t/secret/key.txt',
  'file:///tree/public/.\n./secret/key.txt',
  'FILE:///tree/secret/key.txt',
  'File:///tree/secret/key.txt',
  'file://localhost/tree/secret/key.txt',
  'file:/tree/secret/key.txt',
  'file:///tree/secret/key.txt?',
  'file:///tree/secret/key.txt#',
  'file:///tree/secret/key.txt#x',
  'tree://host/public/../secret/key.txt',
  'tree://host/public/..%2Fsecret%2Fkey.txt',
  'tree://HOST/secret/key.txt',
  'tree://user@host/secret/key.txt',
  'tree://host:/secret/key.txt',
  'TREE://host/secret/key.txt',
  'tree://host/sec\tret/key.txt',
];

interface Refusal {
  code: number;
  message: string;
  data?: { rule?: string };
}

/** The JSON-RPC error a request got: an McpError, or (HTTP front, refused before the session) the body of a 400. */
async function refusal(p: Promise<unknown>): Promise<Refusal> {
  try {
    await p;
  } catch (e) {
    if (e instanceof McpError) return { code: e.code, message: e.message, data: e.data as Refusal['data'] };
    if (e instanceof StreamableHTTPError && e.code === 400) return JSON.parse(e.message.slice(e.message.indexOf('{'))).error as Refusal;
    throw e;
  }
  assert.fail('the request succeeded');
}

type Recorded = { method?: string; params?: Record<string, unknown>; served?: string };
const recordOf = (file: string): Recorded[] =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l))
    : [];

const textOf = (r: { contents: unknown[] }) => (r.contents[0] as { text: string }).text;
const complete = (c: Client, ref: Record<string, string>, argument: Record<string, string>, context?: Record<string, string>) =>
  c.request({ method: 'completion/complete', params: { ref, argument, ...(context && { context: { arguments: context } }) } } as never, CompleteResultSchema);

const isSecret = (uri: string) => /^(file:\/\/\/tree|tree:\/\/host)\/secret\//.test(resolved(uri) ?? '');
/** A sample of generated spellings that the upstream resolves to secret files, to run through the real gateway. */
const GENERATED = fc.sample(
  uriSpellings(
    [
      { scheme: 'file', host: '', root: ['tree'] },
      { scheme: 'tree', host: 'host', root: [] },
    ],
    'secret',
  ),
  { numRuns: 150, seed: 9 },
).filter(isSecret);

/** Both fronts, each with its own upstreams and record files: how to reach each server. */
interface Front {
  connect(server: ServerName): Promise<Client>;
  record(server: ServerName): string;
  close(): Promise<void>;
}

function servers(dir: string): ServersInput {
  return Object.fromEntries(
    SERVERS.map((s) => [s, { transport: 'stdio' as const, command: process.execPath, args: ['--import', 'tsx', FIXTURE], cwd: ROOT, env: { RECORD_FILE: join(dir, `${s}.jsonl`) } }]),
  );
}

async function httpFront(): Promise<Front> {
  const dir = tempDir('pcl-uris-');
  const gw: ConfiguredGateway = await startConfiguredGateway({ servers: servers(dir.path), auth: { anonymous: true } }, POLICIES);
  const clients: Client[] = [];
  return {
    connect: async (server) => {
      const c = await connectHttp(gw.url(server));
      clients.push(c);
      return c;
    },
    record: (server) => join(dir.path, `${server}.jsonl`),
    close: async () => {
      for (const c of clients) await c.close().catch(() => undefined);
      await gw.close();
      dir.remove();
    },
  };
}

async function wrapFront(): Promise<Front> {
  const dir = tempDir('pcl-uris-wrap-');
  const sessions: WrapSession[] = [];
  return {
    connect: async (server) => {
      const w = await connectWrap(servers(dir.path), server, { policies: POLICIES });
      sessions.push(w);
      return w.client;
    },
    record: (server) => join(dir.path, `${server}.jsonl`),
    close: async () => {
      for (const w of sessions) await w.close();
      dir.remove();
    },
  };
}

for (const [name, start] of [
  ['HTTP /mcp/<server>', httpFront],
  ['portcullis wrap', wrapFront],
] as const) {
  describe(`URIs and completions through ${name}`, () => {
    let front: Front;
    const clients = {} as Record<ServerName, Client>;
    before(async () => {
      front = await start();
      for (const s of SERVERS) clients[s] = await front.connect(s);
    });
    after(() => front?.close());

    it('canonical URIs decide as the rules say; every other spelling of a secret is refused with -32602 and never reaches the upstream', async () => {
      for (const s of SERVERS) {
        const c = clients[s];
        assert.equal(textOf(await c.readResource({ uri: 'file:///tree/public/a.txt' })), 'public a.txt');
        assert.equal(textOf(await c.readResource({ uri: 'tree://host/public/b.txt' })), 'public b.txt');
        for (const uri of ['file:///tree/secret/key.txt', 'tree://host/secret/plans.txt']) {
          const e = await refusal(c.readResource({ uri }));
          assert.equal(e.code, -32003, uri);
          assert.equal(e.data?.rule, DENIED_BY[s], uri);
        }
        for (const uri of SECRET_SPELLINGS) {
          assert.ok(isSecret(uri), `the upstream would resolve ${JSON.stringify(uri)} to a secret`);
          const e = await refusal(c.readResource({ uri }));
          assert.equal(e.code, -32602, JSON.stringify(uri));
          assert.match(e.message, /params\.uri is not a canonical URI: /, JSON.stringify(uri));
        }
        assert.ok(GENERATED.length > 40, `${GENERATED.length} generated spellings`);
        for (const uri of GENERATED) {
          const e = await refusal(c.readResource({ uri }));
          if (e.code === -32003) assert.equal(e.data?.rule, DENIED_BY[s], `${JSON.stringify(uri)}: ${e.message}`);
          else assert.equal(e.code, -32602, `${JSON.stringify(uri)}: ${e.message}`);
        }
      }
      for (const s of SERVERS) {
        const record = recordOf(front.record(s));
        assert.deepEqual(
          record.filter((r) => r.served).map((r) => r.served),
          ['public/a.txt', 'public/b.txt'],
          `${s}: the upstream served no secret`,
        );
        assert.deepEqual(
          record.filter((r) => r.method === 'resources/read').map((r) => r.params!.uri),
          ['file:///tree/public/a.txt', 'tree://host/public/b.txt'],
          `${s}: the upstream was asked for nothing else`,
        );
      }
    });

    it('subscribe and unsubscribe: the same canonical rule, and denies', async () => {
      for (const s of SERVERS) {
        const c = clients[s];
        for (const method of ['resources/subscribe', 'resources/unsubscribe'] as const) {
          assert.deepEqual(await c.request({ method, params: { uri: 'file:///tree/public/a.txt' } }, EmptyResultSchema), {});
          assert.equal((await refusal(c.request({ method, params: { uri: 'file:///tree/secret/key.txt' } }, EmptyResultSchema))).code, -32003);
          for (const uri of ['file:///tree/public/../secret/key.txt', 'file:///tree/sec\tret/key.txt', 'FILE:///tree/secret/key.txt', 'file:///tree//secret/key.txt']) {
            const e = await refusal(c.request({ method, params: { uri } }, EmptyResultSchema));
            assert.equal(e.code, -32602, `${method} ${JSON.stringify(uri)}`);
          }
        }
        const asked = recordOf(front.record(s))
          .filter((r) => r.method === 'resources/subscribe' || r.method === 'resources/unsubscribe')
          .map((r) => `${r.method} ${r.params!.uri}`);
        assert.deepEqual(asked, ['resources/subscribe file:///tree/public/a.txt', 'resources/unsubscribe file:///tree/public/a.txt'], s);
      }
    });

    it('lists show the public files only', async () => {
      for (const s of SERVERS) {
        const uris = (await clients[s].listResources()).resources.map((r) => r.uri);
        assert.deepEqual(uris, ['file:///tree/public/a.txt', 'file:///tree/public/b.txt'], s);
      }
    });

    it('resource completions: a value is returned only when the URI it completes could be read, whatever the context says', async () => {
      for (const s of SERVERS) {
        const c = clients[s];
        // The upstream offers every path, one through a dot segment too; the caller sees the public ones.
        const paths = await complete(c, { type: 'ref/resource', uri: 'file:///tree/{+path}' }, { name: 'path', value: '' });
        assert.deepEqual(paths.completion.values, ['public/a.txt', 'public/b.txt'], s);
        assert.equal(paths.completion.total, undefined, `${s}: no total that counts hidden values`);
        const tree = { type: 'ref/resource', uri: 'tree://host/{dir}/{name}' };
        assert.deepEqual((await complete(c, tree, { name: 'dir', value: '' })).completion.values, ['public'], s);
        assert.deepEqual((await complete(c, tree, { name: 'name', value: '' }, { dir: 'public' })).completion.values, ['a.txt', 'b.txt'], s);
        // Steered into the secret directory, the upstream answers with its files: none comes back.
        assert.deepEqual((await complete(c, tree, { name: 'name', value: '' }, { dir: 'secret' })).completion.values, [], s);
        assert.deepEqual((await complete(c, tree, { name: 'name', value: 'k' }, { dir: 'secret' })).completion.values, [], s);
        assert.deepEqual((await complete(c, tree, { name: 'name', value: '' }, { dir: '..' })).completion.values, [], s);
        // The template itself must be canonical.
        const e = await refusal(complete(c, { type: 'ref/resource', uri: 'file:///tree/../{+path}' }, { name: 'path', value: '' }));
        assert.equal(e.code, -32602);
        assert.match(e.message, /params\.ref\.uri is not a canonical URI: it holds the dot segment/);
        assert.equal((await refusal(complete(c, tree, { name: 'name', value: '' }, { dir: 1 } as never))).code, -32602);
      }
      // The upstream was asked, and answered with the secret names; the client never saw them.
      const asked = recordOf(front.record('open')).filter((r) => r.method === 'completion/complete');
      assert.ok(asked.some((r) => (r.params!.context as { arguments?: { dir?: string } } | undefined)?.arguments?.dir === 'secret'));
      assert.ok(!asked.some((r) => (r.params!.ref as { uri: string }).uri.includes('..')), 'the non-canonical template was not forwarded');
    });

    it('prompt completions: a value is returned only when prompts/get with it and the context would be allowed', async () => {
      const c = clients.open;
      const ref = { type: 'ref/prompt', name: 'report' };
      assert.deepEqual((await complete(c, ref, { name: 'team', value: '' })).completion.values, ['blue']);
      assert.deepEqual((await complete(c, ref, { name: 'topic', value: '' }, { team: 'blue' })).completion.values, ['roadmap', 'retro']);
      assert.deepEqual((await complete(c, ref, { name: 'topic', value: '' }, { team: 'red' })).completion.values, []);
      assert.deepEqual((await complete(clients.closed, ref, { name: 'topic', value: '' }, { team: 'red' })).completion.values, ['merger', 'layoffs']);
      const e = await refusal(c.getPrompt({ name: 'report', arguments: { team: 'red', topic: 'merger' } }));
      assert.equal(e.data?.rule, 'open/not-for-red');
    });
  });
}
