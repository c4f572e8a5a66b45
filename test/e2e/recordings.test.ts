// Recordings are tamper-evident end to end (docs/audit.md, "Recordings in the chain"): real
// sessions through the gateway wired as `portcullis serve` wires it, to server-everything; then
// the SQLite file is edited as an attacker would, and `portcullis audit verify` and `portcullis
// replay`, run as processes, must exit 1 naming the session and the message (0 while intact).
import type { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import Database from 'better-sqlite3';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectHttp, runPortcullis, startConfiguredGateway, tempDir, upstreams } from './harness.js';

async function pcl(args: string[]): Promise<{ code: number | null; out: string }> {
  const p = runPortcullis(args);
  const { code } = await p.exited;
  return { code, out: p.output() };
}

test('a recording edited in the SQLite file fails audit verify and replay, naming the session and the message', { timeout: 90_000 }, async (t) => {
  const keys = tempDir('pcl-key-');
  t.after(() => keys.remove());
  const key = join(keys.path, 'audit-ed25519.pem');
  writeFileSync(key, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const gw = await startConfiguredGateway({ servers: { ev: upstreams.everything() }, auth: { anonymous: true }, audit: { signingKey: key } });
  t.after(() => gw.close());

  const sessions: string[] = [];
  for (const word of ['first', 'second']) {
    const client = await connectHttp(gw.url('ev'));
    sessions.push((client.transport as StreamableHTTPClientTransport).sessionId!);
    await client.listTools();
    for (let i = 0; i < 3; i++) await client.callTool({ name: 'echo', arguments: { message: `${word} ${i}` } });
    await (client.transport as StreamableHTTPClientTransport).terminateSession();
    await client.close();
  }
  await gw.running.close(); // flushes and seals the recordings, writes the closing checkpoint
  const [a, b] = sessions;

  const intact = await pcl(['audit', 'verify', '-c', gw.file]);
  assert.equal(intact.code, 0, intact.out);
  assert.match(intact.out, /^ok: \d+ records verified .*signatures valid; \d+ recorded messages in 2 sessions verified$/m);
  assert.equal((await pcl(['replay', a, '-c', gw.file])).code, 0);

  const db = new Database(join(gw.dir, 'data/portcullis.db'));
  t.after(() => db.close());
  const at = (session: string, text: string) => db.prepare('SELECT id, seq, body FROM recordings WHERE session_id = ? AND body LIKE ?').get(session, `%${text}%`) as { id: number; seq: number; body: string };

  // A tools/call argument rewritten in the first session.
  const call = at(a, '"first 1"');
  db.prepare('UPDATE recordings SET body = ? WHERE id = ?').run(call.body.replace('first 1', 'first 9'), call.id);
  const changed = await pcl(['audit', 'verify', '-c', gw.file]);
  assert.equal(changed.code, 1, changed.out);
  assert.match(changed.out, new RegExp(`^recording of session ${a} broken at message ${call.seq} \\(changed\\): message ${call.seq} does not match its hash`, 'm'));
  assert.doesNotMatch(changed.out, new RegExp(b), 'the other session verifies');
  const replay = await pcl(['replay', a, '-c', gw.file]);
  assert.equal(replay.code, 1);
  assert.match(replay.out, /tools\/call #\d+ .*echo \{"message":"first 9"\}/, 'the recording is still shown');
  assert.match(replay.out, new RegExp(`this recording fails verification: recording of session ${a} broken at message ${call.seq} \\(changed\\)`));
  assert.equal((await pcl(['replay', b, '-c', gw.file])).code, 0, 'the untouched session replays cleanly');
  db.prepare('UPDATE recordings SET body = ? WHERE id = ?').run(call.body, call.id);
  assert.equal((await pcl(['audit', 'verify', '-c', gw.file])).code, 0, 'restored, it verifies again');

  // The second session's tail cut off from its last echo request on.
  const last = at(b, '"second 2"');
  db.prepare('DELETE FROM recordings WHERE session_id = ? AND seq >= ?').run(b, last.seq);
  const cut = await pcl(['audit', 'verify', '-c', gw.file]);
  assert.equal(cut.code, 1, cut.out);
  assert.match(cut.out, new RegExp(`^recording of session ${b} broken at message ${last.seq} \\(truncated\\)`, 'm'));

  // A message of the first session moved into the second.
  db.prepare('UPDATE recordings SET session_id = ? WHERE id = ?').run(b, call.id);
  const moved = await pcl(['audit', 'verify', '-c', gw.file, '--json']);
  assert.equal(moved.code, 1);
  const report = JSON.parse(moved.out) as { recordings: { breaks: { session: string; message: number; kind: string }[] } };
  const fromA = report.recordings.breaks.find((x) => x.session === a);
  assert.deepEqual([fromA?.message, fromA?.kind], [call.seq, 'deleted']);
});
