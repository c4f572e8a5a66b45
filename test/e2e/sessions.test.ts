// Issue 10 end to end: a session is bound to the credential that opened it; every request is
// decided, filtered and audited with its own identity; a refused initialize allocates nothing; one
// credential cannot take every session; a request id reused while in flight is refused before it
// is decided. Through the real gateway, a real OIDC provider (oidc-provider) and the raw upstream,
// which records every line it receives and the pid of every process started.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { generateApiKey, hashApiKey } from '../../src/auth/api-keys.js';
import { startTestIssuer, type TestIssuer } from '../support/oidc-test-issuer.js';
import { policyPoint } from '../../src/gateway/decide.js';
import { compileBundle } from '../../src/policy/compile.js';
import { INIT_PARAMS, MCP_HEADERS, post, raw, rawSession, rawWrap, startTestGateway, tempDir, upstreams, waitFor, type RawResponse, type TestGateway } from './harness.js';

/** group-a may call echo, group-b may call slow; protocol methods for everyone. */
const POLICY = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: sessions }
server: "*"
default: deny
rules:
  - { name: housekeeping, effect: allow, methods: ["*"] }
  - { name: echo-for-a, effect: allow, who: { groups: [group-a] }, tools: [echo] }
  - { name: slow-for-b, effect: allow, who: { groups: [group-b] }, tools: [slow] }
