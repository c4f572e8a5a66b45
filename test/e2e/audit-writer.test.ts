// The audit writer thread end to end (docs/audit.md, "Durability and group commit"), through the
// gateway wired as `portcullis serve` wires it, to a real upstream process that reads the store:
// - durable before forward: when the upstream receives a call, the call's decision record is
//   committed in the store; while the record cannot be committed, the call is not forwarded, and
//   the gateway keeps serving;
// - the writer thread dies with a call's record in it: the call is refused and never reaches the
//   upstream, /readyz is 503 with audit failing; the next call is written by a new thread, and
//   the chain verifies.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import Database from 'better-sqlite3';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { crashWriterThread } from '../../src/audit/testdata/fixtures.js';
import type { ThreadWriter } from '../../src/audit/writer-thread.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import { verifyStore } from '../../src/audit/verify.js';
import { connectHttp, raw, startConfiguredGateway, tempDir, upstreams, waitFor } from './harness.js';

const text = (r: unknown) => ((r as CallToolResult).content as Array<{ text?: string }>).map((c) => c.text ?? '').join('\n');
const received = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8') : '');

/**
 * A gateway on a SQLite store in a scratch folder, in front of the raw upstream, which records what
 * it receives and reads the store; a client of it, and another connection to the store.
 */
async function start(writer: 'thread' | 'loop' = 'thread') {
  const scratch = tempDir('pcl-audit-writer-');
  const record = join(scratch.path, 'upstream-received.jsonl');
  const db = join(scratch.path, 'portcullis.db');
  const gw = await startConfiguredGateway({ servers: { raw: upstreams.raw({ RECORD_FILE: record, AUDIT_DB: db }) }, auth: { anonymous: true }, store: { url: `sqlite:${db}` }, audit: { writer } });
  const other = new Database(db);
  const client = await connectHttp(gw.url('raw'));
  const stop = async () => {
    if (other.inTransaction) other.exec('ROLLBACK');
    other.close();
    await client.close().catch(() => undefined);
    await gw.close();
    scratch.remove();
  };
  return { record, db, gw, other, client, stop };
}

for (const writer of ['thread', 'loop'] as const) {
  test(`durable before forward (audit.writer: ${writer}): the upstream finds the call's decision record committed; while it cannot be committed, nothing is forwarded`, { timeout: 60_000 }, async () => {
    const { record, gw, other, client, stop } = await start(writer);
    try {
      const w = gw.running.wiring.auditing.writer;
      assert.equal(w.constructor.name === 'ThreadWriter', writer === 'thread');
      assert.equal(w.pipelined, writer === 'thread', 'only the thread pipelines batches');
      const first = JSON.parse(text(await client.callTool({ name: 'audited', arguments: { tag: 'first' } }))) as { recordedSeq: number | null };
      assert.equal(typeof first.recordedSeq, 'number', 'the upstream found the decision committed when the call arrived');

      // Another connection holds the write lock: the record cannot be committed yet.
      other.exec('BEGIN IMMEDIATE');
      const held = client.callTool({ name: 'audited', arguments: { tag: 'held' } }, undefined, { timeout: 30_000 });
      await waitFor('the decision record to wait for the store', () => gw.running.wiring.auditing.log.stats().pending > 0);
      for (let i = 0; i < 4; i++) {
        const t = performance.now();
        // The thread keeps the event loop free meanwhile; on the loop, the wait is the loop's own.
        if (writer === 'thread') {
          assert.equal((await raw(gw.base, '/healthz', { method: 'GET' })).status, 200);
          assert.ok(performance.now() - t < 500, 'the gateway answers while the record waits');
        }
        await new Promise((r) => setTimeout(r, 150));
      }
      assert.equal(received(record).includes('"held"'), false, 'forwarded before its record was committed');
      other.exec('COMMIT');
      const after = JSON.parse(text(await held)) as { recordedSeq: number | null };
      assert.ok(after.recordedSeq! > first.recordedSeq!, 'committed before the upstream received it');
      assert.equal(received(record).includes('"held"'), true);
    } finally {
      await stop();
    }
  });
}

test('the writer thread dies holding a call\'s record: the call is refused and never forwarded, /readyz fails; a new thread writes the next call and the chain verifies', { timeout: 60_000 }, async () => {
  const { record, db, gw, other, client, stop } = await start();
  try {
    const auditing = gw.running.wiring.auditing;
    const writer = auditing.writer as ThreadWriter;
    assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'before' } })), '{"message":"before"}');

    // The record of the next call waits inside the thread (the store is locked) when the thread dies.
    other.exec('BEGIN IMMEDIATE');
    const refused = client.callTool({ name: 'echo', arguments: { message: 'MUST-NOT-ARRIVE' } }).then(
      (r) => ({ ok: r }),
      (e: Error & { code?: number; data?: { code?: string } }) => ({ error: e }),
    );
    await waitFor('the decision record to wait in the thread', () => auditing.log.stats().pending > 0);
    const dead = writer.worker!;
    await crashWriterThread(writer);
    other.exec('COMMIT');
    const r = await refused;
    assert.ok('error' in r, `the call was answered: ${JSON.stringify(r)}`);
    assert.equal(r.error.code, -32603);
    assert.match(r.error.message, /Audit log unavailable: the request was not forwarded \(PCL_AUDIT_WRITE_FAILED\)$/);
    const ready = await raw(gw.base, '/readyz', { method: 'GET' });
    assert.equal(ready.status, 503);
    assert.equal(ready.json.checks.audit, 'failing');
    assert.match((await raw(gw.base, '/metrics', { method: 'GET' })).text, /^portcullis_audit_healthy 0$/m);
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(received(record).includes('MUST-NOT-ARRIVE'), false, 'the upstream received the refused call');

    // A new thread serves: calls work, readiness comes back.
    assert.equal(text(await client.callTool({ name: 'echo', arguments: { message: 'after' } })), '{"message":"after"}');
    assert.notEqual(writer.worker, dead);
    assert.equal((await raw(gw.base, '/readyz', { method: 'GET' })).status, 200);
    await client.close();
    await gw.running.close();
    const store = SqliteStore.open(db, { mustExist: true });
    try {
      const records = [];
      for await (const x of store.readAudit()) records.push(x);
      assert.deepEqual(records.map((x) => x.seq), records.map((_, i) => i + 1), 'no gap where the thread died');
      const calls = records.filter((x) => x.type === 'decision' && x.data.tool === 'echo');
      assert.equal(calls.length, 2, 'the refused call\'s record was not stored');
      const report = await verifyStore(store);
      assert.equal(report.ok, true, report.break?.message ?? report.recordings?.breaks[0]?.text);
    } finally {
      await store.close();
    }
  } finally {
    await stop();
  }
});
