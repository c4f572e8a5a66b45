// The admin API through a gateway wired as `portcullis serve` wires it: policy pushed from CI is
// in force on the next request without a restart, a bad push changes nothing, rollback, dry-run,
// the audit log and the sessions read back, and every call (refused ones too) audited.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { generateApiKey, hashApiKey } from '../../src/auth/api-keys.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ALLOW_ALL_POLICY, CLIENT_INFO, raw, runPortcullis, tempDir, waitFor, startConfiguredGateway, upstreams, type ConfiguredGateway } from './harness.js';

const adminToken = generateApiKey();
const agentKey = generateApiKey();
const opsKey = generateApiKey();

const DENY_ECHO = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: no-echo }
server: "*"
default: allow
rules:
  - { name: never-echo, effect: deny, tools: [echo], message: echo is off }
  - { name: the-rest, effect: allow, tools: ["*"], resources: ["**"], prompts: ["*"], methods: ["*"] }
`;

function admin(gw: ConfiguredGateway, method: string, path: string, body?: unknown, token = adminToken, headers: Record<string, string> = {}) {
  return raw(gw.adminBase!, path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
  });
}

async function echo(gw: ConfiguredGateway, message: string): Promise<{ isError?: boolean; text: string }> {
  const client = new Client(CLIENT_INFO);
  const transport = new StreamableHTTPClientTransport(new URL(gw.url('ev')), { requestInit: { headers: { authorization: `Bearer ${agentKey}` } } });
  await client.connect(transport);
  try {
    const r = (await client.callTool({ name: 'echo', arguments: { message } })) as { isError?: boolean; content: { text: string }[] };
    return { isError: r.isError, text: r.content[0].text };
  } finally {
    await transport.terminateSession(); // DELETE: the session ends (and says so in the audit log)
    await client.close();
  }
}

const records = async (gw: ConfiguredGateway, query: string) => (await admin(gw, 'GET', `/admin/v1/audit?${query}`)).json.records as { seq: number; type: string; actor: string; data: Record<string, any> }[];

describe('admin API with policy from the store', () => {
  let gw: ConfiguredGateway;
  before(async () => {
    gw = await startConfiguredGateway({
      servers: { ev: upstreams.everything() },
      policy: { source: 'store' },
      auth: { apiKeys: [{ id: 'agent', sha256: hashApiKey(agentKey), groups: ['agents'] }, { id: 'ops-person', sha256: hashApiKey(opsKey), groups: ['platform'] }] },
      admin: { listen: { port: 0 }, tokens: [{ id: 'ci', sha256: hashApiKey(adminToken) }], groups: ['platform'] },
    });
  });
  after(() => gw.close());

  it('denies everything until the first push, then decides by what was pushed, without a restart', async () => {
    const before = await echo(gw, 'one');
    assert.equal(before.isError, true);
    assert.match(before.text, /no policy/i);
    const current = await admin(gw, 'GET', '/admin/v1/policy');
    assert.equal(current.status, 200);
    assert.equal(current.json.version, null);
    const notReady = await raw(gw.base, '/readyz', { method: 'GET' });
    assert.equal(notReady.status, 503);
    assert.equal(notReady.json.checks.policy, 'nothing pushed');

    const push = await admin(gw, 'PUT', '/admin/v1/policy', { files: { 'allow.yaml': ALLOW_ALL_POLICY }, message: 'first' });
    assert.equal(push.status, 200, push.text);
    assert.match(push.json.version, /^[0-9a-f]{64}$/);
    assert.equal((await echo(gw, 'two')).text, 'Echo: two');
    assert.equal((await raw(gw.base, '/readyz', { method: 'GET' })).json.checks.policy, undefined, 'ready once a bundle is in force');
    // The version in force, as Prometheus sees it: one series, the pushed version.
    const metrics = (await raw(gw.base, '/metrics', { method: 'GET' })).text.split('\n').filter((l) => l.startsWith('portcullis_policy_info'));
    assert.deepEqual(metrics, [`portcullis_policy_info{version="${push.json.version}"} 1`]);

    const now = await admin(gw, 'GET', '/admin/v1/policy');
    assert.deepEqual(now.json.files, { 'allow.yaml': ALLOW_ALL_POLICY });
    assert.equal(now.json.by, 'ci');
    assert.equal(now.json.message, 'first');
    assert.ok(!Number.isNaN(Date.parse(now.json.loadedAt)));
  });

  it('refuses an invalid bundle with every error (file, line, field) and keeps the old one in force', async () => {
    const inForce = (await admin(gw, 'GET', '/admin/v1/policy')).json.version;
    const broken = `apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: broken }\nserver: "*"\nrules:\n  - { name: a, effect: allow, tools: [x], when: "args.x >" }\n  - { name: b, effect: maybe, tools: [y] }\n`;
    const r = await admin(gw, 'PUT', '/admin/v1/policy', { files: { 'broken.yaml': broken }, message: 'oops' });
    assert.equal(r.status, 422);
    assert.equal(r.json.error, 'policy_invalid');
    assert.ok(r.json.errors.length >= 2, JSON.stringify(r.json.errors));
    for (const e of r.json.errors) {
      assert.equal(e.file, 'broken.yaml');
      assert.equal(typeof e.line, 'number');
    }
    assert.deepEqual(r.json.errors.map((e: { line: number }) => e.line).sort(), [6, 7]);
    assert.equal((await admin(gw, 'GET', '/admin/v1/policy')).json.version, inForce);
    assert.equal((await echo(gw, 'still')).text, 'Echo: still');
  });

  it('keeps the history, newest first, and rolls back as a new entry', async () => {
    const first = (await admin(gw, 'GET', '/admin/v1/policy')).json.version;
    const push = await admin(gw, 'PUT', '/admin/v1/policy', { files: { 'no-echo.yaml': DENY_ECHO }, message: 'echo off' });
    assert.equal(push.status, 200);
    const denied = await echo(gw, 'x');
    assert.equal(denied.isError, true);
    assert.match(denied.text, /echo is off/);

    const back = await admin(gw, 'POST', '/admin/v1/policy/rollback', { version: first });
    assert.equal(back.status, 200, back.text);
    assert.equal(back.json.version, first);
    assert.equal((await echo(gw, 'y')).text, 'Echo: y');

    const history = (await admin(gw, 'GET', '/admin/v1/policy/versions')).json.versions;
    assert.deepEqual(
      history.slice(0, 3).map((v: { version: string; action: string }) => [v.version, v.action]),
      [
        [first, 'rollback'],
        [push.json.version, 'push'],
        [first, 'push'],
      ],
    );
    assert.equal((await admin(gw, 'POST', '/admin/v1/policy/rollback', { version: 'f'.repeat(64) })).status, 404);
  });

  it('lets an identity in admin.groups in; refuses others with 401 or 403, and audits each attempt', async () => {
    assert.equal((await admin(gw, 'GET', '/admin/v1/policy', undefined, opsKey)).status, 200);
    const agent = await admin(gw, 'PUT', '/admin/v1/policy', { files: { 'a.yaml': ALLOW_ALL_POLICY } }, agentKey);
    assert.equal(agent.status, 403);
    assert.equal(agent.json.error, 'forbidden');
    const nobody = await admin(gw, 'PUT', '/admin/v1/policy', { files: { 'a.yaml': ALLOW_ALL_POLICY } }, '');
    assert.equal(nobody.status, 401);
    const wrong = await admin(gw, 'GET', '/admin/v1/policy', undefined, 'not-a-key');
    assert.equal(wrong.status, 401);
    const audited = await records(gw, 'type=admin.request');
    const refused = audited.filter((r) => r.data.status === 403 || r.data.status === 401).map((r) => [r.actor, r.data.method, r.data.path, r.data.status]);
    assert.deepEqual(refused.slice(-3), [
      ['agent', 'PUT', '/admin/v1/policy', 403],
      ['unauthenticated', 'PUT', '/admin/v1/policy', 401],
      ['unauthenticated', 'GET', '/admin/v1/policy', 401],
    ]);
  });

  it('refuses a DNS-rebinding Host and a foreign Origin', async () => {
    assert.equal((await admin(gw, 'GET', '/admin/v1/policy', undefined, adminToken, { host: 'evil.example:8081' })).status, 403);
    assert.equal((await admin(gw, 'GET', '/admin/v1/policy', undefined, adminToken, { origin: 'https://evil.example' })).status, 403);
  });

  it('refuses bad pushes with a clear error and changes nothing', async () => {
    const inForce = (await admin(gw, 'GET', '/admin/v1/policy')).json.version;
    const big = await admin(gw, 'PUT', '/admin/v1/policy', { files: { 'big.yaml': 'x'.repeat(10 * 1024 * 1024) } });
    assert.equal(big.status, 413);
    const many = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`p${i}.yaml`, '']));
    const tooMany = await admin(gw, 'PUT', '/admin/v1/policy', { files: many });
    assert.equal(tooMany.status, 400);
    assert.match(tooMany.json.message, /at most 1000 files/);
    for (const name of ['../escape.yaml', 'a/../../b.yaml', '/etc/passwd.yaml', 'a\\b.yaml', '.hidden.yaml', 'x.txt']) {
      const r = await admin(gw, 'PUT', '/admin/v1/policy', { files: { [name]: ALLOW_ALL_POLICY } });
      assert.equal(r.status, 400, name);
      assert.match(r.json.message, /file names/);
    }
    const badUtf8 = await admin(gw, 'PUT', '/admin/v1/policy', Buffer.concat([Buffer.from('{"files":{"a.yaml":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}}')]));
    assert.equal(badUtf8.status, 400);
    assert.match(badUtf8.json.message, /UTF-8/);
    assert.equal((await admin(gw, 'PUT', '/admin/v1/policy', '{"files": ')).status, 400);
    assert.equal((await admin(gw, 'PUT', '/admin/v1/policy', { files: { 'a.yaml': ALLOW_ALL_POLICY }, extra: 1 })).status, 400);
    assert.equal((await admin(gw, 'DELETE', '/admin/v1/policy')).status, 405);
    assert.equal((await admin(gw, 'GET', '/admin/v1/nothing')).status, 404);
    for (const r of [big, tooMany, badUtf8]) assert.ok(!/at .*\.ts:\d+/.test(r.text), 'no stack in an error');
    assert.equal((await admin(gw, 'GET', '/admin/v1/policy')).json.version, inForce);
  });

  it('serialises concurrent pushes: each audited, one whole bundle in force', async () => {
    const bundles = Array.from({ length: 6 }, (_, i) => ({ [`v${i}.yaml`]: ALLOW_ALL_POLICY.replace('name: test', `name: v${i}`) }));
    const pushes = await Promise.all(bundles.map((files, i) => admin(gw, 'PUT', '/admin/v1/policy', { files, message: `race ${i}` })));
    assert.ok(pushes.every((p) => p.status === 200));
    const now = (await admin(gw, 'GET', '/admin/v1/policy')).json;
    const winner = bundles.findIndex((b) => JSON.stringify(b) === JSON.stringify(now.files));
    assert.ok(winner >= 0, 'the bundle in force is exactly one of the pushed bundles');
    assert.equal(now.version, pushes[winner].json.version);
    const audited = (await records(gw, 'type=admin.request&limit=1000')).filter((r) => r.data.method === 'PUT' && String(r.data.message).startsWith('race'));
    assert.equal(audited.length, 6);
  });

  it('dry-runs a request under the bundle in force or a supplied one', async () => {
    const inForce = await admin(gw, 'POST', '/admin/v1/decide', { identity: { sub: 'alice' }, server: 'ev', tool: 'echo', args: { message: 'hi' } });
    assert.equal(inForce.status, 200, inForce.text);
    assert.equal(inForce.json.effect, 'allow');
    const supplied = await admin(gw, 'POST', '/admin/v1/decide', { identity: { sub: 'alice' }, server: 'ev', tool: 'echo', files: { 'no-echo.yaml': DENY_ECHO } });
    assert.equal(supplied.json.effect, 'deny');
    assert.equal(supplied.json.rule, 'no-echo/never-echo');
    assert.equal(supplied.json.message, 'echo is off');
    assert.ok(Array.isArray(supplied.json.explanation.rules));
    const bad = await admin(gw, 'POST', '/admin/v1/decide', { identity: { sub: 'alice' }, server: 'ev', tool: 'echo', prompt: 'p' });
    assert.equal(bad.status, 400);
  });

  it('answers "was this call denied by that rule" from the audit log, a page at a time, and lists sessions', async () => {
    await admin(gw, 'PUT', '/admin/v1/policy', { files: { 'no-echo.yaml': DENY_ECHO }, message: 'echo off again' });
    await echo(gw, 'secret plan');
    const denials = await records(gw, 'type=decision&tool=echo&effect=deny&server=ev');
    const last = denials[denials.length - 1];
    assert.equal(last.data.rule, 'no-echo/never-echo');
    assert.equal(last.data.identity.sub, 'agent');
    const sessionId = last.data.sessionId as string;

    const page1 = await admin(gw, 'GET', '/admin/v1/audit?type=decision&limit=2');
    assert.equal(page1.json.records.length, 2);
    const page2 = await admin(gw, 'GET', `/admin/v1/audit?type=decision&limit=2&cursor=${page1.json.nextCursor}`);
    assert.ok(page2.json.records[0].seq > page1.json.records[1].seq);
    assert.equal((await admin(gw, 'GET', '/admin/v1/audit?since=yesterday')).status, 400);
    assert.equal((await admin(gw, 'GET', '/admin/v1/audit?cursor=-1')).status, 400);

    // Recordings are written in batches, a moment after the messages.
    const mine = await waitFor('the session listed with its messages', async () => {
      const sessions = (await admin(gw, 'GET', '/admin/v1/sessions?sub=agent&server=ev')).json.sessions as { id: string; sub: string; messages: number }[];
      const s = sessions.find((x) => x.id === sessionId);
      return s && s.messages >= 3 && s;
    });
    assert.equal(mine.sub, 'agent');
    const recording = await admin(gw, 'GET', `/admin/v1/sessions/${sessionId}`);
    assert.equal(recording.status, 200);
    assert.ok(recording.json.messages.some((m: { message: any }) => m.message?.params?.arguments?.message === 'secret plan'));
    assert.equal((await admin(gw, 'GET', '/admin/v1/sessions/nope')).status, 404);

    const verify = await admin(gw, 'GET', '/admin/v1/audit/verify');
    assert.equal(verify.status, 200);
    assert.equal(verify.json.ok, true);
  });
});

describe('admin API with policy from a folder', () => {
  let gw: ConfiguredGateway;
  before(async () => {
    gw = await startConfiguredGateway({
      servers: { ev: upstreams.everything() },
      auth: { anonymous: true },
      admin: { listen: { port: 0 }, tokens: [{ id: 'ci', sha256: hashApiKey(adminToken) }] },
    });
  });
  after(() => gw.close());

  it('shows the folder bundle and refuses pushes, saying why', async () => {
    const current = await admin(gw, 'GET', '/admin/v1/policy');
    assert.equal(current.status, 200);
    assert.deepEqual(Object.keys(current.json.files), ['allow-all.yaml']);
    const push = await admin(gw, 'PUT', '/admin/v1/policy', { files: { 'a.yaml': ALLOW_ALL_POLICY } });
    assert.equal(push.status, 409);
    assert.match(push.json.message, /policy\.source: store/);
  });
});

describe('CI commands against a running gateway', () => {
  let gw: ConfiguredGateway;
  const folder = tempDir('pcl-push-');
  before(async () => {
    gw = await startConfiguredGateway({
      servers: { ev: upstreams.everything() },
      policy: { source: 'store' },
      auth: { apiKeys: [{ id: 'agent', sha256: hashApiKey(agentKey), groups: ['agents'] }] },
      admin: { listen: { port: 0 }, tokens: [{ id: 'ci', sha256: hashApiKey(adminToken) }] },
    });
  });
  after(async () => {
    await gw.close();
    folder.remove();
  });

  const run = async (args: string[]) => {
    const p = runPortcullis(args, { env: { PORTCULLIS_ADMIN_TOKEN: adminToken } });
    let stdout = '';
    let stderr = '';
    p.child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    p.child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const { code } = await p.exited;
    return { code, stdout, stderr };
  };

  it('push: errors with their local file and line and exit 1; a good folder is in force, exit 0', async () => {
    mkdirSync(join(folder.path, 'team'));
    writeFileSync(join(folder.path, 'team', 'bad.yaml'), 'apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: bad }\nserver: "*"\nrules:\n  - { name: a, effect: sometimes, tools: [x] }\n');
    const bad = await run(['push', folder.path, '--url', gw.adminBase!, '-m', 'broken']);
    assert.equal(bad.code, 1, bad.stderr);
    assert.ok(bad.stderr.includes(`${join(folder.path, 'team', 'bad.yaml')}:6`), bad.stderr);
    assert.equal((await echo(gw, 'a')).isError, true, 'nothing pushed: still denied');

    writeFileSync(join(folder.path, 'team', 'bad.yaml'), DENY_ECHO);
    const good = await run(['push', folder.path, '--url', gw.adminBase!, '-m', 'echo off']);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, /pushed: version [0-9a-f]{64} is in force/);
    const denied = await echo(gw, 'b');
    assert.match(denied.text, /echo is off/);

    const refused = await run(['push', folder.path, '--url', gw.adminBase!, '--token', 'wrong']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /401/);
  });

  it('decide --expect checks what the gateway would do; audit query and sessions read its store', async () => {
    const ok = await run(['decide', '--url', gw.adminBase!, '--identity', 'agent', '--server', 'ev', '--tool', 'echo', '--expect', 'deny']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /no-echo\/never-echo/);
    const wrong = await run(['decide', '--url', gw.adminBase!, '--identity', 'agent', '--server', 'ev', '--tool', 'echo', '--expect', 'allow']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /expected allow, the gateway decides deny by no-echo\/never-echo/);

    const q = await run(['audit', 'query', '-c', gw.file, '--type', 'decision', '--tool', 'echo', '--effect', 'deny']);
    assert.equal(q.code, 0, q.stderr);
    const lines = q.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(lines.some((r) => r.data.rule === 'no-echo/never-echo' && r.data.identity.sub === 'agent'));
    assert.ok(lines.every((r) => r.type === 'decision' && r.data.tool === 'echo' && r.data.effect === 'deny'));

    const s = await run(['sessions', '-c', gw.file, '--sub', 'agent', '--json']);
    assert.equal(s.code, 0, s.stderr);
    const sessions = s.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(sessions.length >= 2, s.stdout);
    assert.ok(sessions.every((x) => x.sub === "agent" && x.server === "ev" && x.endedAt), s.stdout);
  });
});
