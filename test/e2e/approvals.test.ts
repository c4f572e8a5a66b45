// Just-in-time approvals through a gateway wired as `portcullis serve` wires it: a call that an
// approve rule catches waits, the upstream receives nothing until an approver decides (proved by
// the upstream's own record), and each outcome (approved, denied, expired, withdrawn) is what the
// client gets, with the decision and its maker in the audit log.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync, existsSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import parsePrometheus from 'parse-prometheus-text-format';
import { generateApiKey, hashApiKey } from '../../src/auth/api-keys.js';
import { methodLabel } from '../../src/observability/metrics.js';
import { CLIENT_INFO, MCP_HEADERS, raw, rawSession, runPortcullis, startConfiguredGateway, tempDir, upstreams, waitFor, type ConfiguredGateway } from './harness.js';

const keys = { agent: generateApiKey(), alice: generateApiKey(), bob: generateApiKey(), carol: generateApiKey(), admin: generateApiKey() };
const WEBHOOK_SECRET = 'a-webhook-secret-of-some-length';

const POLICY = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: payments }
server: "*"
default: deny
rules:
  - { name: small-refunds, effect: allow, tools: [echo], when: "args.amount <= 1000" }
  - name: big-refunds-need-finance
    effect: approve
    tools: [echo]
    when: "args.amount > 1000 && args.amount < 1000000"
    approvers: { groups: [finance], sub: ["admin:named-ops"] }
    message: refunds over 1000 need someone from finance
  - name: huge-refunds-wait-briefly
    effect: approve
    tools: [echo]
    when: "args.amount >= 1000000"
    approvers: { groups: [finance] }
    timeout: 1500ms
