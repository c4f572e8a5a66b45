// The stdio front: `portcullis wrap -c <config> --server X --identity alice` as a child process,
// driven by the official SDK client over its stdin/stdout, to real MCP servers.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { randomUUID } from 'node:crypto';
import { everythingSuite, text } from '../fixtures/everything-suite.js';
import { startSlowSseUpstream } from '../fixtures/slow-sse-upstream.js';
import { auditState, groupMembers, launchers, marked } from '../support/processes.js';
import { alive, CLIENT_INFO, connectStdioDirect, connectWrap, EVERYTHING, rawWrap, runPortcullis, startEverythingHttp, tempDir, upstreams, waitFor, writeConfig, type Proc } from './harness.js';

let evHttp: Proc & { url: string };
before(async () => {
  evHttp = await startEverythingHttp('streamableHttp');
});
after(async () => {
  await evHttp?.stop();
});

everythingSuite('server-everything (stdio) through portcullis wrap', async (options, setup) => {
  const w = await connectWrap({ ev: upstreams.everything() }, 'ev', { client: options, setup });
  return { client: w.client, close: () => w.close() };
});

everythingSuite('server-everything (Streamable HTTP) through portcullis wrap', async (options, setup) => {
  const w = await connectWrap({ ev: { transport: 'http', url: evHttp.url } }, 'ev', { client: options, setup });
  return { client: w.client, close: () => w.close() };
});

describe('portcullis wrap: transparency and files', () => {
  test('initialize through wrap equals initialize direct', async () => {
    const direct = await connectStdioDirect(process.execPath, [EVERYTHING, 'stdio']);
    const w = await connectWrap({ ev: upstreams.everything() }, 'ev');
    try {
      assert.deepEqual(w.client.getServerVersion(), direct.getServerVersion());
      assert.deepEqual(w.client.getServerCapabilities(), direct.getServerCapabilities());
      assert.equal(w.client.getInstructions(), direct.getInstructions());
      assert.deepEqual(await w.client.listPrompts(), await direct.listPrompts());
    } finally {
      await Promise.all([direct.close(), w.close()]);
    }
  });

  test('server-filesystem: list_allowed_directories, write_file then read_text_file', async () => {
    const dir = tempDir('pcl-wrapfs-');
    const root = realpathSync(dir.path);
    const w = await connectWrap({ files: upstreams.filesystem(root) }, 'files');
    try {
      assert.equal(text(await w.client.callTool({ name: 'list_allowed_directories', arguments: {} })), `Allowed directories:\n${root}`);
      const path = join(root, 'via-wrap.md');
      const content = '# written through portcullis wrap\n\nünïcödé ✓\n';
      assert.equal(text(await w.client.callTool({ name: 'write_file', arguments: { path, content } })), `Successfully wrote to ${path}`);
      assert.equal(readFileSync(path, 'utf8'), content);
      assert.equal(text(await w.client.callTool({ name: 'read_text_file', arguments: { path } })), content);
    } finally {
      await w.close();
      dir.remove();
    }
  });

  test('a tool the policy denies is a tool error naming the rule; the session goes on', async () => {
    const policy = [
      'apiVersion: portcullis/v1',
      'kind: Policy',
      'metadata: { name: wrap-test }',
      'server: "*"',
      'default: allow',
      'rules:',
      '  - { name: allow-all, effect: allow, tools: ["*"], resources: ["**"], prompts: ["*"], methods: ["*"] }',
      '  - { name: no-sums, effect: deny, tools: [get-sum], message: sums are not for alice }',
      '',
    ].join('\n');
    const w = await connectWrap({ ev: upstreams.everything() }, 'ev', { policies: { 'p.yaml': policy } });
    try {
      const r = (await w.client.callTool({ name: 'get-sum', arguments: { a: 1, b: 2 } })) as CallToolResult;
      assert.equal(r.isError, true);
      assert.match(text(r), /Denied by policy rule wrap-test\/no-sums: sums are not for alice/);
      assert.equal(text(await w.client.callTool({ name: 'echo', arguments: { message: 'ok' } })), 'Echo: ok');
    } finally {
      await w.close();
    }
  });
});

