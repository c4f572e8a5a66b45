// The audit writer thread (writer-thread.ts): the chain's order is the order of append() under
// concurrent appends and failures, each caller learns its own outcome, a thread that dies fails
// closed and a new one continues the chain without gap; checkpoints are signed in the thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { PortcullisError } from '../errors.js';
import { postgresSchema, skipWithoutPostgres } from '../../test/fixtures/postgres.js';
import { openStore } from '../store/open.js';
import { SqliteStore } from '../store/sqlite.js';
import type { AuditRecord } from '../store/store.js';
import { AuditLog } from './chain.js';
import { checkpointSignatureValid, loadSigningKey } from './keys.js';
import { Recorder } from './recorder.js';
import { verifyStore } from './verify.js';
import { ThreadWriter } from './writer-thread.js';
import { crashWriterThread, tempDir, writeKey } from './testdata/fixtures.js';

async function open(t: Parameters<typeof tempDir>[0], opts: { checkpointEvery?: number; key?: boolean } = {}) {
  const dir = tempDir(t);
  const store = SqliteStore.open(join(dir, 'audit.db'));
  const signer = opts.key ? loadSigningKey(writeKey(dir)) : undefined;
  const writer = await ThreadWriter.start({ url: 'sqlite:./audit.db', baseDir: dir, signer, checkpointEvery: opts.checkpointEvery ?? 1000 });
  const log = await AuditLog.open(store, { writer });
  t.after(async () => {
    await log.close().catch(() => undefined);
    await writer.close();
    await store.close();
  });
  return { dir, file: join(dir, 'audit.db'), store, writer, log, signer };
}

async function stored(store: Pick<SqliteStore, 'readAudit'>): Promise<AuditRecord[]> {
  const records: AuditRecord[] = [];
  for await (const r of store.readAudit()) records.push(r);
  return records;
}

const isWriteFailure = (pattern: RegExp) => (e: PortcullisError) => e.code === 'PCL_AUDIT_WRITE_FAILED' && pattern.test(e.message);

test('concurrent appends through the thread: the chain is the order of append(), each caller learns its own outcome, failures leave no gap (property)', { timeout: 120_000 }, async (t) => {
  const { file, store, log } = await open(t);
  const inject = new Database(file);
  t.after(() => inject.close());
  // A record whose actor is "boom" cannot be inserted: its transaction fails, with every batch joined into it.
  inject.exec("CREATE TRIGGER boom BEFORE INSERT ON audit_records WHEN NEW.actor = 'boom' BEGIN SELECT RAISE(ABORT, 'boom refused'); END");
  let run = 0;
  await fc.assert(
    fc.asyncProperty(
      // Bursts of appends made in one loop turn, and what separates the bursts.
      fc.array(fc.record({ size: fc.integer({ min: 1, max: 40 }), boom: fc.boolean(), gap: fc.constantFrom('none', 'microtask', 'immediate', 'timer') }), { minLength: 1, maxLength: 12 }),
      async (bursts) => {
        run++;
        const before = await stored(store);
        const calls: { n: number; boom: boolean; outcome: Promise<AuditRecord | Error> }[] = [];
        let n = 0;
        for (const b of bursts) {
          for (let i = 0; i < b.size; i++, n++) {
            const boom = b.boom && i === b.size - 1;
            calls.push({ n, boom, outcome: log.append('decision', boom ? 'boom' : 'alice', { run, n }).catch((e: Error) => e) });
          }
          if (b.gap === 'microtask') await Promise.resolve();
          else if (b.gap === 'immediate') await new Promise((r) => setImmediate(r));
          else if (b.gap === 'timer') await new Promise((r) => setTimeout(r, 1));
        }
        const outcomes = await Promise.all(calls.map((c) => c.outcome));
        const ok = outcomes.filter((o): o is AuditRecord => !(o instanceof Error));
        for (const [i, o] of outcomes.entries()) {
          if (calls[i].boom) assert.ok(o instanceof Error, 'a boom record is never stored');
          if (o instanceof Error) assert.ok(isWriteFailure(/boom refused/)(o as PortcullisError), o.message);
        }
        // Resolved appends, in call order, hold consecutive seqs right after what was stored.
        const first = (before.at(-1)?.seq ?? 0) + 1;
        assert.deepEqual(ok.map((r) => r.seq), ok.map((_, i) => first + i));
        const after = (await stored(store)).slice(before.length);
        assert.deepEqual(after, ok, 'stored exactly what was acknowledged, in the order of append()');
      },
    ),
    { numRuns: 40 },
  );
  const report = await verifyStore(store);
  assert.equal(report.ok, true, report.break?.message);
  assert.ok(log.stats().batches > 0);
});

