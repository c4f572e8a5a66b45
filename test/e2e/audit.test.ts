// The audit log and session recordings end to end (docs/audit.md, SPEC 6 and 10), through the
// real gateway wired as `portcullis serve` wires it, to real upstreams:
// - a full session replays message by message, both directions, with its decisions, and the
//   audit log holds session.start, one decision per request (argsDigest of what the upstream
//   got) and session.end; `portcullis audit verify` passes;
// - crash safety: `portcullis serve` killed with SIGKILL under load loses no acknowledged
//   decision, and a restart continues the same chain without a gap;
// - fail closed: while the audit write fails, a tools/call is refused and never reaches the
//   upstream, /readyz is 503; once the store works again, calls work and the chain verifies;
// - a bad signing key or a store that is not Portcullis's stops serve before it listens.
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult, JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import Database from 'better-sqlite3';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { digestArgs } from '../../src/audit/chain.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import type { AuditRecord, RecordedMessage } from '../../src/store/store.js';
import { alive, BIN, connectHttp, freePort, raw, ROOT, runPortcullis, startConfiguredGateway, tempDir, upstreams, waitFor, writeConfig, type Proc } from './harness.js';

const POLICY = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: audit-e2e }
server: "*"
default: deny
rules:
  - { name: tools, effect: allow, tools: [echo, trigger-long-running-operation, write_note] }
  - { name: no-env, effect: deny, tools: [get-env], message: the environment stays private }
  - { name: docs, effect: allow, resources: ["demo://resource/static/document/*"] }
  - { name: prompts, effect: allow, prompts: [args-prompt] }