`;
const BUNDLE = compileBundle({ 'sessions.yaml': POLICY });
const VISIBLE = { a: ['echo'], b: ['slow'] } as const;
const AUDIENCE = 'portcullis-sessions';
const CAP = 3;
/** Three API keys with one configured sub: three credentials all the same. */
const keys = { a: generateApiKey(), b: generateApiKey(), c: generateApiKey() };
const apiKeys = [
  { id: 'key-a', sub: 'shared', sha256: hashApiKey(keys.a), groups: ['group-a'] },
  { id: 'key-b', sub: 'shared', sha256: hashApiKey(keys.b), groups: ['group-b'] },
  { id: 'key-c', sub: 'shared', sha256: hashApiKey(keys.c), groups: ['group-a'] },
];

let idp: TestIssuer;
let gw: TestGateway;
const files = tempDir('pcl-sessions-');
const PIDS = join(files.path, 'pids');
const RECEIVED = join(files.path, 'received');

before(async () => {
  idp = await startTestIssuer();
  gw = await startTestGateway(
    { raw: upstreams.raw({ PID_FILE: PIDS, RECORD_FILE: RECEIVED }) },
    {
      policy: policyPoint({ current: () => BUNDLE }),
      auth: { oidc: { issuer: idp.issuer, audience: AUDIENCE }, apiKeys },
      // A reply routed to the wrong request would leave the right one waiting: fail fast, not in 60 s.
      limits: { maxSessionsPerIdentity: CAP, upstreamTimeout: '5s' },
    },
  );
});
after(async () => {
  await gw?.close();
  await idp?.stop();
  files.remove();
});

// ---------------------------------------------------------------------------------------------
// helpers

const now = () => Math.floor(Date.now() / 1000);
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A token of the provider for `sub` with these groups. */
const tokenOf = (sub: string, groups: string[]) => idp.sign({ sub, iss: idp.issuer, aud: AUDIENCE, iat: now(), exp: now() + 900, groups, jti: Math.random().toString(36) });
const open = async (auth: Record<string, string>) => (await rawSession(gw, 'raw', undefined, auth)).headers;
const end = (headers: Record<string, string>) => raw(gw.base, '/mcp/raw', { method: 'DELETE', headers });
const callTool = (headers: Record<string, string>, id: string | number, name: string, args: Record<string, unknown>) => post(gw, 'raw', { jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } }, headers);
const textOf = (m: any): string => m.result.content.map((c: { text: string }) => c.text).join('\n');
const pids = () => (existsSync(PIDS) ? readFileSync(PIDS, 'utf8').trim().split('\n').filter(Boolean) : []);
/** Every tools/call the upstream received, as [tool, tag]. */
const received = (): Array<[string, unknown]> =>
  (existsSync(RECEIVED) ? readFileSync(RECEIVED, 'utf8').trim().split('\n').filter(Boolean) : [])
    .map((l) => JSON.parse(l))
    .filter((m) => m.method === 'tools/call')
    .map((m) => [m.params.name, m.params.arguments?.tag]);

/** The answer to request `id` in a response (an SSE body may carry other messages first). */
function answerTo(res: RawResponse, id: unknown): any {
  const m = res.messages.find((x) => x?.id === id && ('result' in x || 'error' in x));
  assert.ok(m, `no answer to ${JSON.stringify(id)} in ${res.status} ${res.text}`);
  return m;
}

/** A JSON-RPC refusal with this HTTP status, and no session for it. */
function assertRefused(res: RawResponse, status: number, code: number, message: RegExp, what: string): void {
  assert.equal(res.status, status, `${what}: ${res.text}`);
  assert.equal(res.headers['mcp-session-id'], undefined, `${what}: no session`);
  assert.equal(res.json?.jsonrpc, '2.0', `${what}: a JSON-RPC body`);
  assert.equal(res.json.error.code, code, `${what}: ${res.text}`);
  assert.match(res.json.error.message, message, what);
}

// ---------------------------------------------------------------------------------------------

describe('a session is bound to the credential that opened it', () => {
  test('two API keys with one sub: the other key gets 404 on POST, GET and DELETE, nothing reaches the upstream, the owner goes on', async () => {
    const a = await open(bearer(keys.a));
    const b = await open(bearer(keys.b));
    for (const [owner, thief, tag] of [[a, keys.b, 'thief-b'], [b, keys.a, 'thief-a']] as const) {
      const h = { ...owner, ...bearer(thief) };
      const res = await callTool(h, 1, 'echo', { tag });
      assertRefused(res, 404, -32001, /Session not found/, `${tag} POST`);
      assert.equal((await raw(gw.base, '/mcp/raw', { method: 'GET', headers: { ...h, accept: 'text/event-stream' } })).status, 404, `${tag} GET`);
      assert.equal((await end(h)).status, 404, `${tag} DELETE`);
      assert.ok(!received().some(([, t]) => t === tag), `${tag} reached the upstream`);
    }
    // Not ended by the other key's DELETE; each decided by its own key's groups.
    assert.equal(textOf(answerTo(await callTool(a, 2, 'echo', { tag: 'owner-a' }), 2)), '{"tag":"owner-a"}');
    assert.equal(textOf(answerTo(await callTool(b, 2, 'slow', { tag: 'owner-b' }), 2)), 'slow done: owner-b');
    // The audit log names the key, not just the shared sub.
    for (const [h, keyId, group] of [[a, 'key-a', 'group-a'], [b, 'key-b', 'group-b']] as const) {
      const start = gw.audit.find((r) => r.type === 'session.start' && r.data.sessionId === h['mcp-session-id']);
      assert.deepEqual(start?.data.identity, { sub: 'shared', keyId, groups: [group], via: 'api-key' });
      const decision = gw.audit.find((r) => r.type === 'decision' && r.data.sessionId === h['mcp-session-id'] && r.data.requestId === 2);
      assert.deepEqual(decision?.data.identity, { sub: 'shared', keyId, groups: [group] });
    }
    assert.equal((await end(a)).status, 200);
    assert.equal((await end(b)).status, 200);
  });

  test('one OIDC subject with two tokens of different groups on one session: every request decided, filtered and audited with its own token (many interleavings, no crossing)', async () => {
    const tokens = { a: await tokenOf('dana', ['group-a']), b: await tokenOf('dana', ['group-b']) };
    // Same issuer and subject: the same principal, so one session serves both tokens.
    const session = await open(bearer(tokens.a));
    const sid = session['mcp-session-id'];
    const whoSent = new Map<number, 'a' | 'b'>();
    let nextId = 1;
    const op = fc.record({ who: fc.constantFrom('a' as const, 'b' as const), kind: fc.constantFrom('list', 'echo', 'slow'), delay: fc.integer({ min: 0, max: 12 }), ms: fc.integer({ min: 0, max: 15 }) });
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 2, maxLength: 16 }), async (ops) => {
        const results = await Promise.all(
          ops.map(async (o) => {
            await sleep(o.delay);
            const id = nextId++;
            whoSent.set(id, o.who);
            const tag = `${o.who}-${id}`;
            const h = { ...session, ...bearer(tokens[o.who]) };
            const res =
              o.kind === 'list'
                ? await post(gw, 'raw', { jsonrpc: '2.0', id, method: 'tools/list' }, h)
                : await callTool(h, id, o.kind, o.kind === 'slow' ? { ms: o.ms, tag } : { tag });
            return { o, id, tag, res };
          }),
        );
        for (const { o, id, tag, res } of results) {
          assert.equal(res.status, 200, res.text);
          const m = answerTo(res, id);
          const allowed = VISIBLE[o.who].includes(o.kind as never);
          if (o.kind === 'list') assert.deepEqual(m.result.tools.map((t: { name: string }) => t.name), VISIBLE[o.who], `${o.who}'s list`);
          else if (!allowed) {
            assert.equal(m.result.isError, true, `${o.kind} by ${o.who} must be denied: ${res.text}`);
            assert.match(textOf(m), /Denied by policy rule sessions\/default/);
          } else assert.equal(textOf(m), o.kind === 'echo' ? JSON.stringify({ tag }) : `slow done: ${tag}`);
        }
      }),
      { numRuns: 30 },
    );
    // The audit log: every request's decision names the groups of the token that sent it.
    const decisions = gw.audit.filter((r) => r.type === 'decision' && r.data.sessionId === sid && whoSent.has(r.data.requestId as number));
    assert.equal(decisions.length, whoSent.size, 'one decision per request');
    for (const d of decisions) assert.deepEqual(d.data.identity, { sub: 'dana', groups: [`group-${whoSent.get(d.data.requestId as number)}`] }, `request ${d.data.requestId}`);
    // The upstream: echo only ever from a's token, slow only from b's.
    const calls = received().filter(([, tag]) => typeof tag === 'string' && /^[ab]-\d+$/.test(tag));
    assert.ok(calls.length > 0);
    for (const [tool, tag] of calls) assert.equal(tool, (tag as string).startsWith('a-') ? 'echo' : 'slow', `${tool} ${tag} reached the upstream`);
    assert.equal((await end(session)).status, 200);
  });
});