test('a writer thread that dies refuses the appends it held, the log turns unhealthy (also when it held none); a new thread continues the chain without gap', { timeout: 60_000 }, async (t) => {
  const { file, store, writer, log } = await open(t);
  await log.append('decision', 'alice', { n: 1 });
  const first = writer.worker!;
  // Another connection holds the write lock: the next appends wait inside the thread.
  const other = new Database(file);
  t.after(() => other.close());
  other.exec('BEGIN EXCLUSIVE');
  const held = [log.append('decision', 'alice', { n: 2 }), log.append('decision', 'alice', { n: 3 })].map((p) => p.catch((e: Error) => e));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(log.stats().pending, 2);
  await crashWriterThread(writer);
  for (const o of await Promise.all(held)) assert.ok(o instanceof Error && isWriteFailure(/audit writer thread stopped: the audit writer thread got a call it does not know/)(o as PortcullisError), String(o));
  assert.equal(log.healthy(), false);
  assert.match(log.lastError()!.message, /audit writer thread stopped/);
  other.exec('COMMIT');

  const next = await log.append('decision', 'alice', { n: 4 });
  assert.notEqual(writer.worker, first, 'a new thread serves');
  assert.equal(next.seq, 2, 'nothing of what the dead thread held was stored');
  assert.equal(log.healthy(), true);
  // Dying with nothing in flight shows too: /readyz must not wait for the next request to fail.
  await crashWriterThread(writer);
  assert.equal(log.healthy(), false);
  assert.equal((await log.append('decision', 'alice', { n: 5 })).seq, 3);
  assert.equal(log.healthy(), true);
  const records = await stored(store);
  assert.deepEqual(records.map((r) => r.data.n), [1, 4, 5]);
  assert.equal((await verifyStore(store)).ok, true);
});

test('the thread dying at any moment under load loses no acknowledged record and reorders nothing (property)', { timeout: 180_000 }, async (t) => {
  const { store, writer, log } = await open(t);
  const acked = new Map<number, string>();
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 1, max: 64 }), async (killAfterMs, appenders) => {
      await log.append('decision', 'alice', { warm: true }).then((r) => acked.set(r.seq, r.hash)); // a thread serves again
      let stop = false;
      const loops = Array.from({ length: appenders }, async () => {
        while (!stop) {
          const r = await log.append('decision', 'alice', { appenders }).catch(() => undefined);
          if (r) acked.set(r.seq, r.hash);
          else await new Promise((res) => setTimeout(res, 5));
        }
      });
      await new Promise((r) => setTimeout(r, killAfterMs));
      if (writer.worker) await crashWriterThread(writer);
      await new Promise((r) => setTimeout(r, 20));
      stop = true;
      await Promise.all(loops);
    }),
    { numRuns: 8 },
  );
  await log.flush();
  const records = await stored(store);
  assert.deepEqual(records.map((r) => r.seq), records.map((_, i) => i + 1), 'gapless');
  for (const [seq, hash] of acked) assert.equal(records[seq - 1]?.hash, hash, `acknowledged record ${seq} is stored as acknowledged`);
  const report = await verifyStore(store);
  assert.equal(report.ok, true, report.break?.message);
});

test('a thread that cannot open the store: start fails naming it; after a crash, appends fail at once until a start succeeds', { timeout: 60_000 }, async (t) => {
  const dir = tempDir(t);
  await assert.rejects(ThreadWriter.start({ url: 'sqlite:./missing.db', baseDir: dir, checkpointEvery: 10 }), /audit writer thread could not start: no Portcullis store at .*missing\.db/);

  const { writer, log, file } = await open(t);
  await log.append('decision', 'alice', {});
  const moved = `${file}.away`;
  const { renameSync } = await import('node:fs');
  renameSync(file, moved); // the thread that starts next finds no store
  await crashWriterThread(writer);
  await assert.rejects(log.append('decision', 'alice', {}), isWriteFailure(/could not start: no Portcullis store/));
  const t0 = performance.now();
  await assert.rejects(log.append('decision', 'alice', {}), isWriteFailure(/could not start/));
  assert.ok(performance.now() - t0 < 200, 'within the restart delay, without trying again');
  renameSync(moved, file);
  await new Promise((r) => setTimeout(r, 1_100));
  assert.equal((await log.append('decision', 'alice', {})).seq, 2);
  assert.equal(log.healthy(), true);
});