`;

const text = (r: unknown) => ((r as CallToolResult).content as Array<{ text?: string }>).map((c) => c.text ?? '').join('\n');
const sessionIdOf = (c: Client) => (c.transport as StreamableHTTPClientTransport).sessionId!;
const storePath = (dir: string) => join(dir, 'data/portcullis.db');

/** The command line (from the sources) with stdout and stderr apart. */
function pcl(args: string[], timeoutMs = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => (clearTimeout(timer), resolve({ code, stdout, stderr })));
  });
}

/** Everything in a store: its audit records and, per session, its recording. */
async function readStore(file: string, sessionId?: string): Promise<{ records: AuditRecord[]; messages: RecordedMessage[] }> {
  const store = SqliteStore.open(file, { mustExist: true });
  try {
    const records: AuditRecord[] = [];
    for await (const r of store.readAudit()) records.push(r);
    return { records, messages: sessionId ? await store.readRecording(sessionId) : [] };
  } finally {
    await store.close();
  }
}

const isRequest = (m: any) => typeof m?.method === 'string' && m.id !== undefined;

test('a full session through the gateway replays in order, both directions, with its decisions; the audit log has one decision per request and verifies', { timeout: 60_000 }, async () => {
  const gw = await startConfiguredGateway({ servers: { ev: upstreams.everything() }, auth: { anonymous: true } }, { 'audit.yaml': POLICY });
  let closed = false;
  try {
    const client = await connectHttp(gw.url('ev'));
    const sid = sessionIdOf(client);
    assert.match(sid, /^[0-9a-f-]{36}$/);
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), ['echo', 'trigger-long-running-operation'], 'tools/list shows what policy allows');
    const echoArgs = { message: 'audit me ✓ "quoted"', extra: { n: 1.5, list: [3, 1, 2] } };
    assert.equal(text(await client.callTool({ name: 'echo', arguments: echoArgs })), `Echo: ${echoArgs.message}`);
    const denied = (await client.callTool({ name: 'get-env', arguments: { which: 'all' } })) as CallToolResult;
    assert.equal(denied.isError, true);
    assert.equal(text(denied), 'Denied by policy rule audit-e2e/no-env: the environment stays private');
    const byDefault = (await client.callTool({ name: 'get-sum', arguments: { a: 1, b: 2 } })) as CallToolResult;
    assert.equal(byDefault.isError, true);
    assert.match(text(byDefault), /^Denied by policy rule audit-e2e\/default/);
    const promptArgs = { city: 'Zürich', state: 'ZH' };
    const prompt = await client.getPrompt({ name: 'args-prompt', arguments: promptArgs });
    assert.equal((prompt.messages[0].content as { text: string }).text, "What's weather in Zürich, ZH?");
    const uri = 'demo://resource/static/document/architecture.md';
    const resource = await client.readResource({ uri });
    assert.equal(resource.contents[0].uri, uri);
    const progress: number[] = [];
    const longArgs = { duration: 0.3, steps: 3 };
    const long = await client.callTool({ name: 'trigger-long-running-operation', arguments: longArgs }, undefined, { onprogress: (p) => void progress.push(p.progress) });
    assert.match(text(long), /Long running operation completed/);
    assert.deepEqual(progress, [1, 2, 3]);
    // DELETE ends the session at the gateway (session.end), then the client goes.
    await (client.transport as StreamableHTTPClientTransport).terminateSession();
    await client.close();
    // Close the gateway (flushes the recorder, writes the closing checkpoint), keep its folder.
    await gw.running.close();
    closed = true;
    const file = storePath(gw.dir);
    const store = `sqlite:${file}`;
    const { records, messages } = await readStore(file, sid);

    // --- The recording: every message, both directions, in order.
    const parsed = messages.map((m) => ({ direction: m.direction, msg: JSON.parse(m.body) as any, decision: m.decision && JSON.parse(m.decision), ts: m.ts }));
    for (let i = 1; i < parsed.length; i++) assert.ok(parsed[i].ts >= parsed[i - 1].ts, 'recorded times never go back');
    const fromClient = parsed.filter((p) => p.direction === 'fromClient').map((p) => p.msg);
    assert.deepEqual(
      fromClient.map((m) => m.method),
      ['initialize', 'notifications/initialized', 'tools/list', 'tools/call', 'tools/call', 'tools/call', 'prompts/get', 'resources/read', 'tools/call'],
    );
    // Each request is followed (later) by its response, and the response carries the decision.
    const requests = fromClient.filter(isRequest);
    const expectedDecision: Record<string, { effect: string; rule: string }> = {
      initialize: { effect: 'allow', rule: 'protocol/housekeeping' },
      'tools/list': { effect: 'allow', rule: 'protocol/list' },
      'prompts/get': { effect: 'allow', rule: 'audit-e2e/prompts' },
      'resources/read': { effect: 'allow', rule: 'audit-e2e/docs' },
    };
    const toolDecision: Record<string, { effect: string; rule: string }> = {
      echo: { effect: 'allow', rule: 'audit-e2e/tools' },
      'get-env': { effect: 'deny', rule: 'audit-e2e/no-env' },
      'get-sum': { effect: 'deny', rule: 'audit-e2e/default' },
      'trigger-long-running-operation': { effect: 'allow', rule: 'audit-e2e/tools' },
    };
    const want = (req: any) => (req.method === 'tools/call' ? toolDecision[req.params.name] : expectedDecision[req.method]);
    for (const req of requests) {
      const at = parsed.findIndex((p) => p.direction === 'fromClient' && p.msg.id === req.id);
      const answer = parsed.findIndex((p) => p.direction === 'toClient' && p.msg.id === req.id && !p.msg.method);
      assert.ok(answer > at, `the response to ${req.method} #${req.id} is recorded after it`);
      assert.deepEqual(parsed[answer].decision, want(req), `decision on the reply to ${req.method} #${req.id}`);
    }
    // The progress notifications, in order, between the long call and its response.
    const longReq = requests[requests.length - 1];
    const longAt = parsed.findIndex((p) => p.direction === 'fromClient' && p.msg.id === longReq.id);
    const longAnswer = parsed.findIndex((p) => p.direction === 'toClient' && p.msg.id === longReq.id);
    const progressAt = parsed.flatMap((p, i) => (p.msg.method === 'notifications/progress' ? [i] : []));
    assert.equal(progressAt.length, 3);
    assert.ok(progressAt.every((i) => i > longAt && i < longAnswer), 'progress notifications are recorded between the call and its result');
    assert.deepEqual(progressAt.map((i) => parsed[i].msg.params.progress), [1, 2, 3]);
    assert.ok(progressAt.every((i) => parsed[i].direction === 'toClient' && parsed[i].msg.params.progressToken === longReq.params._meta.progressToken));
    // What the client saw is what was recorded.
    const echoReply = parsed.find((p) => p.direction === 'toClient' && p.msg.id === requests[2].id)!.msg;
    assert.equal(echoReply.result.content[0].text, `Echo: ${echoArgs.message}`);

    // --- The audit log: session.start, one decision per request, session.end, then the final
    // seal of the recording (once its last messages were stored).
    const mine = records.filter((r) => r.data.sessionId === sid);
    assert.equal(mine[0].type, 'session.start');
    assert.deepEqual(mine[0].data, { sessionId: sid, server: 'ev', identity: { sub: 'anonymous', groups: [], via: 'anonymous' } });
    assert.deepEqual(mine.slice(-2).map((r) => r.type), ['session.end', 'recording.seal']);
    assert.equal(mine[mine.length - 2].data.server, 'ev');
    assert.deepEqual(mine[mine.length - 1].data, { sessionId: sid, messages: messages.length, digest: messages[messages.length - 1].hash, lastTs: messages[messages.length - 1].ts, final: true });
    const decisions = mine.filter((r) => r.type === 'decision');
    assert.equal(decisions.length, requests.length, 'one decision record per request');
    const version = decisions[0].data.bundleVersion;
    assert.match(String(version), /^[0-9a-f]{64}$/);
    for (const [i, req] of requests.entries()) {
      const d = decisions[i].data;
      assert.equal(d.requestId, req.id, `decision ${i} is for request #${req.id} (${req.method}), in order`);
      assert.equal(d.method, req.method);
      assert.equal(d.effect, want(req).effect);
      assert.equal(d.rule, want(req).rule);
      assert.equal(d.bundleVersion, version);
      assert.equal(d.server, 'ev');
      assert.deepEqual(d.identity, { sub: 'anonymous', groups: [] });
      assert.match(String(d.decisionId), /^[0-9a-f-]{36}$/);
      if (req.method === 'tools/call') {
        assert.equal(d.tool, req.params.name);
        // The digest of the arguments the gateway forwarded (the same parsed arguments).
        assert.equal(d.argsDigest, digestArgs(req.params.arguments ?? {}));
      } else if (req.method === 'prompts/get') {
        assert.equal(d.prompt, 'args-prompt');
        assert.equal(d.argsDigest, digestArgs(promptArgs));
      } else if (req.method === 'resources/read') {
        assert.equal(d.resource, uri);
        assert.equal(d.argsDigest, undefined);
      }
    }
    assert.equal(decisions[2].data.argsDigest, digestArgs(echoArgs), 'echo: the digest of the arguments as the client sent them');
    assert.equal(decisions[3].data.message, 'the environment stays private');
    assert.equal(decisions[decisions.length - 1].data.argsDigest, digestArgs(longArgs));
    assert.equal(JSON.stringify(records).includes('audit me'), false, 'arguments stay out of the audit log');

    // --- portcullis replay: the timeline.
    const replay = await pcl(['replay', sid, '--store', store]);
    assert.equal(replay.code, 0, replay.stderr);
    if (process.env.AUDIT_E2E_SHOW) console.log(replay.stdout);
    const lines = replay.stdout.trimEnd().split('\n');
    assert.match(lines[0], new RegExp(`^session ${sid}  server ev  sub anonymous  started \\S+  ${messages.length} messages$`));
    assert.equal(lines.length, messages.length + 1, 'one line per recorded message');
    const expectInOrder = [
      /→ initialize #0\b/,
      /← initialize response #0\b/,
      /→ notifications\/initialized/,
      /→ tools\/list #1\b/,
      /← tools\/list response #1 \[allow protocol\/list\]  2 tools/,
      /→ tools\/call #2\b.*echo \{"message":"audit me/,
      /← tools\/call response #2 \[allow audit-e2e\/tools\]  Echo: audit me/,
      /→ tools\/call #3\b.*get-env/,
      /← tools\/call response #3 \[deny audit-e2e\/no-env\]  tool error: Denied by policy rule audit-e2e\/no-env/,
      /→ tools\/call #4\b.*get-sum/,
      /← tools\/call response #4 \[deny audit-e2e\/default\]/,
      /→ prompts\/get #5\b.*args-prompt/,
      /← prompts\/get response #5 \[allow audit-e2e\/prompts\]/,
      /→ resources\/read #6\b.*architecture\.md/,
      /← resources\/read response #6 \[allow audit-e2e\/docs\]/,
      /→ tools\/call #7\b.*trigger-long-running-operation/,
      /← notifications\/progress/,
      /← notifications\/progress/,
      /← notifications\/progress/,
      /← tools\/call response #7 \[allow audit-e2e\/tools\]  Long running operation completed/,
    ];
    let from = 1;
    for (const re of expectInOrder) {
      const i = lines.findIndex((l, n) => n >= from && re.test(l));
      assert.ok(i >= 0, `replay lacks ${re} after line ${from}:\n${lines.join('\n')}`);
      from = i + 1;
    }

    // --- portcullis replay --json: the raw messages, as recorded.
    const json = await pcl(['replay', sid, '--store', store, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const rows = json.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { ts: string; direction: string; message: JSONRPCMessage });
    assert.deepEqual(rows.map((r) => [r.direction, r.message]), parsed.map((p) => [p.direction, p.msg]));
    assert.ok(rows.every((r) => !Number.isNaN(Date.parse(r.ts))));
    assert.deepEqual((rows.find((r) => (r.message as any).id === 2 && r.direction === 'fromClient')!.message as any).params.arguments, echoArgs);

    // --- portcullis audit verify passes on the store.
    const verify = await pcl(['audit', 'verify', '--store', store]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    assert.match(verify.stdout, new RegExp(`^ok: ${records.length} records verified \\(seq 1–${records.length}\\)`));
  } finally {
    if (!closed) await gw.running.close().catch(() => undefined);
    rmSync(gw.dir, { recursive: true, force: true });
  }
});