describe('portcullis wrap: failures and lifecycle', () => {
  test('closing stdin ends the session: wrap exits 0 and its upstream child exits', async () => {
    const dir = tempDir('pcl-wrap-pid-');
    const pidFile = join(dir.path, 'pids');
    const w = await connectWrap({ raw: upstreams.raw({ PID_FILE: pidFile }) }, 'raw');
    try {
      assert.equal(text(await w.client.callTool({ name: 'echo', arguments: { a: 1 } })), '{"a":1}');
      const child = Number(readFileSync(pidFile, 'utf8').trim());
      assert.ok(alive(child));
      const exited = new Promise<number | null>((r) => (w.transport as unknown as { _process: import('node:child_process').ChildProcess })._process.once('exit', (code) => r(code)));
      (w.transport as unknown as { _process: import('node:child_process').ChildProcess })._process.stdin!.end(); // the agent closes stdin
      assert.equal(await exited, 0, w.stderr());
      await waitFor('the upstream child to exit', () => !alive(child), 5_000);
    } finally {
      await w.close();
      dir.remove();
    }
  });

  test('an upstream that crashes mid-call: the call gets a clear error and wrap exits with the reason on stderr', async () => {
    const w = await connectWrap({ raw: upstreams.raw() }, 'raw');
    try {
      const exited = new Promise<number | null>((r) => (w.transport as unknown as { _process: import('node:child_process').ChildProcess })._process.once('exit', (code) => r(code)));
      await assert.rejects(w.client.callTool({ name: 'crash', arguments: {} }, undefined, { timeout: 10_000 }), (e: Error) => {
        assert.match(e.message, /session ended: upstream "raw" .*exited \(code 3\)/, e.message);
        return true;
      });
      const code = await exited;
      assert.notEqual(code, null);
      assert.match(w.stderr(), /exited \(code 3\)/);
    } finally {
      await w.close();
    }
  });

  test('an upstream command that does not exist: wrap fails with one clear line naming it, exit 1', async () => {
    const { file, dir } = writeConfig({ servers: { ghost: { transport: 'stdio', command: 'portcullis-e2e-no-such-command' } } });
    try {
      const p = runPortcullis(['wrap', '-c', file, '--server', 'ghost', '--identity', 'alice']);
      p.child.stdin?.end();
      const { code } = await p.exited;
      assert.equal(code, 1, p.output());
      assert.match(p.output(), /portcullis-e2e-no-such-command/);
    } finally {
      dir.remove();
    }
  });

  test('bad usage: an unknown server name exits 2 with one clear line', async () => {
    const { file, dir } = writeConfig({ servers: { raw: upstreams.raw() } });
    try {
      const p = runPortcullis(['wrap', '-c', file, '--server', 'nope', '--identity', 'alice']);
      const { code } = await p.exited;
      assert.equal(code, 2, p.output());
      assert.match(p.output(), /no server named "nope".*have: raw/);
    } finally {
      dir.remove();
    }
  });

  test('unreadable lines on stdin are refused with the same errors as on HTTP; the session keeps answering', async () => {
    const w = await rawWrap({ raw: upstreams.raw() }, 'raw');
    try {
      w.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: CLIENT_INFO } }));
      const init = await w.reply(1);
      assert.equal(init.result.protocolVersion, '2025-06-18');
      assert.equal(init.result.serverInfo.name, 'raw-fixture');
      w.send(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));
      w.send('this is not json');
      w.send('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":42}}');
      w.send('[{"jsonrpc":"2.0","id":3,"method":"ping"}]');
      w.send(JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'ping' }));
      w.send('{"jsonrpc":"2.0","id":5,"method":"ping","params":' + '['.repeat(200) + ']'.repeat(200) + '}');
      w.send(JSON.stringify({ jsonrpc: '2.0', id: 6, method: 'ping' }));
      assert.deepEqual(await w.reply(6), { jsonrpc: '2.0', id: 6, result: {} });
      assert.deepEqual(await w.reply(4), { jsonrpc: '2.0', id: 4, result: {} });
      assert.equal(w.lines.find((l) => l.id === 2)?.error?.code, -32602, JSON.stringify(w.lines));
      // Refusals that cannot name their request answer with id null, in the order they were sent.
      const nulls = w.lines.filter((l) => l.id === null).map((l) => l.error.code);
      assert.deepEqual(nulls, [-32700, -32600, -32600], JSON.stringify(w.lines));
      assert.equal(w.lines.some((l) => l.id === 3 || l.id === 5), false, 'a batch and an over-deep message are not forwarded');
    } finally {
      await w.close();
    }
  });

  test('a message ends at "\\n" only: U+2028 and U+2029 raw in a string (JSON.stringify leaves them so) stay one message both ways, on every Node', async () => {
    const dir = tempDir('pcl-wrap-lines-');
    const record = join(dir.path, 'received.jsonl');
    const w = await rawWrap({ raw: upstreams.raw({ RECORD_FILE: record }) }, 'raw');
    try {
      w.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: CLIENT_INFO } }));
      await w.reply(1);
      w.send(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));
      const message = 'one\u2028two\u2029three';
      const line = JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { message } } });
      assert.ok(line.includes('\u2028') && line.includes('\u2029'), 'raw in the line');
      w.send(line);
      const reply = await w.reply(2);
      assert.deepEqual(JSON.parse(reply.result.content[0].text), { message });
      assert.equal(w.lines.filter((l) => l.error).length, 0, JSON.stringify(w.lines));
      const received = readFileSync(record, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.deepEqual(received.find((m) => m.id === 2)?.params.arguments, { message });
    } finally {
      await w.close();
      dir.remove();
    }
  });

  test('progress on the wire: every notification reaches stdout, in order, before the result', async () => {
    const w = await rawWrap({ ev: upstreams.everything() }, 'ev');
    try {
      w.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: CLIENT_INFO } }));
      await w.reply(1);
      w.send(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));
      for (let round = 0; round < 5; round++) {
        const from = w.lines.length;
        const id = `lro-${round}`;
        w.send(JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'trigger-long-running-operation', arguments: { duration: 0.05, steps: 5 }, _meta: { progressToken: round } } }));
        await w.reply(id);
        const kinds = w.lines
          .slice(from)
          .filter((m) => (m.method === 'notifications/progress' && m.params.progressToken === round) || m.id === id)
          .map((m) => (m.id === id ? 'result' : m.params.progress));
        assert.deepEqual(kinds, [1, 2, 3, 4, 5, 'result']);
      }
    } finally {
      await w.close();
    }
  });
});

