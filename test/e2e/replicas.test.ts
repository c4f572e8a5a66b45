// Several gateway replicas on one PostgreSQL store: a policy pushed through one replica's admin
// API is in force on every replica within a second (LISTEN/NOTIFY), and a replica that starts
// later loads the version in force.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateApiKey, hashApiKey } from '../../src/auth/api-keys.js';
import { postgresSchema, skipWithoutPostgres } from '../fixtures/postgres.js';
import { ALLOW_ALL_POLICY, connectHttp, raw, startConfiguredGateway, upstreams, waitFor, type ConfiguredGateway } from './harness.js';

const token = generateApiKey();

const policyOf = async (gw: ConfiguredGateway) =>
  (await raw(gw.adminBase!, '/admin/v1/policy', { method: 'GET', headers: { authorization: `Bearer ${token}` } })).json as { version: string | null };

test('a push through one replica is in force on the others within a second', { skip: skipWithoutPostgres }, async (t) => {
  const replicas: ConfiguredGateway[] = [];
  t.after(async () => void (await Promise.all(replicas.map((r) => r.close())))); // before the schema is dropped
  const { url } = await postgresSchema(t);
  const replica = async () => {
    const gw = await startConfiguredGateway({
      servers: { ev: upstreams.everything() },
      policy: { source: 'store' },
      store: { url },
      auth: { anonymous: true },
      admin: { listen: { port: 0 }, tokens: [{ id: 'ci', sha256: hashApiKey(token) }] },
    });
    replicas.push(gw);
    return gw;
  };
  const a = await replica();
  const b = await replica();
  assert.equal((await policyOf(b)).version, null);

  const pushed = await raw(a.adminBase!, '/admin/v1/policy', {
    method: 'PUT',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ files: { 'allow.yaml': ALLOW_ALL_POLICY }, message: 'from CI' }),
  });
  assert.equal(pushed.status, 200, pushed.text);
  const started = performance.now();
  await waitFor('replica b on the pushed version', async () => (await policyOf(b)).version === pushed.json.version, 1_000, 10);
  t.diagnostic(`replica b in force after ${Math.round(performance.now() - started)} ms`);

  // And b decides by it: a call through b is allowed now.
  const client = await connectHttp(b.url('ev'));
  const r = (await client.callTool({ name: 'echo', arguments: { message: 'via b' } })) as { content: { text: string }[] };
  await client.close();
  assert.equal(r.content[0].text, 'Echo: via b');

  // A replica that starts later loads the version in force.
  const c = await replica();
  assert.equal((await policyOf(c)).version, pushed.json.version);
});

test('a call held on one replica is released by an approval given through another; a replica that shuts down withdraws what it holds', { skip: skipWithoutPostgres }, async (t) => {
  const replicas: ConfiguredGateway[] = [];
  t.after(async () => void (await Promise.all(replicas.map((r) => r.close()))));
  const { url } = await postgresSchema(t);
  const approver = generateApiKey();
  const policy = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: gate }
server: "*"
default: deny
rules:
  - { name: echo-needs-approval, effect: approve, tools: [echo], approvers: { groups: [approvers] } }
`;
  const replica = async () => {
    const gw = await startConfiguredGateway(
      {
        servers: { ev: upstreams.everything() },
        store: { url },
        auth: { anonymous: true, apiKeys: [{ id: 'approver', sha256: hashApiKey(approver), groups: ['approvers'] }] },
        admin: { listen: { port: 0 }, tokens: [{ id: 'ci', sha256: hashApiKey(token) }] },
      },
      { 'gate.yaml': policy },
    );
    replicas.push(gw);
    return gw;
  };
  const a = await replica();
  const b = await replica();
  const list = async (gw: ConfiguredGateway, status = 'pending') =>
    (await raw(gw.adminBase!, `/admin/v1/approvals?status=${status}`, { method: 'GET', headers: { authorization: `Bearer ${token}` } })).json.approvals as { id: string; args: { message: string } }[];

  const client = await connectHttp(a.url('ev'));
  const call = client.callTool({ name: 'echo', arguments: { message: 'held on a' } });
  const held = await waitFor('the approval, seen from b', async () => (await list(b)).find((x) => x.args.message === 'held on a'));
  const decided = await raw(b.adminBase!, `/admin/v1/approvals/${held.id}/approve`, { method: 'POST', headers: { authorization: `Bearer ${approver}`, 'content-type': 'application/json' }, body: '{"reason":"ok"}' });
  assert.equal(decided.status, 200, decided.text);
  const started = performance.now();
  assert.equal((await call as { content: { text: string }[] }).content[0].text, 'Echo: held on a');
  t.diagnostic(`released on a ${Math.round(performance.now() - started)} ms after the approval on b`);

  // A held call on a replica that shuts down is withdrawn: cancelled in the store, never forwarded.
  const second = client.callTool({ name: 'echo', arguments: { message: 'held at shutdown' } }).catch((e: Error) => e);
  const pendingAtShutdown = await waitFor('the second approval', async () => (await list(b)).find((x) => x.args.message === 'held at shutdown'));
  await a.close();
  replicas.splice(replicas.indexOf(a), 1);
  assert.ok((await second) instanceof Error || /shut down/.test(JSON.stringify(await second)));
  assert.ok((await list(b, 'cancelled')).some((x) => x.id === pendingAtShutdown.id));
  await client.close().catch(() => undefined);
});