/** `portcullis serve -c file` as a real process; resolves once it listens. */
async function serve(file: string): Promise<Proc> {
  const proc = runPortcullis(['serve', '-c', file]);
  await waitFor('serve to listen', () => proc.output().includes('portcullis: listening') || proc.child.exitCode !== null, 20_000);
  if (proc.child.exitCode !== null) throw new Error(`serve exited ${proc.child.exitCode}:\n${proc.output()}`);
  return proc;
}

/** Pids of a process's children (its stdio upstreams). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

interface Acked {
  sessionId: string;
  id: number | string;
  args: Record<string, unknown>;
}

/** A client that calls echo in a loop, keeping the request ids whose results it received. */
async function echoLoop(url: string, tag: string, acked: Acked[]): Promise<{ client: Client; stop(): Promise<void> }> {
  const client = await connectHttp(url);
  const transport = client.transport as StreamableHTTPClientTransport;
  const sessionId = transport.sessionId!;
  const sent = new Map<unknown, Record<string, unknown>>();
  const send = transport.send.bind(transport);
  transport.send = (m, o) => {
    const msg = m as any;
    if (msg.method === 'tools/call') sent.set(msg.id, msg.params.arguments);
    return send(m, o);
  };
  const onmessage = transport.onmessage!;
  transport.onmessage = (m: JSONRPCMessage) => {
    const msg = m as any;
    if (sent.has(msg.id) && msg.result && String(msg.result.content?.[0]?.text).startsWith('Echo: ')) acked.push({ sessionId, id: msg.id, args: sent.get(msg.id)! });
    onmessage(m);
  };
  let running = true;
  const loop = (async () => {
    for (let n = 0; running; n++) {
      try {
        await client.callTool({ name: 'echo', arguments: { message: `${tag}-${n}` } }, undefined, { timeout: 5_000 });
      } catch {
        running = false;
      }
    }
  })();
  return {
    client,
    stop: async () => {
      running = false;
      await loop;
      await client.close().catch(() => undefined);
    },
  };
}

