// "What the gateway decides is what the upstream receives" (SPEC 10): a fixture upstream records
// every raw line; a tools/call with duplicate keys, "__proto__", unicode escapes, big numbers and
// look-alike names must reach it as exactly the parsed message the policy decided on, serialised
// again, and the audit record's argsDigest must describe those very arguments.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { digestArgs } from '../../src/audit/chain.js';
import { MCP_HEADERS, post, raw, rawSession, startTestGateway, tempDir, upstreams, waitFor, type TestGateway } from './harness.js';

const dir = tempDir('pcl-fidelity-');
const RECORD = join(dir.path, 'received.jsonl');
let gw: TestGateway;
let s: Awaited<ReturnType<typeof rawSession>>;

before(async () => {
  gw = await startTestGateway({ rec: upstreams.raw({ RECORD_FILE: RECORD }) });
  s = await rawSession(gw, 'rec');
});
after(async () => {
  await gw?.close();
  dir.remove();
});

const received = (): any[] => readFileSync(RECORD, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const receivedLines = (): string[] => readFileSync(RECORD, 'utf8').trim().split('\n');

/** Sends a raw body; returns the line the upstream received for it (by id) and the decision input. */
async function roundTrip(id: string, body: string) {
  const decided = gw.decisions.length;
  const res = await post(gw, 'rec', body, s.headers);
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.id, id, res.text);
  const index = receivedLines().findIndex((l) => JSON.parse(l).id === id);
  assert.ok(index >= 0, `the upstream never received ${id}`);
  const line = receivedLines()[index];
  assert.equal(gw.decisions.length, decided + 1, 'exactly one decision per message');
  const input = gw.decisions[decided];
  const record = gw.audit.filter((r) => r.type === 'decision' && r.data.requestId === id);
  assert.equal(record.length, 1, 'exactly one audit record for the decision');
  return { line, input, record: record[0], reply: res.json };
}

