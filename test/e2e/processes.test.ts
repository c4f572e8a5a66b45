// Every process ends. A stdio upstream is launched directly, through npx and through a shell
// that forks it; whatever ends its session (DELETE, idle, a refused initialize, SIGTERM or a
// double SIGINT to the gateway, Ctrl-C under `npm start`), no process of it remains: checked in
// /proc by a mark in the upstream's environment and by its process group. After the gateway
// exits, its audit log ends with the closing checkpoint and `portcullis audit verify` passes.
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { auditState, groupMembers, launchers, marked, OWN_PGID } from '../support/processes.js';
import { connectHttp, INIT_PARAMS, raw, ROOT, runPortcullis, startTestGateway, upstreams, waitFor, writeConfig, type Proc } from './harness.js';

const text = (r: unknown) => ((r as CallToolResult).content as Array<{ text?: string }>).map((c) => c.text ?? '').join('\n');
const LAUNCHERS = ['direct', 'npx', 'shell'] as const;

/** The upstream's processes: at least one, all in one group of their own, led by the process the gateway started. */
function upstreamGroup(mark: string, what: string): number {
  const procs = marked(mark);
  assert.ok(procs.length >= 1, `no process of ${what} is running`);
  const groups = new Set(procs.map((p) => p.pgid));
  assert.equal(groups.size, 1, `${what} spans several process groups: ${JSON.stringify(procs)}`);
  const [pgid] = groups;
  assert.notEqual(pgid, OWN_PGID, `${what} runs in the gateway's own process group`);
  assert.ok(procs.some((p) => p.pid === pgid), `${what}: no process leads group ${pgid}`);
  return pgid;
}

async function gone(marks: Record<string, string>, groups: Record<string, number>, timeoutMs = 8_000): Promise<void> {
  await waitFor(
    'every upstream process to exit',
    () => Object.values(marks).every((m) => marked(m).length === 0) && Object.values(groups).every((g) => groupMembers(g).length === 0),
    timeoutMs,
    50,
  ).catch((e) => {
    const left = Object.entries(marks).flatMap(([name, m]) => marked(m).map((p) => `${name}: ${p.pid} (group ${p.pgid}) ${p.command}`));
    throw new Error(`${(e as Error).message}; still running:\n${left.join('\n')}`);
  });
}

function markAll(): Record<(typeof LAUNCHERS)[number], string> {
  return { direct: randomUUID(), npx: randomUUID(), shell: randomUUID() };
}

/** One config with every launcher under its own mark, for servers named direct, npx and shell. */
function markedServers(marks: Record<(typeof LAUNCHERS)[number], string>) {
  return Object.fromEntries(LAUNCHERS.map((l) => [l, launchers(marks[l])[l]]));
}

test('DELETE, idle end and a refused initialize end every process of the upstream, however it was launched', { timeout: 120_000 }, async () => {
  const marks = markAll();
  const gw = await startTestGateway(markedServers(marks), { limits: { sessionIdleTimeout: '3s' } });
  try {
    // DELETE.
    const groups: Record<string, number> = {};
    for (const l of LAUNCHERS) {
      const client = await connectHttp(gw.url(l));
      assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: l } })), `Echo: ${l}`);
      groups[l] = upstreamGroup(marks[l], l);
      await (client.transport as StreamableHTTPClientTransport).terminateSession();
      await client.close();
    }
    await gone(marks, groups);

    // Idle end: the sessions are left open, untouched.
    const idle: Client[] = [];
    for (const l of LAUNCHERS) {
      idle.push(await connectHttp(gw.url(l)));
      groups[l] = upstreamGroup(marks[l], `${l} (idle)`);
    }
    await waitFor('the idle sessions to end', () => gw.gateway.sessions.size === 0, 10_000, 50);
    await gone(marks, groups);
    await Promise.all(idle.map((c) => c.close().catch(() => undefined)));

    // A refused initialize (no text/event-stream in Accept: 406): the session is of no use to anyone.
    for (const l of LAUNCHERS) {
      const r = await raw(gw.base, `/mcp/${l}`, { headers: { 'content-type': 'application/json', accept: 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: INIT_PARAMS }) });
      assert.equal(r.status, 406, r.text);
    }
    assert.equal(gw.gateway.sessions.size, 0, 'a refused initialize left a session open');
    await gone(marks, {});
  } finally {
    await gw.close();
  }
});