test('crash safety: serve killed with SIGKILL under load keeps every acknowledged decision; a restart continues the chain without a gap', { timeout: 60_000 }, async () => {
  const port = await freePort();
  const { file, dir } = writeConfig({ servers: { ev: upstreams.everything() }, auth: { anonymous: true }, listen: { host: '127.0.0.1', port }, logging: { level: 'warn' } }, { 'audit.yaml': POLICY });
  const url = `http://127.0.0.1:${port}/mcp/ev`;
  const db = storePath(dir.path);
  const upstreamPids: number[] = [];
  let proc: Proc | undefined;
  try {
    proc = await serve(file);
    const acked: Acked[] = [];
    const loops = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => echoLoop(url, `c${i}`, acked)));
    upstreamPids.push(...childrenOf(proc.pid));
    await waitFor('300 acknowledged calls', () => acked.length >= 300, 30_000);
    if (process.env.AUDIT_E2E_SHOW) console.log('killing at', performance.now(), acked.length, upstreamPids);
    proc.child.kill('SIGKILL');
    await proc.exited;
    await Promise.all(loops.map((l) => l.stop()));
    const ackedAtKill = acked.length;
    assert.ok(ackedAtKill >= 300);

    // Every acknowledged call has its decision record; the chain verifies.
    const before = await readStore(db);
    const decisions = new Map(before.records.filter((r) => r.type === 'decision').map((r) => [`${r.data.sessionId} ${JSON.stringify(r.data.requestId)}`, r]));
    for (const a of acked) {
      const r = decisions.get(`${a.sessionId} ${JSON.stringify(a.id)}`);
      assert.ok(r, `no decision record for acknowledged call ${a.sessionId} #${a.id}`);
      assert.equal(r.data.effect, 'allow');
      assert.equal(r.data.tool, 'echo');
      assert.equal(r.data.argsDigest, digestArgs(a.args));
    }
    const last = before.records[before.records.length - 1];
    assert.equal(last.seq, before.records.length, 'gapless from 1');
    assert.equal(before.records.filter((r) => r.type === 'session.start').length, 6);

    // Restart on the same store: the chain continues from the last record.
    proc = await serve(file);
    const client = await connectHttp(url);
    assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'after the crash' } })), 'Echo: after the crash');
    const sid = sessionIdOf(client);
    await (client.transport as StreamableHTTPClientTransport).terminateSession();
    await client.close();
    assert.equal(await proc.stop('SIGTERM'), 0, proc.output());
    const afterRestart = await readStore(db);
    const added = afterRestart.records.slice(before.records.length);
    assert.deepEqual(afterRestart.records.slice(0, before.records.length), before.records, 'nothing before the crash changed');
    assert.equal(added[0].seq, last.seq + 1);
    assert.equal(added[0].prev, last.hash);
    assert.deepEqual(added.map((r) => r.type), ['session.start', 'decision', 'decision', 'session.end', 'recording.seal'], 'initialize, tools/call, the sealed recording');
    assert.ok(added.every((r) => r.data.sessionId === sid));
    const verify = await pcl(['audit', 'verify', '-c', file]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    assert.match(verify.stdout, new RegExp(`^ok: ${afterRestart.records.length} records verified`));
  } finally {
    await proc?.stop('SIGKILL');
    // The killed gateway's stdio upstreams lose their stdin and must exit on their own.
    await waitFor('the killed gateway\'s upstreams to exit', () => upstreamPids.every((p) => !alive(p)), 5_000).catch(() => {
      process.stderr.write(`audit.test: upstreams of the killed gateway still alive: ${upstreamPids.filter(alive).join(' ')} of ${upstreamPids.join(' ')}\n`);
      upstreamPids.forEach((p) => alive(p) && process.kill(p, 'SIGKILL'));
    });
    dir.remove();
  }
});