`;

interface Received {
  method?: string;
  params?: { name?: string; arguments?: { amount?: number; note?: string } };
}

describe('approvals', () => {
  let gw: ConfiguredGateway;
  const dir = tempDir('pcl-approvals-');
  const record = join(dir.path, 'received.jsonl');
  const hooks: { headers: IncomingHttpHeaders; body: string }[] = [];
  const receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => (hooks.push({ headers: req.headers, body }), res.writeHead(204).end()));
  });

  before(async () => {
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    gw = await startConfiguredGateway(
      {
        servers: { pay: upstreams.raw({ RECORD_FILE: record }) },
        auth: {
          apiKeys: [
            { id: 'agent', sha256: hashApiKey(keys.agent), groups: ['agents'] },
            { id: 'alice', sha256: hashApiKey(keys.alice), groups: ['finance'] },
            { id: 'bob', sha256: hashApiKey(keys.bob), groups: ['ops'] },
            { id: 'carol', sha256: hashApiKey(keys.carol), groups: ['agents', 'finance'] },
          ],
        },
        admin: { listen: { port: 0 }, tokens: [{ id: 'ops', sha256: hashApiKey(keys.admin) }] },
        approvals: { timeout: '30s', webhooks: [{ url: hookUrl, secret: WEBHOOK_SECRET }] },
      },
      { 'payments.yaml': POLICY },
    );
  });
  after(async () => {
    await gw.close();
    receiver.close();
    dir.remove();
  });

  const connect = async (key: string) => {
    const client = new Client(CLIENT_INFO);
    await client.connect(new StreamableHTTPClientTransport(new URL(gw.url('pay')), { requestInit: { headers: { authorization: `Bearer ${key}` } } }));
    return client;
  };
  const admin = (method: string, path: string, key: string, body?: unknown) =>
    raw(gw.adminBase!, path, { method, headers: { authorization: `Bearer ${key}`, ...(body !== undefined && { 'content-type': 'application/json' }) }, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
  const received = (): Received[] => (existsSync(record) ? readFileSync(record, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);
  const calls = (amount: number) => received().filter((m) => m.method === 'tools/call' && m.params?.arguments?.amount === amount);
  const pending = async (key = keys.alice) => (await admin('GET', '/admin/v1/approvals?status=pending', key)).json.approvals as { id: string; args: { amount: number }; requester: { sub: string } }[];
  const approvalFor = (amount: number, key = keys.alice) => waitFor(`the approval of ${amount}`, async () => (await pending(key)).find((a) => a.args.amount === amount));
  const records = async (type: string) => (await admin('GET', `/admin/v1/audit?type=${type}&limit=1000`, keys.admin)).json.records as { actor: string; data: Record<string, any> }[];
  const text = (r: unknown) => (r as { content: { text: string }[] }).content[0].text;

  it('holds the call until an approver approves; the upstream receives it once, exactly as held; the client gets the real result', async () => {
    const client = await connect(keys.agent);
    const progress: string[] = [];
    const call = client.callTool({ name: 'echo', arguments: { amount: 5000, note: 'refund #17' } }, undefined, { onprogress: (p) => progress.push(String(p.message)), timeout: 60_000 });
    const approval = await approvalFor(5000);
    assert.equal(approval.requester.sub, 'agent');
    // The listing shows the stored approval; the held count follows once its audit record is committed.
    await waitFor('the held call in /metrics', async () => /^portcullis_approvals_pending 1$/m.test((await raw(gw.base, '/metrics', { method: 'GET' })).text));
    await waitFor('the progress note', () => progress.some((m) => m.includes(approval.id) && /waiting for approval/.test(m)));
    // Other calls of the same session go on while one is held.
    assert.equal(text(await client.callTool({ name: 'echo', arguments: { amount: 7 } })), JSON.stringify({ amount: 7 }));
    assert.deepEqual(calls(5000), [], 'nothing reached the upstream before the approval');

    // Who may decide: not a non-approver, not an admin token the rule does not name.
    assert.equal((await admin('POST', `/admin/v1/approvals/${approval.id}/approve`, keys.bob, {})).status, 403);
    assert.equal((await admin('POST', `/admin/v1/approvals/${approval.id}/approve`, keys.admin, {})).status, 403);
    assert.deepEqual(await pending(keys.bob), [], 'a non-approver lists nothing');
    assert.ok((await pending(keys.admin)).some((a) => a.id === approval.id), 'an admin token lists everything');

    const ok = await admin('POST', `/admin/v1/approvals/${approval.id}/approve`, keys.alice, { reason: 'customer called' });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.approval.status, 'approved');
    assert.equal(ok.json.approval.decidedBy, 'alice');
    assert.ok(!Number.isNaN(Date.parse(ok.json.approval.decidedAt)));
    assert.equal(text(await call), JSON.stringify({ amount: 5000, note: 'refund #17' }));
    assert.equal(calls(5000).length, 1);
    assert.deepEqual(calls(5000)[0].params?.arguments, { amount: 5000, note: 'refund #17' });

    assert.equal((await admin('POST', `/admin/v1/approvals/${approval.id}/approve`, keys.alice, {})).status, 409, 'decided once');
    assert.equal((await admin('POST', `/admin/v1/approvals/${approval.id}/deny`, keys.alice, {})).status, 409);
    const approved = (await records('approval.approved')).find((r) => r.data.approvalId === approval.id);
    assert.deepEqual([approved?.actor, approved?.data.reason], ['alice', 'customer called']);
    assert.ok((await records('approval.released')).some((r) => r.data.approvalId === approval.id));
    await client.close();
  });

  it('a denial is a tool error naming the approver and the reason; nothing reaches the upstream', async () => {
    const client = await connect(keys.agent);
    const call = client.callTool({ name: 'echo', arguments: { amount: 6000 } });
    const approval = await approvalFor(6000);
    assert.equal((await admin('POST', `/admin/v1/approvals/${approval.id}/deny`, keys.alice, { reason: 'not this customer' })).status, 200);
    const r = (await call) as { isError?: boolean };
    assert.equal(r.isError, true);
    assert.match(text(r), /Denied by approver alice: not this customer/);
    assert.deepEqual(calls(6000), []);
    await client.close();
  });

  it('the requester never decides their own request, even as an approver', async () => {
    const client = await connect(keys.carol);
    const call = client.callTool({ name: 'echo', arguments: { amount: 6500 } });
    const approval = await approvalFor(6500, keys.alice);
    assert.ok(!(await pending(keys.carol)).some((a) => a.id === approval.id), 'not listed for its requester');
    const own = await admin('POST', `/admin/v1/approvals/${approval.id}/approve`, keys.carol, {});
    assert.equal(own.status, 403);
    assert.match(own.json.message, /requester/);
    await admin('POST', `/admin/v1/approvals/${approval.id}/deny`, keys.alice, {});
    await call;
    assert.deepEqual(calls(6500), []);
    await client.close();
  });

  it('two held calls are decided independently', async () => {
    const client = await connect(keys.agent);
    const a = client.callTool({ name: 'echo', arguments: { amount: 2001 } });
    const b = client.callTool({ name: 'echo', arguments: { amount: 2002 } });
    const [pa, pb] = await Promise.all([approvalFor(2001), approvalFor(2002)]);
    await admin('POST', `/admin/v1/approvals/${pb.id}/approve`, keys.alice, {});
    assert.equal(text(await b), JSON.stringify({ amount: 2002 }));
    assert.deepEqual(calls(2001), [], 'the other one still waits');
    await admin('POST', `/admin/v1/approvals/${pa.id}/deny`, keys.alice, { reason: 'duplicate' });
    assert.match(text(await a), /duplicate/);
    assert.deepEqual([calls(2001).length, calls(2002).length], [0, 1]);
    await client.close();
  });

  it('an approval that nobody decides expires: the client hears so within the timeout plus a second', async () => {
    const client = await connect(keys.agent);
    const started = Date.now();
    const r = (await client.callTool({ name: 'echo', arguments: { amount: 1_000_000 } })) as { isError?: boolean };
    const waited = Date.now() - started;
    assert.equal(r.isError, true);
    assert.match(text(r), /expired/);
    assert.ok(waited >= 1_400 && waited < 2_500 + 1_000, `waited ${waited} ms`);
    const expired = (await admin('GET', '/admin/v1/approvals?status=expired', keys.admin)).json.approvals as { id: string; args: { amount: number } }[];
    const mine = expired.find((a) => a.args.amount === 1_000_000)!;
    assert.ok(mine);
    assert.equal((await admin('POST', `/admin/v1/approvals/${mine.id}/approve`, keys.alice, {})).status, 409);
    assert.deepEqual(calls(1_000_000), []);
    await client.close();
  });

  it('a cancelled held call withdraws its approval: nothing is forwarded later', async () => {
    const client = await connect(keys.agent);
    const abort = new AbortController();
    const call = client.callTool({ name: 'echo', arguments: { amount: 3000 } }, undefined, { signal: abort.signal });
    const approval = await approvalFor(3000);
    abort.abort();
    await assert.rejects(call);
    await waitFor('the approval to be cancelled', async () => (await admin('GET', `/admin/v1/approvals/${approval.id}`, keys.alice)).json.approval.status === 'cancelled');
    assert.equal((await admin('POST', `/admin/v1/approvals/${approval.id}/approve`, keys.alice, {})).status, 409);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(calls(3000), []);
    await client.close();
  });

  it('a held call whose client disconnects is withdrawn: nothing is forwarded later', async () => {
    const auth = { authorization: `Bearer ${keys.agent}` };
    const { headers } = await rawSession(gw, 'pay', '2025-11-25', auth);
    const body = JSON.stringify({ jsonrpc: '2.0', id: 41, method: 'tools/call', params: { name: 'echo', arguments: { amount: 4100 } } });
    // The client gives up (its connection closes) while the call is held.
    const gone = raw(gw.base, '/mcp/pay', { headers: { ...MCP_HEADERS, ...headers, ...auth }, body, timeoutMs: 1_500 }).catch((e: Error) => e);
    const approval = await approvalFor(4100);
    assert.ok((await gone) instanceof Error, 'the client gave up');
    await waitFor('the approval to be withdrawn', async () => (await admin('GET', `/admin/v1/approvals/${approval.id}`, keys.alice)).json.approval.status === 'cancelled');
    assert.equal((await admin('POST', `/admin/v1/approvals/${approval.id}/approve`, keys.alice, {})).status, 409);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(calls(4100), []);
  });

  it('a call held by a wrap process on the same SQLite store is released by an approval through serve\'s admin API', async (t) => {
    const w = runPortcullis(['wrap', '-c', gw.file, '--server', 'pay', '--identity', 'agent', '--groups', 'agents']);
    t.after(() => w.stop());
    const lines: { id?: number; result?: { content: { text: string }[] } }[] = [];
    let buf = '';
    w.child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) lines.push(JSON.parse(buf.slice(0, i)));
    });
    const send = (m: unknown) => w.child.stdin!.write(`${JSON.stringify(m)}\n`);
    send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: CLIENT_INFO } });
    await waitFor('initialize', () => lines.find((l) => l.id === 1), 30_000);
    send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    send({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { amount: 7700 } } });
    const approval = await approvalFor(7700);
    assert.equal((await admin('POST', `/admin/v1/approvals/${approval.id}/approve`, keys.alice, { reason: 'via serve' })).status, 200);
    const answer = await waitFor('the released call', () => lines.find((l) => l.id === 2), 10_000);
    assert.equal(answer.result?.content[0].text, JSON.stringify({ amount: 7700 }));
    assert.equal(calls(7700).length, 1);
    w.child.stdin!.end();
    assert.equal((await w.exited).code, 0, w.output());
  });

  it('bad input: an unknown id (404), a malformed body (400), an unknown status (400)', async () => {
    assert.equal((await admin('POST', '/admin/v1/approvals/no-such-id/approve', keys.alice, {})).status, 404);
    assert.equal((await admin('POST', '/admin/v1/approvals/no-such-id/approve', keys.alice, '{"reason": ')).status, 400);
    assert.equal((await admin('POST', '/admin/v1/approvals/no-such-id/approve', keys.alice, { reason: 5 })).status, 400);
    assert.equal((await admin('GET', '/admin/v1/approvals?status=maybe', keys.alice)).status, 400);
    assert.equal((await admin('GET', '/admin/v1/approvals', '')).status, 401);
  });

  it('/metrics, parsed as Prometheus text: requests by closed labels, the policy in force, held calls, audit health', async () => {
    const families = new Map(parsePrometheus((await raw(gw.base, '/metrics', { method: 'GET' })).text).map((f) => [f.name, f]));
    const requests = families.get('portcullis_requests_total')!;
    assert.equal(requests.type, 'COUNTER');
    assert.ok(requests.metrics.some((m) => m.labels.server === 'pay' && m.labels.method === 'tools/call' && m.labels.effect === 'approve' && Number(m.value) >= 1));
    assert.ok(requests.metrics.every((m) => methodLabel(m.labels.method) === m.labels.method), 'every method label is one of the closed set');
    const info = families.get('portcullis_policy_info')!;
    assert.deepEqual(info.metrics.map((m) => [m.value, /^[0-9a-f]{64}$/.test(m.labels.version)]), [['1', true]]);
    assert.equal(families.get('portcullis_approvals_pending')!.metrics[0].value, '0', 'nothing is held once every call is decided');
    assert.equal(families.get('portcullis_audit_healthy')!.metrics[0].value, '1');
    assert.equal(families.get('portcullis_audit_write_failures')!.metrics[0].value, '0');
    assert.equal(families.get('portcullis_request_duration_seconds')!.type, 'HISTOGRAM');
  });

  it('webhooks get each event with a Slack-compatible text and a signature receivers can check', async () => {
    await waitFor('webhook deliveries', () => hooks.some((h) => h.headers['x-portcullis-event'] === 'approval.approved') && hooks.some((h) => h.headers['x-portcullis-event'] === 'approval.requested'));
    for (const h of hooks) {
      const expected = `sha256=${createHmac('sha256', WEBHOOK_SECRET).update(`${h.headers['x-portcullis-timestamp']}.${h.body}`).digest('hex')}`;
      assert.equal(h.headers['x-portcullis-signature'], expected);
    }
    const requested = JSON.parse(hooks.find((h) => h.headers['x-portcullis-event'] === 'approval.requested')!.body);
    assert.match(requested.text, /agent asks to call echo on pay \(rule payments\/big-refunds-need-finance\)/);
    assert.match(requested.links.approve, /\/admin\/v1\/approvals\/.+\/approve$/);
  });
});
