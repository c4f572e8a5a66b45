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