test('fail closed: while the audit write fails, tools/call is refused and never reaches the upstream, /readyz is 503; afterwards calls work and the chain verifies', { timeout: 60_000 }, async () => {
  const scratch = tempDir('pcl-audit-fail-');
  const received = join(scratch.path, 'upstream-received.jsonl');
  const pids = join(scratch.path, 'upstream-pids');
  const gw = await startConfiguredGateway({ servers: { raw: upstreams.raw({ RECORD_FILE: received, PID_FILE: pids }) }, auth: { anonymous: true } }, { 'audit.yaml': POLICY });
  const db = new Database(storePath(gw.dir));
  const client = await connectHttp(gw.url('raw'));
  try {
    const sid = sessionIdOf(client);
    assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'before' } })), '{"message":"before"}');
    assert.equal((await raw(gw.base, '/readyz', { method: 'GET' })).status, 200);

    // From outside the gateway, make every insert into the audit log fail.
    db.exec("CREATE TRIGGER e2e_audit_fails BEFORE INSERT ON audit_records BEGIN SELECT RAISE(ABORT, 'disk on fire (injected by the test)'); END;");
    const refused = await client.callTool({ name: 'echo', arguments: { message: 'MUST-NOT-ARRIVE' } }).then(
      (r) => ({ ok: r as CallToolResult }),
      (e: Error & { code?: number }) => ({ error: e }),
    );
    assert.ok('error' in refused, `the call was answered: ${JSON.stringify(refused)}`);
    assert.equal(refused.error.code, -32603);
    assert.match(refused.error.message, /Audit log unavailable: the request was not forwarded \(PCL_AUDIT_WRITE_FAILED\)$/);
    assert.doesNotMatch(refused.error.message, /disk on fire/, 'the store error stays in the gateway log, not with the client');
    assert.equal((refused.error as Error & { data?: { retryable?: boolean } }).data?.retryable, true);
    const refusedDecision = (refused.error as Error & { data?: { decisionId?: string } }).data?.decisionId;
    const ready = await raw(gw.base, '/readyz', { method: 'GET' });
    assert.equal(ready.status, 503);
    assert.equal(ready.json.checks.audit, 'failing');
    assert.doesNotMatch(ready.text, /disk on fire/, '/readyz says states, the log says why');
    const metrics = (await raw(gw.base, '/metrics', { method: 'GET' })).text;
    assert.match(metrics, /^portcullis_audit_healthy 0$/m);
    assert.match(metrics, /^portcullis_audit_write_failures(_total)? [1-9]/m);
    // A new session cannot start either (its session.start record cannot be written), and leaves nothing behind.
    const sessionsBefore = gw.running.gateway.sessions.size;
    await assert.rejects(connectHttp(gw.url('raw')), /the session was not opened \(PCL_AUDIT_WRITE_FAILED\)/);
    assert.equal(gw.running.gateway.sessions.size, sessionsBefore, 'a session whose start was not recorded is not kept');
    // Its upstream was stopped (if it got as far as writing its pid, it must be gone).
    await new Promise((r) => setTimeout(r, 300));
    const upstreamPids = readFileSync(pids, 'utf8').trim().split('\n').map(Number);
    await waitFor('the refused session\'s upstream to exit', () => upstreamPids.slice(1).every((p) => !alive(p)), 5_000);
    assert.ok(alive(upstreamPids[0]), 'the working session keeps its upstream');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(readFileSync(received, 'utf8').includes('MUST-NOT-ARRIVE'), false, 'the upstream received the refused call');

    // The store works again: so do calls, and readiness.
    db.exec('DROP TRIGGER e2e_audit_fails');
    assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'after' } })), '{"message":"after"}');
    assert.equal((await raw(gw.base, '/readyz', { method: 'GET' })).status, 200);
    assert.match((await raw(gw.base, '/metrics', { method: 'GET' })).text, /^portcullis_audit_healthy 1$/m);
    const calls = readFileSync(received, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.method === 'tools/call');
    assert.deepEqual(calls.map((m) => m.params.arguments.message), ['before', 'after']);

    await (client.transport as StreamableHTTPClientTransport).terminateSession();
    await gw.running.close();
    const { records } = await readStore(storePath(gw.dir));
    const decisions = records.filter((r) => r.type === 'decision' && r.data.sessionId === sid && r.data.method === 'tools/call');
    // The upstream got exactly what was decided: the digests of what it received.
    assert.deepEqual(decisions.map((r) => r.data.argsDigest), calls.map((m) => digestArgs(m.params.arguments)));
    assert.deepEqual(records.map((r) => r.seq), records.map((_, i) => i + 1), 'no gap where the write failed');
    if (refusedDecision) assert.equal(records.some((r) => r.data.decisionId === refusedDecision), false, 'the refused decision is not in the log');
    const verify = await pcl(['audit', 'verify', '--store', `sqlite:${storePath(gw.dir)}`]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  } finally {
    db.close();
    await client.close().catch(() => undefined);
    await gw.running.close().catch(() => undefined);
    rmSync(gw.dir, { recursive: true, force: true });
    scratch.remove();
  }
});