describe('validate before allocating: a refused initialize starts nothing', () => {
  test('wrong Accept, media type, JSON, envelope or initialize shape: refused with a JSON-RPC error, no upstream process, no session, no audit record', async () => {
    const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: INIT_PARAMS };
    const send = (body: unknown, headers: Record<string, string> = {}) =>
      raw(gw.base, '/mcp/raw', { headers: { ...MCP_HEADERS, ...bearer(keys.a), ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
    const cases: Array<[string, () => Promise<RawResponse>, number, number, RegExp]> = [
      ['Accept without text/event-stream', () => send(INIT, { accept: 'application/json' }), 406, -32600, /Accept/],
      ['Accept without application/json', () => send(INIT, { accept: 'text/event-stream' }), 406, -32600, /Accept/],
      ['Content-Type text/plain', () => send(INIT, { 'content-type': 'text/plain' }), 415, -32600, /Content-Type/],
      ['not JSON', () => send('{"jsonrpc":"2.0","id":1,"method":"initialize"'), 400, -32700, /Parse error/],
      ['a batch', () => send([INIT]), 400, -32600, /batch/],
      ['clientInfo without name and version', () => send({ ...INIT, params: { ...INIT_PARAMS, clientInfo: {} } }), 400, -32602, /^initialize: params\.clientInfo\.name/],
      ['capabilities not an object', () => send({ ...INIT, params: { ...INIT_PARAMS, capabilities: 'all' } }), 400, -32602, /capabilities/],
      ['a progress token that is an object', () => send({ ...INIT, params: { ...INIT_PARAMS, _meta: { progressToken: {} } } }), 400, -32600, /params\._meta\.progressToken/],
      ['no params', () => send({ jsonrpc: '2.0', id: 1, method: 'initialize' }), 400, -32602, /initialize/],
    ];
    const pidsBefore = pids().length;
    const auditBefore = gw.audit.length;
    const sessionsBefore = gw.gateway.sessions.size;
    for (const [what, make, status, code, message] of cases) assertRefused(await make(), status, code, message, what);
    // A process that was started would have written its pid at once; give it the time to.
    await sleep(300);
    assert.equal(pids().length, pidsBefore, 'an upstream process was started for a refused initialize');
    assert.equal(gw.gateway.sessions.size, sessionsBefore);
    assert.deepEqual(gw.audit.slice(auditBefore), [], 'nothing recorded for a refused initialize');
    // The same initialize, well formed, does start one.
    const ok = await send(INIT);
    assert.equal(ok.status, 200, ok.text);
    await waitFor('the upstream to start', () => pids().length === pidsBefore + 1);
    assert.equal((await end({ ...bearer(keys.a), 'mcp-session-id': ok.headers['mcp-session-id'] as string })).status, 200);
  });

  test('in an open session, a request the transport would refuse is refused before it takes its id', async () => {
    const s = await open(bearer(keys.a));
    const res = await post(gw, 'raw', { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'echo', arguments: { tag: 'bad-version' } } }, { ...s, 'mcp-protocol-version': '1999-01-01' });
    assertRefused(res, 400, -32600, /unsupported MCP-Protocol-Version "1999-01-01"/, 'protocol version');
    const again = await post(gw, 'raw', { jsonrpc: '2.0', id: 5, method: 'initialize', params: INIT_PARAMS }, s);
    assertRefused(again, 400, -32600, /already initialized/, 're-initialize');
    // …and one the transport itself refuses (a progress token must be a string or a number).
    const badMeta = await post(gw, 'raw', { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'echo', arguments: { tag: 'bad-meta' }, _meta: { progressToken: {} } } }, s);
    assert.equal(badMeta.status, 400, badMeta.text);
    // Id 5 was not left taken by any of the refusals.
    assert.equal(textOf(answerTo(await callTool(s, 5, 'echo', { tag: 'five' }), 5)), '{"tag":"five"}');
    assert.ok(!received().some(([, t]) => t === 'bad-version' || t === 'bad-meta'));
    await end(s);
  });
});

