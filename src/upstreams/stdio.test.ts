// The stdio upstream transport ends its whole process group: what ignores stdin EOF and SIGTERM
// is SIGKILLed after the grace period, and what the leader leaves behind goes with it.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { getDefaultEnvironment } from '@modelcontextprotocol/sdk/client/stdio.js';
import { groupMembers, marked } from '../../test/support/processes.js';
import { killStdioUpstreams, StdioUpstreamTransport } from './stdio.js';

function shell(script: string, mark: string, graceMs = 300): StdioUpstreamTransport {
  return new StdioUpstreamTransport({ command: 'sh', args: ['-c', script], env: { ...getDefaultEnvironment(), PCL_PROC_MARK: mark }, cwd: process.cwd(), graceMs });
}

async function until(what: string, ok: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('a group that ignores stdin EOF and SIGTERM is SIGKILLed after the grace period; close() resolves once it is gone', async () => {
  const mark = randomUUID();
  // The shell and its child both ignore SIGTERM (an ignored signal stays ignored across exec).
  const t = shell('trap "" TERM; sleep 60; sleep 60', mark);
  await t.start();
  await until('the group to start', () => marked(mark).length === 2);
  const pgid = t.pid!;
  assert.deepEqual(new Set(marked(mark).map((p) => p.pgid)), new Set([pgid]));
  const started = Date.now();
  await t.close();
  const took = Date.now() - started;
  assert.deepEqual(groupMembers(pgid), []);
  assert.ok(took >= 550 && took < 3_000, `close took ${took} ms: stdin EOF, SIGTERM and their two grace periods, then SIGKILL`);
  assert.equal(t.exitStatus, 'SIGKILL');
});

test('when the leader exits, what it left running in its group is ended, and only then is the upstream reported closed', async () => {
  const mark = randomUUID();
  const t = shell('sleep 60 & echo started >&2; exit 0', mark);
  let closedAt = 0;
  t.onclose = () => (closedAt = Date.now());
  await t.start();
  await until('the upstream to be reported closed', () => closedAt > 0);
  assert.equal(t.exitStatus, 'code 0');
  assert.deepEqual(marked(mark), [], 'the background sleep outlived its leader');
});

test('killStdioUpstreams SIGKILLs every live group at once (a forced shutdown, the way out)', async () => {
  const marks = [randomUUID(), randomUUID()];
  const ts = marks.map((m) => shell('trap "" TERM; sleep 60; sleep 60', m, 60_000));
  await Promise.all(ts.map((t) => t.start()));
  await until('both groups to start', () => marks.every((m) => marked(m).length === 2));
  const closing = ts.map((t) => t.close()); // would take two minutes of grace
  killStdioUpstreams();
  await Promise.all(closing);
  for (const m of marks) assert.deepEqual(marked(m), []);
});