test('fail closed on a locked store: a tools/call waits for the lock without freezing the gateway, is refused after the busy timeout and never forwarded; then the gateway recovers', { timeout: 60_000 }, async () => {
  const scratch = tempDir('pcl-audit-busy-');
  const received = join(scratch.path, 'upstream-received.jsonl');
  const gw = await startConfiguredGateway({ servers: { raw: upstreams.raw({ RECORD_FILE: received }) }, auth: { anonymous: true } }, { 'audit.yaml': POLICY });
  const db = new Database(storePath(gw.dir));
  const client = await connectHttp(gw.url('raw'));
  try {
    assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'before' } })), '{"message":"before"}');
    // Another writer holds the store's write lock (as a second gateway process on one SQLite file could).
    db.exec('BEGIN EXCLUSIVE');
    const started = performance.now();
    const call = client.callTool({ name: 'echo', arguments: { message: 'MUST-NOT-ARRIVE' } }, undefined, { timeout: 30_000 }).then(
      (r) => ({ ok: r as CallToolResult, ms: performance.now() - started }),
      (e: Error & { code?: number }) => ({ error: e, ms: performance.now() - started }),
    );
    // While the gateway waits for the lock, it keeps serving: liveness answers at once.
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      assert.equal((await raw(gw.base, '/healthz', { method: 'GET' })).status, 200);
      assert.ok(performance.now() - t < 500, `/healthz took ${Math.round(performance.now() - t)} ms while the store was locked`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const refused = await call;
    assert.ok('error' in refused, `the call was answered: ${JSON.stringify(refused)}`);
    assert.equal(refused.error.code, -32603);
    assert.match(refused.error.message, /PCL_AUDIT_WRITE_FAILED/);
    assert.ok(refused.ms >= 4_500 && refused.ms < 10_000, `refused after ${Math.round(refused.ms)} ms (the store's busy timeout is 5 s)`);
    const ready = await raw(gw.base, '/readyz', { method: 'GET' });
    assert.equal(ready.status, 503);
    assert.equal(ready.json.checks.audit, 'failing');
    assert.equal(readFileSync(received, 'utf8').includes('MUST-NOT-ARRIVE'), false, 'the upstream received the refused call');

    db.exec('COMMIT');
    assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'after' } })), '{"message":"after"}');
    assert.equal((await raw(gw.base, '/readyz', { method: 'GET' })).status, 200);
    const calls = readFileSync(received, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.method === 'tools/call');
    assert.deepEqual(calls.map((m) => m.params.arguments.message), ['before', 'after']);
    await client.close();
    await gw.running.close();
    const verify = await pcl(['audit', 'verify', '--store', `sqlite:${storePath(gw.dir)}`]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  } finally {
    if (db.inTransaction) db.exec('ROLLBACK');
    db.close();
    await client.close().catch(() => undefined);
    await gw.running.close().catch(() => undefined);
    rmSync(gw.dir, { recursive: true, force: true });
    scratch.remove();
  }
});