/** `portcullis serve` (or `npm start`) on a config with the three launchers and the raw fixture, sessions open on each. */
async function serveWithSessions(start: (file: string) => Proc) {
  const marks = markAll();
  const { file, dir } = writeConfig({
    listen: { host: '127.0.0.1', port: 0 },
    servers: { ...markedServers(marks), raw: upstreams.raw() },
    auth: { anonymous: true },
    logging: { level: 'info' },
  });
  const serve = start(file);
  const base = await waitFor('serve to listen', () => /http:\/\/127\.0\.0\.1:(\d+)\/mcp\/raw/.exec(serve.output())?.[0].replace('/mcp/raw', ''), 30_000, 50);
  const clients: Record<string, Client> = {};
  const groups: Record<string, number> = {};
  for (const l of LAUNCHERS) {
    clients[l] = await connectHttp(`${base}/mcp/${l}`);
    assert.equal(text(await clients[l].callTool({ name: 'echo', arguments: { message: 'up' } })), 'Echo: up');
    groups[l] = upstreamGroup(marks[l], l);
  }
  clients.raw = await connectHttp(`${base}/mcp/raw`);
  return { serve, file, dir, marks, groups, clients };
}

async function closedAndVerified(file: string, dir: string): Promise<void> {
  const audit = await auditState(dir);
  assert.ok(audit.types.filter((t) => t === 'session.end').length >= 4, `a session end is missing: ${audit.types.join(', ')}`);
  assert.equal(audit.lastCheckpointSeq, audit.headSeq, 'the closing checkpoint is missing');
  const verify = runPortcullis(['audit', 'verify', '-c', file]);
  assert.equal((await verify.exited).code, 0, verify.output());
}

test('SIGTERM to serve: requests drain, every upstream process exits, exit 0, closing checkpoint, audit verify passes', { timeout: 120_000 }, async () => {
  const s = await serveWithSessions((file) => runPortcullis(['serve', '-c', file]));
  try {
    const inFlight = s.clients.raw.callTool({ name: 'slow', arguments: { ms: 1_000 } });
    await new Promise((r) => setTimeout(r, 200));
    s.serve.child.kill('SIGTERM');
    s.serve.child.kill('SIGTERM'); // a repeat of the same signal is the same request
    assert.equal(text(await inFlight), 'slow done');
    const { code, signal } = await s.serve.exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, s.serve.output());
    await gone(s.marks, s.groups);
    await closedAndVerified(s.file, s.dir.path);
  } finally {
    await s.serve.stop('SIGKILL');
    s.dir.remove();
  }
});

test('a second SIGINT forces: no waiting for a hung call, every upstream process killed, exit 0, the closing checkpoint still written', { timeout: 120_000 }, async () => {
  const s = await serveWithSessions((file) => runPortcullis(['serve', '-c', file]));
  try {
    const hung = s.clients.raw.callTool({ name: 'hang', arguments: {} }, undefined, { timeout: 30_000 }).then(
      () => 'answered',
      (e: Error) => e.message,
    );
    await new Promise((r) => setTimeout(r, 200));
    s.serve.child.kill('SIGINT');
    await waitFor('the first SIGINT to be seen', () => s.serve.output().includes('shutting down'), 5_000);
    await new Promise((r) => setTimeout(r, 1_200)); // a second Ctrl-C, not a copy of the first
    const forcedAt = Date.now();
    s.serve.child.kill('SIGINT');
    const { code, signal } = await s.serve.exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, s.serve.output());
    assert.ok(Date.now() - forcedAt < 5_000, `forced shutdown took ${Date.now() - forcedAt} ms`);
    assert.match(s.serve.output(), /forced shutdown/);
    assert.match(await hung, /session ended: the gateway is shutting down|closed|terminated/i);
    await gone(s.marks, s.groups, 3_000);
    await closedAndVerified(s.file, s.dir.path);
  } finally {
    await s.serve.stop('SIGKILL');
    s.dir.remove();
  }
});

test('Ctrl-C under `npm start` (SIGINT to the whole foreground group): one stop, drained, nothing left, exit 0', { timeout: 120_000 }, async () => {
  const s = await serveWithSessions((file) => {
    // Its own process group, as a shell gives a foreground job: the terminal's SIGINT reaches npm and the gateway alike.
    const child = spawn('npm', ['start', '--silent', '--', '-c', file], { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, npm_config_update_notifier: 'false' } });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
    return { child, pid: child.pid!, output: () => out, exited, stop: async () => (child.exitCode === null && child.signalCode === null && process.kill(-child.pid!, 'SIGKILL'), (await exited).code) };
  });
  const npmGroup = s.serve.pid;
  try {
    const inFlight = s.clients.raw.callTool({ name: 'slow', arguments: { ms: 1_500 } });
    await new Promise((r) => setTimeout(r, 200));
    process.kill(-npmGroup, 'SIGINT');
    assert.equal(text(await inFlight), 'slow done', 'one Ctrl-C was taken for two: the call in flight was not drained');
    const { code, signal } = await s.serve.exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, s.serve.output());
    assert.doesNotMatch(s.serve.output(), /forced shutdown/);
    await waitFor('npm start and the gateway to be gone', () => groupMembers(npmGroup).length === 0, 5_000);
    await gone(s.marks, s.groups);
    await closedAndVerified(s.file, s.dir.path);
  } finally {
    await s.serve.stop();
    s.dir.remove();
  }
});