describe('limits.maxSessionsPerIdentity', () => {
  test(`beyond ${CAP} sessions a credential gets 429 with Retry-After; another credential of the same sub still gets in; ending one makes room`, async () => {
    const mine = [];
    for (let i = 0; i < CAP; i++) mine.push(await open(bearer(keys.c)));
    const pidsBefore = pids().length;
    const refused = await post(gw, 'raw', { jsonrpc: '2.0', id: 0, method: 'initialize', params: INIT_PARAMS }, bearer(keys.c));
    assertRefused(refused, 429, -32600, /limits\.maxSessionsPerIdentity/, 'over the cap');
    assert.match(String(refused.headers['retry-after']), /^\d+$/);
    assert.equal(refused.json.id, 0);
    // Others are not held back by key-c: key-a (same sub) and an OIDC user.
    const other = await open(bearer(keys.a));
    const oidc = await open(bearer(await tokenOf('erin', ['group-a'])));
    assert.equal(pids().length, pidsBefore + 2, 'the refused initialize started no upstream');
    assert.equal((await end(mine.pop()!)).status, 200);
    mine.push(await open(bearer(keys.c)));
    await Promise.all([...mine, other, oidc].map(end));
  });

  test('a burst of concurrent initializes by one credential opens exactly the cap, and starts no more upstreams', async () => {
    await waitFor('earlier sessions to end', () => gw.gateway.sessions.size === 0);
    const pidsBefore = pids().length;
    const burst = await Promise.all(Array.from({ length: 10 }, () => post(gw, 'raw', { jsonrpc: '2.0', id: 0, method: 'initialize', params: INIT_PARAMS }, bearer(keys.c))));
    const statuses = burst.map((r) => r.status).sort();
    assert.deepEqual(statuses, [...Array(CAP).fill(200), ...Array(10 - CAP).fill(429)], burst.map((r) => r.text).join('\n'));
    await sleep(300);
    assert.equal(pids().length, pidsBefore + CAP);
    await Promise.all(burst.filter((r) => r.status === 200).map((r) => end({ ...bearer(keys.c), 'mcp-session-id': r.headers['mcp-session-id'] as string })));
  });
});