describe('portcullis wrap: from the first byte to the last process', () => {
  const init = (id: number) => JSON.stringify({ jsonrpc: '2.0', id, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: CLIENT_INFO } });
  const echo = (id: number, message: string) => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: { message } } });

  test('lines written at once, while a slow upstream keeps the session from opening, are all answered, in order', async () => {
    const up = await startSlowSseUpstream(1_500);
    const w = await rawWrap({ slow: { transport: 'sse', url: up.url } }, 'slow');
    try {
      const start = Date.now();
      w.send(init(1));
      w.send(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));
      w.send(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }));
      for (let id = 3; id <= 12; id++) w.send(echo(id, `message ${id}`));
      w.send(JSON.stringify({ jsonrpc: '2.0', id: 13, method: 'ping' }));
      await w.reply(13);
      assert.ok(Date.now() - start >= 1_500, 'the session opened before the upstream was up');
      assert.deepEqual(w.lines.map((l) => l.id), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], JSON.stringify(w.lines));
      assert.equal(w.lines[0].result.serverInfo.name, 'slow-sse-upstream');
      assert.deepEqual(w.lines[1].result.tools.map((t: { name: string }) => t.name), ['echo']);
      for (const l of w.lines.slice(2, 12)) assert.equal(l.result.content[0].text, `message ${l.id}`);
    } finally {
      await w.close();
      await up.close();
    }
  });

  test('what waits for the session is bounded: lines beyond the bound are refused at once, with their id; the rest are answered', async () => {
    const up = await startSlowSseUpstream(1_500);
    // limits.maxBodyBytes bounds the bytes that may wait.
    const w = await rawWrap({ slow: { transport: 'sse', url: up.url } }, 'slow', undefined, { limits: { maxBodyBytes: 1_024 } });
    try {
      w.send(init(1));
      const filler = 'x'.repeat(150);
      for (let id = 2; id <= 11; id++) w.send(echo(id, `${id} ${filler}`));
      const refused = await waitFor('a refusal', () => w.lines.find((l) => l.error?.code === -32000), 15_000);
      assert.match(refused.error.message, /session is still opening/);
      await waitFor('an answer or a refusal for every line', () => new Set(w.lines.map((l) => l.id)).size === 11, 15_000);
      const answered = w.lines.filter((l) => 'result' in l).map((l) => l.id);
      const refusedIds = w.lines.filter((l) => l.error?.code === -32000).map((l) => l.id);
      assert.ok(answered.length >= 2 && refusedIds.length >= 1, JSON.stringify(w.lines));
      // What fitted waited and was answered in order; everything after the first refusal was refused.
      assert.deepEqual([...answered, ...refusedIds].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      assert.deepEqual(answered, answered.slice().sort((a, b) => a - b));
      assert.ok(Math.max(...answered) < Math.min(...refusedIds), JSON.stringify({ answered, refusedIds }));
    } finally {
      await w.close();
      await up.close();
    }
  });

  test('SIGTERM to wrap: the call in flight finishes, the upstream (through npx) exits with everything it started, exit 0, closing checkpoint, audit verify passes', async () => {
    const mark = randomUUID();
    const w = await rawWrap({ npx: launchers(mark).npx }, 'npx');
    try {
      w.send(init(1));
      await w.reply(1);
      w.send(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));
      const procs = marked(mark);
      assert.ok(procs.length >= 2, `npx and the server it started: ${JSON.stringify(procs)}`);
      const pgid = procs[0].pgid;
      w.send(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 2 } } }));
      await new Promise((r) => setTimeout(r, 200));
      w.p.child.kill('SIGTERM');
      const answer = await w.reply(2);
      assert.match(answer.result.content[0].text, /Long running operation completed/);
      const { code, signal } = await w.p.exited;
      assert.deepEqual({ code, signal }, { code: 0, signal: null }, w.p.output());
      await waitFor('the upstream processes to exit', () => marked(mark).length === 0 && groupMembers(pgid).length === 0, 8_000);
      const audit = await auditState(w.dir);
      assert.deepEqual(audit.types.filter((t) => t.startsWith('session.')), ['session.start', 'session.end']);
      assert.equal(audit.lastCheckpointSeq, audit.headSeq, 'the closing checkpoint is missing');
      const verify = runPortcullis(['audit', 'verify', '-c', w.file]);
      assert.equal((await verify.exited).code, 0, verify.output());
    } finally {
      await w.close();
    }
  });
});
