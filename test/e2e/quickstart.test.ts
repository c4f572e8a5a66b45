// The README's quick start, as written: `npm start` in the checkout (whose `npm install` the test
// run already is) serves the demo on 127.0.0.1:8080, prints where to connect, and an MCP client
// at the printed URL is served under the example policy; Ctrl-C stops it, exit 0.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectHttp, ROOT, waitFor } from './harness.js';

test('README quick start: npm start serves the demo at the printed URLs; Ctrl-C stops it', { timeout: 120_000 }, async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const quick = readme.slice(readme.indexOf('## Quick start'), readme.indexOf('## Install in a project'));
  assert.match(quick, /```sh\nnpm install && npm start\n```/, 'the quick start is still `npm install && npm start`');
  const printed = [...quick.matchAll(/^ {2}(http:\/\/127\.0\.0\.1:8080\/mcp\/\S+)$/gm)].map((m) => m[1]);
  assert.deepEqual(printed, ['http://127.0.0.1:8080/mcp/everything', 'http://127.0.0.1:8080/mcp/files']);

  // Its own process group, as a terminal gives it: Ctrl-C reaches npm and the gateway alike.
  const npm = spawn('npm', ['start'], { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  npm.stdout.on('data', (d: Buffer) => (out += d.toString()));
  npm.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => npm.once('exit', (code) => r(code)));
  t.after(() => {
    if (npm.exitCode === null) process.kill(-npm.pid!, 'SIGKILL');
  });
  await waitFor('the gateway to print its endpoints', () => printed.every((url) => out.includes(url)), 60_000);

  const client = await connectHttp(printed[0]);
  const tools = (await client.listTools()).tools.map((x) => x.name);
  assert.ok(tools.includes('echo') && !tools.includes('get-env'), `the example policy filters the list: ${tools.join(', ')}`);
  const r = (await client.callTool({ name: 'echo', arguments: { message: 'hello from the quick start' } })) as { content: { text: string }[] };
  assert.equal(r.content[0].text, 'Echo: hello from the quick start');
  const denied = (await client.callTool({ name: 'get-env', arguments: {} })) as { isError?: boolean; content: { text: string }[] };
  assert.equal(denied.isError, true);
  assert.match(denied.content[0].text, /everything\/never-read-env/);
  await client.close();

  process.kill(-npm.pid!, 'SIGINT');
  assert.equal(await exited, 0, out);
});
