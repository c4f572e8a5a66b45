// Graceful shutdown of `portcullis serve`: SIGTERM lets the call in flight finish, then the
// process stops listening, exits 0, and every stdio upstream child it started is gone.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { alive, connectHttp, runPortcullis, tempDir, upstreams, waitFor, writeConfig } from './harness.js';

const text = (r: unknown) => ((r as CallToolResult).content as Array<{ text?: string }>).map((c) => c.text ?? '').join('\n');

/** The pids whose parent is `pid` (Linux /proc). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(true));
  });
}

test('SIGTERM: the call in flight finishes, then serve stops listening, exits 0, and its upstream children exit', { timeout: 60_000 }, async () => {
  const pids = tempDir('pcl-serve-pids-');
  const pidFile = join(pids.path, 'pids');
  const { file, dir } = writeConfig({
    listen: { host: '127.0.0.1', port: 0 },
    servers: { raw: upstreams.raw({ PID_FILE: pidFile }), ev: upstreams.everything() },
    auth: { anonymous: true },
    logging: { level: 'info' },
  });
  const serve = runPortcullis(['serve', '-c', file]);
  try {
    await waitFor('serve to listen', () => /http:\/\/127\.0\.0\.1:\d+\/mcp\/ev/.test(serve.output()), 20_000, 50);
    const base = /http:\/\/127\.0\.0\.1:(\d+)\/mcp\/raw/.exec(serve.output())!;
    const port = Number(base[1]);
    const raw = await connectHttp(`http://127.0.0.1:${port}/mcp/raw`);
    const ev = await connectHttp(`http://127.0.0.1:${port}/mcp/ev`);
    // Policy is wired: calls are allowed and answered.
    assert.equal(text(await raw.callTool({ name: 'echo', arguments: { hi: 1 } })), '{"hi":1}');
    assert.equal(text(await ev.callTool({ name: 'echo', arguments: { message: 'before shutdown' } })), 'Echo: before shutdown');

    const upstreamPids = childrenOf(serve.pid);
    assert.equal(upstreamPids.length, 2, `expected two stdio children of serve, found ${upstreamPids.join(', ')}`);
    assert.ok(upstreamPids.includes(Number(readFileSync(pidFile, 'utf8').trim())));

    const inFlight = raw.callTool({ name: 'slow', arguments: { ms: 1_000 } });
    await new Promise((r) => setTimeout(r, 200));
    serve.child.kill('SIGTERM');
    assert.equal(text(await inFlight), 'slow done', 'the call in flight at SIGTERM was not drained');

    const { code, signal } = await serve.exited;
    assert.equal(signal, null);
    assert.equal(code, 0, serve.output());
    assert.ok(await refused(port), 'still listening after exit');
    await waitFor('the upstream children to exit', () => upstreamPids.every((p) => !alive(p)), 5_000);
    await Promise.all([raw.close().catch(() => undefined), ev.close().catch(() => undefined)]);
  } finally {
    await serve.stop('SIGKILL');
    dir.remove();
    pids.remove();
  }
});

test('serve with a config error exits 1 before listening, naming the file and the field', async () => {
  const { file, dir } = writeConfig({ servers: { raw: upstreams.raw() }, limits: { maxBodyBytes: -1 } });
  try {
    const serve = runPortcullis(['serve', '-c', file]);
    const { code } = await serve.exited;
    assert.equal(code, 1);
    assert.match(serve.output(), /portcullis\.yaml/);
    assert.match(serve.output(), /limits\.maxBodyBytes/);
    assert.doesNotMatch(serve.output(), /listening/);
  } finally {
    dir.remove();
  }
});
