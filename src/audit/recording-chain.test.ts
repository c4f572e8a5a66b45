// Recordings are tamper-evident: whatever single edit is made to a recording with SQL on the
// store file (a field changed, a payload changed, a message deleted, inserted, swapped, moved to
// another session, the tail cut off), verify fails and names the session and the message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { SqliteStore } from '../store/sqlite.js';
import { recordSessions, sessionsArb, tamper, TAMPER_KINDS, type Sql } from '../../test/recording-tamper.js';
import { AuditLog } from './chain.js';
import { linkHash } from './recording-chain.js';
import { Recorder } from './recorder.js';
import { describeReport, verifyStore } from './verify.js';
import { cli, tempDir } from './testdata/fixtures.js';

/** SQL straight on the file, as an attacker with the database would. */
export function sqliteSql(file: string): Sql & { close(): void } {
  const db = new Database(file);
  return {
    async query(sql, params = []) {
      const order: unknown[] = [];
      const stmt = db.prepare(sql.replace(/\$(\d+)/g, (_, n: string) => (order.push(params[Number(n) - 1]), '?')));
      return stmt.reader ? (stmt.all(...order) as Record<string, unknown>[]) : (stmt.run(...order), []);
    },
    close: () => db.close(),
  };
}

test('property: any single SQL edit of a recording fails verify, naming the session and the message', { timeout: 170_000 }, async (t) => {
  const dir = tempDir(t);
  let run = 0;
  await fc.assert(
    fc.asyncProperty(
      sessionsArb,
      fc.array(fc.nat(10), { minLength: 5, maxLength: 40 }),
      fc.integer({ min: 1, max: 5 }),
      fc.constantFrom(...TAMPER_KINDS),
      fc.nat(1000),
      async (sessions, order, sealEvery, kind, pick) => {
        const file = join(dir, `p${run++}.db`);
        const store = SqliteStore.open(file);
        try {
          await recordSessions(store, sessions, order, sealEvery);
          const before = await verifyStore(store, { checkpointEvery: 7 });
          assert.equal(before.ok, true, describeReport(before));
          assert.equal(before.recordings?.messages, sessions.reduce((n, s) => n + s.messages.length, 0));
          assert.deepEqual(before.recordings?.unsealed, []);

          const sql = sqliteSql(file);
          const done = await tamper(sql, kind, pick).finally(() => sql.close());
          fc.pre(done !== undefined);
          const after = await verifyStore(store, { checkpointEvery: 7 });
          assert.equal(after.ok, false, `${done!.what}: verify passed`);
          assert.equal(after.break, undefined, 'the audit chain itself is intact');
          const breaks = after.recordings!.breaks;
          assert.ok(
            breaks.some((b) => b.session === done!.expect.session && b.message === done!.expect.message),
            `${done!.what}: expected session ${done!.expect.session} message ${done!.expect.message}, got ${describeReport(after)}`,
          );
          for (const b of breaks) assert.ok(done!.sessions.has(b.session), `${done!.what}: session ${b.session} reported too`);
        } finally {
          await store.close();
        }
      },
    ),
    { numRuns: 150 },
  );
});

/** One session of n messages, sealed every `sealEvery`; `end` seals it as final. */
async function session(t: Parameters<typeof tempDir>[0], n: number, opts: { sealEvery?: number; end?: boolean; id?: string } = {}) {
  const file = join(tempDir(t), 'r.db');
  const store = SqliteStore.open(file);
  t.after(() => store.close());
  const log = await AuditLog.open(store);
  const rec = new Recorder(store, { audit: log, pruneInterval: 0, sealInterval: 0, sealEvery: opts.sealEvery ?? 1000 });
  const id = opts.id ?? 's1';
  for (let i = 1; i <= n; i++) {
    rec.record({ sessionId: id, server: 'srv', direction: i % 2 ? 'fromClient' : 'toClient', message: { jsonrpc: '2.0', id: i, method: 'tools/call', params: { i } } });
    await rec.flush(); // one batch per message, and its seal written: seals fall exactly every sealEvery
    await log.flush();
  }
  if (opts.end) rec.endSession(id);
  return { file, store, log, rec, id };
}

const seals = async (store: SqliteStore) => {
  const out: Record<string, unknown>[] = [];
  for await (const r of store.readAudit()) if (r.type === 'recording.seal') out.push(r.data);
  return out;
};

