// The stdio upstream transport ends its whole process group: what ignores stdin EOF and SIGTERM
// is SIGKILLed after the grace period, and what the leader leaves behind goes with it.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { getDefaultEnvironment } from '@modelcontextprotocol/sdk/client/stdio.js';
import { waitFor } from '../../test/e2e/harness.js';
import { groupMembers, marked } from '../../test/support/processes.js';
import { killStdioUpstreams, StdioUpstreamTransport } from './stdio.js';

function shell(script: string, mark: string, graceMs = 300): StdioUpstreamTransport {
  return new StdioUpstreamTransport({ command: 'sh', args: ['-c', script], env: { ...getDefaultEnvironment(), PCL_PROC_MARK: mark }, cwd: process.cwd(), graceMs });
}

test('a group that ignores stdin EOF and SIGTERM is SIGKILLed after the grace period; close() resolves once it is gone', async () => {
  const mark = randomUUID();
  // The shell and its child both ignore SIGTERM (an ignored signal stays ignored across exec).
  const t = shell('trap "" TERM; sleep 60; sleep 60', mark);
  await t.start();
  await waitFor('the group to start', () => marked(mark).length === 2);
  const pgid = t.pid!;
  assert.deepEqual(new Set(marked(mark).map((p) => p.pgid)), new Set([pgid]));
  const started = Date.now();
  await t.close();
  const took = Date.now() - started;
  assert.deepEqual(groupMembers(pgid), []);
  assert.ok(took >= 550 && took < 10_000, `close took ${took} ms: stdin EOF, SIGTERM and their two grace periods, then SIGKILL`);
  assert.equal(t.exitStatus, 'SIGKILL');
});

test('when the leader exits, what it left running in its group is ended, and only then is the upstream reported closed', async () => {
  const mark = randomUUID();
  const t = shell('sleep 60 & echo started >&2; exit 0', mark);
  let closedAt = 0;
  t.onclose = () => (closedAt = Date.now());
  await t.start();
  await waitFor('the upstream to be reported closed', () => closedAt > 0);
  assert.equal(t.exitStatus, 'code 0');
  assert.deepEqual(marked(mark), [], 'the background sleep outlived its leader');
});

test('killStdioUpstreams SIGKILLs every live group at once (a forced shutdown, the way out)', async () => {
  const marks = [randomUUID(), randomUUID()];
  const ts = marks.map((m) => shell('trap "" TERM; sleep 60; sleep 60', m, 60_000));
  await Promise.all(ts.map((t) => t.start()));
  await waitFor('both groups to start', () => marks.every((m) => marked(m).length === 2));
  const closing = ts.map((t) => t.close()); // would take two minutes of grace
  killStdioUpstreams();
  await Promise.all(closing);
  for (const m of marks) assert.deepEqual(marked(m), []);
});

test('a process that exits (process.exit, an uncaught exception) takes its upstream groups with it', async () => {
  for (const ending of ['process.exit(0)', 'throw new Error("boom")']) {
    const mark = randomUUID();
    const script = [
      `import { StdioUpstreamTransport } from ${JSON.stringify(new URL('./stdio.ts', import.meta.url).href)};`,
      `const t = new StdioUpstreamTransport({ command: 'sh', args: ['-c', 'trap "" TERM; sleep 60; sleep 60'], env: { PATH: process.env.PATH, PCL_PROC_MARK: ${JSON.stringify(mark)} }, cwd: '/', graceMs: 60000 });`,
      'await t.start();',
      'await new Promise((r) => setTimeout(r, 300));',
      'process.stdout.write(`started ${t.pid}\\n`);',
      ending,
    ].join('\n');
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.notEqual(code, null);
    assert.match(out, /^started \d+\n$/, 'the upstream did not start');
    // SIGKILLed on the way out; on a busy machine the kernel takes a moment to end them (sleep 60 would outlast this)
    await waitFor(`the upstream group to end with the process after ${ending}`, () => marked(mark).length === 0, 3_000);
  }
});