test('flush() waits for what was appended before it, not for appends that keep coming', { timeout: 60_000 }, async (t) => {
  const { store, log } = await open(t);
  let stop = false;
  const loops = Array.from({ length: 16 }, async (_, k) => {
    for (let i = 0; !stop; i++) await log.append('decision', 'alice', { k, i });
  });
  await new Promise((r) => setTimeout(r, 100));
  const mine = log.append('decision', 'me', { mark: true });
  const started = performance.now();
  await log.flush();
  const waited = performance.now() - started;
  const record = await mine;
  assert.ok(log.stats().pending > 0, 'appends were still coming');
  stop = true;
  await Promise.all(loops);
  assert.ok(waited < 5_000, `flush took ${Math.round(waited)} ms under load`);
  const stored = [];
  for await (const r of store.readAudit({ fromSeq: record.seq, toSeq: record.seq })) stored.push(r);
  assert.deepEqual(stored, [record]);
});

test('checkpoints are signed in the thread, every N records and at close', { timeout: 60_000 }, async (t) => {
  const { store, log, signer } = await open(t, { key: true, checkpointEvery: 4 });
  await Promise.all(Array.from({ length: 10 }, (_, i) => log.append('decision', 'a', { i })));
  await log.close();
  const cps = await store.listCheckpoints();
  assert.deepEqual(cps.map((c) => c.seq), [4, 8, 10]);
  for (const c of cps) assert.equal(checkpointSignatureValid(c, signer!.publicKey), true);
  const report = await verifyStore(store, { publicKey: signer!.publicKey, checkpointEvery: 4 });
  assert.equal(report.ok, true, report.break?.message);
  assert.equal(report.coveredTo, 10);
});

test('recordings written through the thread are chained and sealed; a batch stored before the thread died is not stored twice', { timeout: 60_000 }, async (t) => {
  const { store, writer, log } = await open(t);
  const rec = new Recorder(writer, { audit: log, pruneInterval: 0, sealInterval: 0, flushInterval: 5 });
  for (let i = 0; i < 50; i++) rec.record({ sessionId: `s${i % 3}`, direction: i % 2 ? 'toClient' : 'fromClient', message: { jsonrpc: '2.0', id: i, method: 'ping' }, server: 'demo' });
  await rec.flush();
  // The thread dies after a batch committed and before its answer arrived: the recorder finds the batch stored.
  const original = writer.appendRecordings.bind(writer);
  writer.appendRecordings = async (rows, payloads) => {
    await original(rows, payloads);
    await crashWriterThread(writer);
    throw new Error('the audit writer thread stopped: it exited with code 1');
  };
  rec.record({ sessionId: 's0', direction: 'fromClient', message: { jsonrpc: '2.0', id: 99, method: 'ping' }, server: 'demo' });
  await rec.flush();
  writer.appendRecordings = original;
  for (let s = 0; s < 3; s++) rec.endSession(`s${s}`);
  await rec.close();
  assert.deepEqual((await store.readRecording('s0')).map((m) => m.seq), Array.from({ length: 18 }, (_, i) => i + 1), 'message 99 once');
  assert.equal(rec.stats().failedWrites, 0);
  const report = await verifyStore(store);
  assert.equal(report.ok, true, report.recordings?.breaks[0]?.text ?? report.break?.message);
});

test('PostgreSQL: two replicas, each with its writer thread, appending at once build one gapless chain; each sees its own appends in its order', { skip: skipWithoutPostgres, timeout: 60_000 }, async (t) => {
  const { url } = await postgresSchema(t);
  const replicas = await Promise.all(
    ['a', 'b'].map(async (name) => {
      const store = await openStore(url, '/');
      const writer = await ThreadWriter.start({ url, baseDir: '/', checkpointEvery: 50 });
      const log = await AuditLog.open(store, { writer });
      t.after(async () => (await writer.close(), await store.close()));
      return { name, store, writer, log };
    }),
  );
  const appended = await Promise.all(Array.from({ length: 400 }, (_, i) => replicas[i % 2].log.append('decision', replicas[i % 2].name, { i })));
  for (const { name } of replicas) {
    const own = appended.filter((r) => r.actor === name).map((r) => r.seq);
    assert.deepEqual(own, [...own].sort((x, y) => x - y), `replica ${name}: seq in the order of its appends`);
  }
  for (const { log } of replicas) await log.close();
  const records = await stored(replicas[0].store);
  assert.deepEqual(records.map((r) => r.seq), Array.from({ length: 400 }, (_, i) => i + 1));
  const report = await verifyStore(replicas[0].store, { checkpointEvery: 50 });
  assert.equal(report.ok, true, report.break?.message);
  assert.deepEqual((await replicas[0].store.listCheckpoints()).slice(0, 8).map((c) => c.seq), [50, 100, 150, 200, 250, 300, 350, 400]);
});