test('hashes recomputed after an edit: the chain of messages is consistent again, but a seal names the span', async (t) => {
  const { file, store, rec, log } = await session(t, 10, { sealEvery: 4, end: true });
  await rec.close();
  await log.close();
  assert.deepEqual((await seals(store)).map((s) => [s.messages, s.final ?? false]), [[4, false], [8, false], [10, true]]);
  const db = new Database(file);
  const rows = db.prepare('SELECT * FROM recordings ORDER BY id').all() as Record<string, any>[];
  rows[5].body = rows[5].body.replace('"i":6', '"i":66'); // message 6, and every hash after it
  let prev = rows[4].hash as string;
  for (const r of rows.slice(5)) {
    const h = linkHash(prev, { sessionId: r.session_id, seq: r.seq, ts: r.ts, direction: r.direction, server: r.server, sub: r.sub, method: r.method, messageId: r.message_id, decision: r.decision, body: r.body, payloadHash: r.payload_hash, truncatedFrom: r.truncated_from });
    db.prepare('UPDATE recordings SET body = ?, hash = ? WHERE id = ?').run(r.body, h, r.id);
    prev = h;
  }
  db.close();
  const report = await verifyStore(store);
  assert.equal(report.ok, false);
  assert.deepEqual(report.recordings!.breaks.map((b) => [b.session, b.message, b.kind]), [['s1', 5, 'rewritten']]);
  assert.match(describeReport(report), /recording of session s1 broken at message 5 \(rewritten\): messages 5–8 differ from their seal/);
});

test('an open session: messages after its last seal are checked by their links; a cut-off tail there is the documented window', async (t) => {
  const { file, store, rec, log } = await session(t, 7, { sealEvery: 5 });
  await new Promise((r) => setImmediate(r));
  await log.flush();
  let report = await verifyStore(store);
  assert.equal(report.ok, true, describeReport(report));
  assert.deepEqual(report.recordings!.unsealed, [{ session: 's1', from: 6, to: 7 }]);
  assert.match(report.warnings.join('\n'), /not sealed yet .*s1 \(messages 6–7\)/);

  const db = new Database(file);
  db.prepare("UPDATE recordings SET body = replace(body, 'tools/call', 'tools/cal1') WHERE seq = 6").run();
  report = await verifyStore(store);
  assert.deepEqual(report.recordings!.breaks.map((b) => [b.message, b.kind]), [[6, 'changed']], 'an edit in the unsealed tail still breaks its link');
  db.prepare("UPDATE recordings SET body = replace(body, 'tools/cal1', 'tools/call') WHERE seq = 6").run();
  db.prepare('DELETE FROM recordings WHERE seq = 7').run();
  report = await verifyStore(store);
  assert.equal(report.ok, true, 'the window: the unsealed tail cut off is not noticed');
  db.prepare('DELETE FROM recordings WHERE seq >= 5').run();
  report = await verifyStore(store);
  assert.deepEqual(report.recordings!.breaks.map((b) => [b.message, b.kind]), [[5, 'truncated']], 'a cut into the sealed part is');
  db.close();
  await rec.close();
  await log.close();
});

test('the seal timer bounds the window: stored messages of an open session are sealed within sealInterval', async (t) => {
  const file = join(tempDir(t), 'r.db');
  const store = SqliteStore.open(file);
  t.after(() => store.close());
  const log = await AuditLog.open(store);
  const rec = new Recorder(store, { audit: log, pruneInterval: 0, sealInterval: 100, flushInterval: 10 });
  for (let i = 0; i < 3; i++) rec.record({ sessionId: 'open', server: 'srv', direction: 'fromClient', message: { jsonrpc: '2.0', method: 'ping', id: i } });
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual((await seals(store)).map((s) => [s.session, s.messages, s.final]), [['open', 3, undefined]]);
  assert.deepEqual((await verifyStore(store)).recordings!.unsealed, []);
  await rec.close();
  await log.close();
  assert.deepEqual((await seals(store)).map((s) => [s.messages, s.final]), [[3, undefined], [3, true]]);
});

test('a store that fails a batch: messages are linked as stored, so retries and drops leave no false gap', async (t) => {
  const file = join(tempDir(t), 'r.db');
  const store = SqliteStore.open(file);
  t.after(() => store.close());
  const log = await AuditLog.open(store);
  let failures = 3; // the first batch is dropped after three attempts
  const flaky = Object.create(store) as SqliteStore;
  flaky.appendRecordings = async (rows, payloads) => {
    if (failures-- > 0) throw new Error('disk on fire');
    return store.appendRecordings(rows, payloads);
  };
  const rec = new Recorder(flaky, { audit: log, pruneInterval: 0, sealInterval: 0, flushInterval: 5 });
  rec.record({ sessionId: 's', server: 'srv', direction: 'fromClient', message: { id: 1 } });
  await rec.flush();
  assert.equal(rec.stats().dropped, 1);
  rec.record({ sessionId: 's', server: 'srv', direction: 'fromClient', message: { id: 2 } });
  rec.endSession('s');
  await rec.close();
  await log.close();
  const stored = await store.readRecording('s');
  assert.deepEqual(stored.map((m) => [m.seq, m.body]), [[1, '{"id":2}']]);
  const report = await verifyStore(store);
  assert.equal(report.ok, true, describeReport(report));
  assert.deepEqual((await seals(store)).map((s) => [s.messages, s.final]), [[1, true]]);
  assert.equal(rec.stats().seals, 1);
});