describe('the upstream receives the decided message, re-serialised', () => {
  test('duplicate keys, "__proto__", unicode escapes, big numbers', async () => {
    const body =
      '{"jsonrpc":"2.0","id":"t1","method":"tools/call","params":{"name":"echo","arguments":{' +
      '"path":"/safe/file","path":"/etc/shadow",' + // duplicate key: the last one wins, for policy and upstream alike
      '"__proto__":{"isAdmin":true},' +
      '"esc":"\\u0041\\u00e9\\ud83d\\ude00\\u0000\\u2028",' +
      '"big":12345678901234567890,"neg0":-0,"float":0.1,"tiny":1e-400,' +
      '"nested":{"a":[1,{"b":null}],"a":"second"}' +
      '}}}';
    const { line, input, record, reply } = await roundTrip('t1', body);
    const parsed = JSON.parse(body);
    // The upstream got JSON.parse(body) re-serialised: same message, never the raw bytes.
    assert.equal(line, JSON.stringify(parsed));
    assert.notEqual(line, body);
    const got = JSON.parse(line);
    assert.equal(got.params.arguments.path, '/etc/shadow');
    assert.equal(Object.getPrototypeOf(got.params.arguments), Object.prototype);
    assert.deepEqual(Object.keys(got.params.arguments), ['path', '__proto__', 'esc', 'big', 'neg0', 'float', 'tiny', 'nested']);
    assert.equal(got.params.arguments.esc, 'Aé😀\u0000\u2028');
    assert.equal(got.params.arguments.big, 12345678901234567000);
    assert.equal(got.params.arguments.tiny, 0);
    assert.deepEqual(got.params.arguments.nested, { a: 'second' });
    // Policy decided on those very arguments.
    assert.equal(input.tool, 'echo');
    assert.equal(JSON.stringify(input.args), JSON.stringify(parsed.params.arguments));
    assert.equal((input.args as Record<string, unknown>).path, '/etc/shadow');
    assert.ok(Object.hasOwn(input.args!, '__proto__'));
    assert.equal(({} as Record<string, unknown>).isAdmin, undefined, 'no prototype was polluted');
    // The audit record describes them: its digest is the digest of what the upstream received.
    assert.equal(record.data.argsDigest, digestArgs(got.params.arguments));
    assert.equal(record.data.tool, 'echo');
    assert.equal(record.data.effect, 'allow');
    // And the client got the upstream's answer for it.
    assert.deepEqual(JSON.parse(reply.result.content[0].text), got.params.arguments);
  });

  for (const [what, value, why] of [
    ['a number JSON cannot carry (1e400 parses to Infinity, would be forwarded as null)', '1e400', /number out of range/],
    ['a lone surrogate (not valid Unicode)', '"\\ud800"', /surrogate/],
  ] as const) {
    test(`${what} is refused as invalid params, not forwarded`, async () => {
      const before = receivedLines().length;
      const res = await post(gw, 'rec', `{"jsonrpc":"2.0","id":"odd","method":"tools/call","params":{"name":"echo","arguments":{"v":${value}}}}`, s.headers);
      assert.equal(res.json?.id, 'odd', res.text);
      assert.ok(res.json.error, res.text);
      assert.match(res.json.error.message, why);
      assert.equal(res.json.error.code, -32602, 'a message problem, not an audit outage');
      await post(gw, 'rec', { jsonrpc: '2.0', id: 'sync-odd', method: 'ping' }, s.headers);
      assert.deepEqual(received().slice(before).map((m) => m.id), ['sync-odd']);
    });
  }

  test('names are not normalised: look-alike tool names reach the upstream as sent and are decided as sent', async () => {
    const names = ['echo ', ' echo', 'ECHO', 'e\u0301cho', 'éch\u200bo', 'echo\u0000', 'ｅｃｈｏ'];
    for (const [i, name] of names.entries()) {
      const id = `n${i}`;
      const { line, input, record, reply } = await roundTrip(id, JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } }));
      assert.equal(JSON.parse(line).params.name, name);
      assert.equal(input.tool, name);
      assert.equal(record.data.tool, name);
      assert.equal(reply.error?.message, `unknown tool ${name}`); // the upstream, not the gateway, judged the name
    }
  });

  test('resource URIs are decided and forwarded exactly as sent; one that is not canonical is refused, not rewritten', async () => {
    const uri = 'file:///srv/caf%C3%A9/report%202026.txt?x=%2F&y=%3D';
    const r = await post(gw, 'rec', { jsonrpc: '2.0', id: 'u1', method: 'resources/read', params: { uri } }, s.headers);
    assert.equal(r.status, 200);
    const line = received().find((m) => m.id === 'u1');
    assert.equal(line.params.uri, uri);
    assert.equal(gw.decisions.at(-1)!.resource, uri);
    const odd = 'file:///srv/../etc/passwd';
    const refused = await post(gw, 'rec', { jsonrpc: '2.0', id: 'u2', method: 'resources/read', params: { uri: odd } }, s.headers);
    assert.equal(refused.json.error.code, -32602);
    assert.match(refused.json.error.message, /not a canonical URI: it holds the dot segment "\.\."/);
    assert.equal(received().find((m) => m.id === 'u2'), undefined);
    assert.notEqual(gw.decisions.at(-1)!.resource, odd);
  });

  test('the id and _meta pass through unchanged, the message order is kept', async () => {
    const before = receivedLines().length;
    const ids = [0, 2 ** 53 - 1, -7, 'x'.repeat(200), 'ü'];
    for (const id of ids) {
      const res = await post(gw, 'rec', { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: { id }, _meta: { progressToken: `p-${String(id).length}`, 'vendor.example/trace': { deep: [1] } } } }, s.headers);
      assert.equal(res.json.id, id);
    }
    const lines = received().slice(before);
    assert.deepEqual(lines.map((m) => m.id), ids);
    assert.deepEqual(lines[1].params._meta, { progressToken: 'p-16', 'vendor.example/trace': { deep: [1] } });
  });

  test('a notification (cancelled) reaches the upstream as sent, after the request it cancels', async () => {
    const call = raw(gw.base, '/mcp/rec', { headers: { ...MCP_HEADERS, ...s.headers }, body: JSON.stringify({ jsonrpc: '2.0', id: 'c1', method: 'tools/call', params: { name: 'hang', arguments: {} } }), timeoutMs: 1_500 });
    await waitFor('the hang call upstream', () => received().some((m) => m.id === 'c1'));
    const note = await post(gw, 'rec', { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 'c1', reason: 'user pressed stop' } }, s.headers);
    assert.equal(note.status, 202);
    const got = await waitFor('the cancellation upstream', () => received().find((m) => m.method === 'notifications/cancelled'));
    assert.deepEqual(got, { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 'c1', reason: 'user pressed stop' } });
    // The cancelled request gets no answer (MCP), not even an error, and its stream is closed
    // rather than held open until the session ends.
    const answered = await call;
    assert.equal(answered.status, 200);
    assert.deepEqual(answered.messages.filter((m) => m.id === 'c1'), []);
    assert.ok([...gw.gateway.sessions.values()].every((x) => !x.busy));
    // The session still answers.
    const ping = await post(gw, 'rec', { jsonrpc: '2.0', id: 'after', method: 'ping' }, s.headers);
    assert.deepEqual(ping.json, { jsonrpc: '2.0', id: 'after', result: {} });
  });

  test('a client cannot inject a response the upstream never asked for', async () => {
    const before = receivedLines().length;
    const res = await post(gw, 'rec', { jsonrpc: '2.0', id: 'never-asked', result: { roots: [] } }, s.headers);
    assert.equal(res.status, 202);
    await post(gw, 'rec', { jsonrpc: '2.0', id: 'sync2', method: 'ping' }, s.headers);
    const lines = received().slice(before);
    assert.deepEqual(lines.map((m) => m.id), ['sync2']);
  });

  test('DELETE ends the session: the upstream stops receiving, the id is gone', async () => {
    const t = await rawSession(gw, 'rec');
    assert.equal((await raw(gw.base, '/mcp/rec', { method: 'DELETE', headers: t.headers })).status, 200);
    assert.equal((await post(gw, 'rec', { jsonrpc: '2.0', id: 1, method: 'ping' }, t.headers)).status, 404);
  });
});