test('serve refuses to start, with one clear line and exit 1 before it listens: a missing or unreadable signing key, a key that is not Ed25519, a store that is not a Portcullis store', { timeout: 60_000 }, async () => {
  const cases: Array<{ name: string; setup(dir: string): Record<string, unknown>; stderr: RegExp; untouched?: string }> = [
    { name: 'missing key', setup: () => ({ audit: { signingKey: './keys/nope.pem' } }), stderr: /^portcullis: cannot read the audit signing key \S*keys\/nope\.pem: the file does not exist$/ },
    {
      name: 'unreadable key (a directory)',
      setup: (dir) => (mkdirSync(join(dir, 'keys/dir.pem'), { recursive: true }), { audit: { signingKey: './keys/dir.pem' } }),
      stderr: /^portcullis: cannot read the audit signing key \S*keys\/dir\.pem: .*EISDIR/,
    },
    {
      name: 'an RSA key',
      setup: (dir) => {
        const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
        writeFileSync(join(dir, 'rsa.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
        return { audit: { signingKey: './rsa.pem' } };
      },
      stderr: /^portcullis: the audit signing key \S*rsa\.pem is a rsa key; an Ed25519 key is needed/,
    },
    {
      name: 'a text file as the store',
      setup: (dir) => (writeFileSync(join(dir, 'notes.txt'), 'my notes, not a database\n'), { store: { url: 'sqlite:./notes.txt' } }),
      stderr: /^portcullis: \S*notes\.txt is not a Portcullis store \(not a SQLite database\)/,
      untouched: 'notes.txt',
    },
    {
      name: "another application's SQLite database",
      setup: (dir) => {
        const other = new Database(join(dir, 'crm.db'));
        other.exec("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('Ada');");
        other.close();
        return { store: { url: 'sqlite:./crm.db' } };
      },
      stderr: /^portcullis: \S*crm\.db is a SQLite database but not a Portcullis store \(it has tables customers\)/,
      untouched: 'crm.db',
    },
  ];
  await Promise.all(
    cases.map(async (c) => {
      const port = await freePort();
      const { file, dir } = writeConfig({ servers: { ev: upstreams.everything() }, auth: { anonymous: true }, listen: { host: '127.0.0.1', port } }, { 'audit.yaml': POLICY });
      try {
        const extra = c.setup(dir.path);
        writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), ...extra }, null, 2));
        const before = c.untouched ? readFileSync(join(dir.path, c.untouched)) : undefined;
        const r = await pcl(['serve', '-c', file]);
        assert.equal(r.code, 1, `${c.name}: exit ${r.code}\n${r.stdout}${r.stderr}`);
        const lines = r.stderr.split('\n').filter(Boolean);
        assert.equal(lines.length, 1, `${c.name}: one line on stderr, got:\n${r.stderr}`);
        assert.match(lines[0], c.stderr, c.name);
        assert.doesNotMatch(r.stdout + r.stderr, /listening/, c.name);
        if (c.untouched) assert.deepEqual(readFileSync(join(dir.path, c.untouched)), before, `${c.name}: the file was changed`);
        if (c.untouched) assert.deepEqual(readdirSync(dir.path).filter((f) => f.startsWith(c.untouched!)), [c.untouched], `${c.name}: no -wal/-shm beside it`);
      } finally {
        dir.remove();
      }
    }),
  );
});