test('pruning removes whole sessions and is noted in the chain: verify tells a prune from a deletion', async (t) => {
  const file = join(tempDir(t), 'r.db');
  const store = SqliteStore.open(file);
  t.after(() => store.close());
  const log = await AuditLog.open(store);
  let now = Date.UTC(2026, 5, 1);
  const rec = new Recorder(store, { audit: log, pruneInterval: 0, sealInterval: 0, retention: 86_400_000, clock: () => now });
  const say = (id: string) => rec.record({ sessionId: id, server: 'srv', direction: 'fromClient', message: { jsonrpc: '2.0', method: 'ping' } });
  say('old');
  say('old');
  say('straddles');
  rec.endSession('old');
  await rec.flush();
  now += 2 * 86_400_000;
  say('straddles');
  say('new');
  await rec.flush();
  assert.deepEqual(await rec.prune(), { messages: 2, payloads: 0 }, 'the old session only: a session with a recent message is kept whole');
  assert.equal((await store.readRecording('straddles')).length, 2);
  await rec.close();
  await log.close();
  assert.equal((await verifyStore(store)).ok, true);
  new Database(file).prepare("DELETE FROM recordings WHERE session_id = 'new'").run();
  const report = await verifyStore(store);
  assert.deepEqual(report.recordings!.breaks.map((b) => [b.session, b.message, b.kind]), [['new', 1, 'deleted']]);
});

test('portcullis replay says when a recording fails verification and exits 1; intact, it exits 0', async (t) => {
  const { file, rec, log } = await session(t, 6, { end: true, id: 'sess-r' });
  await rec.close();
  await log.close();
  const ok = cli(['replay', 'sess-r', '--store', `sqlite:${file}`]);
  assert.equal(ok.status, 0, ok.stderr);
  assert.equal(ok.stderr, '');
  assert.match(ok.stdout, /session sess-r .* 6 messages/);
  const json = cli(['replay', 'sess-r', '--store', `sqlite:${file}`, '--json']);
  assert.equal(json.status, 0, json.stderr);
  assert.equal(json.stdout.trim().split('\n').length, 6);

  new Database(file).prepare("UPDATE recordings SET direction = 'toClient' WHERE seq = 3 AND session_id = 'sess-r'").run();
  for (const args of [[], ['--json']]) {
    const bad = cli(['replay', 'sess-r', '--store', `sqlite:${file}`, ...args]);
    assert.equal(bad.status, 1);
    assert.equal(bad.stdout.trim().split('\n').length, args.length ? 6 : 7, 'the recording is still shown');
    assert.match(bad.stderr, /this recording fails verification: recording of session sess-r broken at message 3 \(changed\)/);
  }
  new Database(file).prepare("DELETE FROM recordings WHERE session_id = 'sess-r'").run();
  const gone = cli(['replay', 'sess-r', '--store', `sqlite:${file}`]);
  assert.equal(gone.status, 1);
  assert.match(gone.stderr, /session sess-r broken at message 1 \(deleted\): all 6 sealed messages are missing/);
});

test('an upgraded store: messages recorded before chaining are reported, not verified; an unlinked message after that is an insertion', async (t) => {
  const { file, store, rec, log } = await session(t, 2, { end: true });
  await rec.close();
  await log.close();
  const db = new Database(file);
  const legacy = db.prepare("INSERT INTO recordings (id, session_id, ts, direction, server, body) VALUES (?, 'before-upgrade', 1, 'fromClient', 'srv', '{}')");
  legacy.run(-2);
  legacy.run(-1); // ids below the first chained one, as schema 1 left them
  let report = await verifyStore(store);
  assert.equal(report.ok, true, describeReport(report));
  assert.equal(report.recordings!.legacyMessages, 2);
  assert.match(report.warnings.join('\n'), /2 recorded messages predate chained recordings and are not verified/);
  db.prepare("INSERT INTO recordings (session_id, ts, direction, server, body) VALUES ('fake', 1, 'fromClient', 'srv', '{}')").run();
  db.close();
  report = await verifyStore(store);
  assert.deepEqual(report.recordings!.breaks.map((b) => [b.session, b.message, b.kind]), [['fake', 1, 'inserted']]);
});

test('a method or sub with a lone surrogate is stored as it reads back, so its recording verifies', async (t) => {
  const file = join(tempDir(t), 'r.db');
  const store = SqliteStore.open(file);
  t.after(() => store.close());
  const log = await AuditLog.open(store);
  const rec = new Recorder(store, { audit: log, pruneInterval: 0, sealInterval: 0 });
  rec.record({ sessionId: 's', server: 'srv', identity: { sub: 'al\udc00ice' }, direction: 'fromClient', message: { jsonrpc: '2.0', id: 1, method: 'tools/\ud800call' } });
  rec.endSession('s');
  await rec.close();
  await log.close();
  const [m] = await store.readRecording('s');
  assert.deepEqual([m.method, m.sub], ['tools/\ufffdcall', 'al\ufffdice']);
  assert.equal(JSON.parse(m.body).method, 'tools/\ud800call', 'the body keeps the message as sent (JSON escapes it)');
  const report = await verifyStore(store);
  assert.equal(report.ok, true, describeReport(report));
});
