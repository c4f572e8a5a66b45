// The stdio front: `portcullis wrap -c <config> --server X --identity alice` as a child process,
// driven by the official SDK client over its stdin/stdout, to real MCP servers.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { everythingSuite, text } from '../fixtures/everything-suite.js';
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