describe('a request id reused while the first is in flight', () => {
  test('HTTP: the second is refused with -32600 naming the id, before it is decided; the first gets its own answer; the id is free again after', async () => {
    const s = await open(bearer(keys.b));
    const first = callTool(s, 'dup', 'slow', { ms: 500, tag: 'dup-first' });
    await waitFor('the first to reach the upstream', () => received().some(([, t]) => t === 'dup-first'));
    const decisionsBefore = gw.decisions.length;
    const second = await callTool(s, 'dup', 'slow', { ms: 0, tag: 'dup-second' });
    assertRefused(second, 400, -32600, /request id "dup" is already in flight/, 'duplicate');
    assert.equal(second.json.id, 'dup');
    assert.equal(textOf(answerTo(await first, 'dup')), 'slow done: dup-first');
    assert.equal(gw.decisions.slice(decisionsBefore).length, 0, 'the duplicate was decided');
    assert.ok(!received().some(([, t]) => t === 'dup-second'), 'the duplicate reached the upstream');
    assert.equal(textOf(answerTo(await callTool(s, 'dup', 'slow', { ms: 0, tag: 'dup-third' }), 'dup')), 'slow done: dup-third');
    await end(s);
  });

  test('HTTP: an id whose request was cancelled stays taken until the upstream has answered it, so that late answer cannot settle a new request', async () => {
    const s = await open(bearer(keys.b));
    const first = callTool(s, 'c1', 'slow', { ms: 600, tag: 'c1-first' });
    await waitFor('the first to reach the upstream', () => received().some(([, t]) => t === 'c1-first'));
    assert.equal((await post(gw, 'raw', { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 'c1', reason: 'test' } }, s)).status, 202);
    const cancelled = await first; // its stream closes without an answer (it had not started: an empty one)
    assert.equal(cancelled.headers['content-type'], 'text/event-stream');
    assert.deepEqual(cancelled.messages, []);
    const reused = await callTool(s, 'c1', 'slow', { ms: 1_000, tag: 'c1-second' });
    assertRefused(reused, 400, -32600, /request id "c1" is already in flight/, 'reused after cancel');
    assert.ok(!received().some(([, t]) => t === 'c1-second'));
    // The upstream's late answer arrives and is dropped; then the id is free.
    await sleep(700);
    assert.equal(textOf(answerTo(await callTool(s, 'c1', 'slow', { ms: 0, tag: 'c1-third' }), 'c1')), 'slow done: c1-third');
    await end(s);
  });

  test('HTTP, many interleavings: each request gets its own answer or a refusal naming its id; a refused one is neither decided nor forwarded', async () => {
    const s = await open(bearer(keys.b));
    let run = 0;
    let refusals = 0;
    const op = fc.record({ id: fc.constantFrom<string | number>(1, 2, '1', 'x'), delay: fc.integer({ min: 0, max: 20 }), ms: fc.integer({ min: 0, max: 40 }) });
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 2, maxLength: 10 }), async (ops) => {
        run++;
        const outcomes = await Promise.all(
          ops.map(async (o, i) => {
            await sleep(o.delay);
            const tag = `run${run}-${i}`;
            return { o, tag, res: await callTool(s, o.id, 'slow', { ms: o.ms, tag }) };
          }),
        );
        const answered = new Set<string>();
        for (const { o, tag, res } of outcomes) {
          if (res.status === 200) {
            assert.equal(textOf(answerTo(res, o.id)), `slow done: ${tag}`, 'an answer crossed to another request');
            answered.add(tag);
          } else {
            assertRefused(res, 400, -32600, new RegExp(`request id ${JSON.stringify(o.id)} is already in flight`), tag);
            assert.deepEqual(res.json.id, o.id);
            refusals++;
          }
        }
        const upstreamSaw = received().filter(([, t]) => typeof t === 'string' && t.startsWith(`run${run}-`)).map(([, t]) => t as string);
        assert.deepEqual(upstreamSaw.sort(), [...answered].sort(), 'the upstream received exactly the answered requests');
        const decided = gw.decisions.filter((d) => typeof d.args?.tag === 'string' && (d.args.tag as string).startsWith(`run${run}-`)).map((d) => d.args!.tag as string);
        assert.deepEqual(decided.sort(), [...answered].sort(), 'exactly the answered requests were decided');
      }),
      { numRuns: 40 },
    );
    assert.ok(refusals > 0, 'no interleaving reused an id in flight: the property was not exercised');
    await end(s);
  });

  test('stdio (portcullis wrap), many interleavings: the same, on one line-based session', async () => {
    const record = join(files.path, 'wrap-received');
    const w = await rawWrap({ raw: upstreams.raw({ RECORD_FILE: record }) }, 'raw');
    try {
      w.send(JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: INIT_PARAMS }));
      await w.reply(0);
      w.send(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));
      let run = 0;
      let refusals = 0;
      const op = fc.record({ k: fc.integer({ min: 0, max: 2 }), delay: fc.integer({ min: 0, max: 15 }), ms: fc.integer({ min: 0, max: 30 }) });
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 2, maxLength: 10 }), async (ops) => {
          run++;
          const idOf = (k: number) => `r${run}-${k}`;
          // Sent in order, with pauses: the wire is one stream.
          for (const [i, o] of ops.entries()) {
            if (o.delay) await sleep(o.delay);
            w.send(JSON.stringify({ jsonrpc: '2.0', id: idOf(o.k), method: 'tools/call', params: { name: 'slow', arguments: { ms: o.ms, tag: `${idOf(o.k)}/${i}` } } }));
          }
          const expected = ops.length;
          const mine = () => w.lines.filter((l) => typeof l.id === 'string' && l.id.startsWith(`r${run}-`));
          await waitFor(`${expected} answers`, () => mine().length >= expected);
          await sleep(50); // nothing more may come
          const lines = mine();
          assert.equal(lines.length, expected, `one line per request: ${JSON.stringify(lines)}`);
          const answered: string[] = [];
          for (const l of lines) {
            if (l.error) {
              assert.equal(l.error.code, -32600);
              assert.match(l.error.message, new RegExp(`request id "${l.id}" is already in flight`));
              refusals++;
            } else {
              const tag = textOf(l).replace('slow done: ', '');
              assert.ok(tag.startsWith(`${l.id}/`), `answer ${JSON.stringify(l)} crossed`);
              answered.push(tag);
            }
          }
          const upstreamSaw = readFileSync(record, 'utf8').trim().split('\n').map((x) => JSON.parse(x)).filter((m) => m.params?.arguments?.tag?.startsWith(`r${run}-`)).map((m) => m.params.arguments.tag as string);
          assert.deepEqual(upstreamSaw.sort(), answered.sort(), 'the upstream received exactly the answered requests');
        }),
        { numRuns: 25 },
      );
      assert.ok(refusals > 0, 'no interleaving reused an id in flight: the property was not exercised');
    } finally {
      await w.close();
    }
  });
});
