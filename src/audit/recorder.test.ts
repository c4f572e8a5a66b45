import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteStore } from '../store/sqlite.js';
import type { Store } from '../store/store.js';
import { Recorder, utf8Prefix } from './recorder.js';
import { cli, tempDir } from './testdata/fixtures.js';

function open(t: Parameters<typeof tempDir>[0]): { store: SqliteStore; file: string } {
  const file = join(tempDir(t), 'rec.db');
  const store = SqliteStore.open(file);
  t.after(() => store.close());
  return { store, file };
}

const count = (file: string, table: string): number => {
  const db = new Database(file, { readonly: true });
  try {
    return (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
  } finally {
    db.close();
  }
};

test('record() returns at once; messages are written later in batches, in order per session', async (t) => {
  const { store } = open(t);
  const rec = new Recorder(store, { pruneInterval: 0, flushInterval: 20 });
  t.after(() => rec.close());
  for (let i = 0; i < 300; i++) {
    rec.record({ sessionId: i % 2 ? 'odd' : 'even', direction: i % 3 ? 'fromClient' : 'toClient', message: { jsonrpc: '2.0', id: i, method: 'tools/call', params: { name: 'echo', arguments: { i } } }, server: 'demo', identity: { sub: 'alice' } });
  }
  assert.equal((await store.readRecording('even')).length, 0, 'nothing written synchronously');
  assert.equal(rec.stats().pending, 300);
  await new Promise((r) => setTimeout(r, 100)); // the timer flushes without being asked
  const even = await store.readRecording('even');
  const odd = await store.readRecording('odd');
  assert.equal(even.length, 150);
  assert.equal(odd.length, 150);
  assert.deepEqual(even.map((m) => (JSON.parse(m.body) as { id: number }).id), Array.from({ length: 150 }, (_, i) => i * 2));
  assert.deepEqual(odd.map((m) => Number(m.messageId)), Array.from({ length: 150 }, (_, i) => i * 2 + 1));
  assert.equal(even[0].method, 'tools/call');
  assert.equal(even[0].sub, 'alice');
  assert.equal(even[0].direction, 'toClient');
  assert.equal(rec.stats().written, 300);
});

test('a message larger than maxMessageBytes is cut at a character boundary and marked', async (t) => {
  const { store } = open(t);
  const rec = new Recorder(store, { pruneInterval: 0, maxMessageBytes: 100 });
  const big = { jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: 'é'.repeat(500) }] } };
  rec.record({ sessionId: 's', direction: 'toClient', message: big, server: 'demo' });
  rec.record({ sessionId: 's', direction: 'toClient', message: { jsonrpc: '2.0', id: 2, result: {} }, server: 'demo' });
  await rec.close();
  const [cut, small] = await store.readRecording('s');
  assert.equal(cut.truncatedFrom, Buffer.byteLength(JSON.stringify(big)));
  assert.ok(Buffer.byteLength(cut.body) <= 100);
  assert.ok(JSON.stringify(big).startsWith(cut.body));
  assert.equal(cut.messageId, '1');
  assert.equal(small.truncatedFrom, null);
  assert.equal(rec.stats().truncated, 1);
  assert.equal(utf8Prefix('aé', 2), 'a');
  assert.equal(utf8Prefix('aé', 3), 'aé');
  assert.equal(utf8Prefix('😀x', 3), '');
});

test('identical large payloads are stored once; small ones inline', async (t) => {
  const { store, file } = open(t);
  const rec = new Recorder(store, { pruneInterval: 0, inlineBytes: 64 });
  const large = { jsonrpc: '2.0', result: { content: [{ type: 'text', text: 'x'.repeat(5000) }] } };
  for (let i = 0; i < 50; i++) rec.record({ sessionId: `s${i % 5}`, direction: 'toClient', message: large, server: 'demo' });
  rec.record({ sessionId: 's0', direction: 'toClient', message: { ...large, other: true }, server: 'demo' });
  rec.record({ sessionId: 's0', direction: 'fromClient', message: { jsonrpc: '2.0', method: 'ping' }, server: 'demo' });
  await rec.flush();
  for (let i = 0; i < 10; i++) rec.record({ sessionId: 's9', direction: 'toClient', message: large, server: 'demo' }); // a later batch
  await rec.close();
  assert.equal(count(file, 'recording_payloads'), 2);
  assert.equal(count(file, 'recordings'), 62);
  const s0 = await store.readRecording('s0');
  assert.equal(s0.length, 12);
  assert.equal(s0[0].body, JSON.stringify(large));
  assert.equal(s0[11].body, '{"jsonrpc":"2.0","method":"ping"}');
  assert.equal((await store.readRecording('s9'))[9].body, JSON.stringify(large));
});

test('retention prunes old messages and payloads nothing references; audit records stay', async (t) => {
  const { store, file } = open(t);
  let now = Date.UTC(2026, 5, 1);
  const rec = new Recorder(store, { pruneInterval: 0, inlineBytes: 64, retention: 86_400_000, clock: () => now });
  const big = (tag: string) => ({ jsonrpc: '2.0', result: { text: tag.repeat(200) } });
  rec.record({ sessionId: 'old', direction: 'toClient', message: big('a'), server: 'demo' });
  rec.record({ sessionId: 'old', direction: 'toClient', message: big('shared'), server: 'demo' });
  rec.record({ sessionId: 'old', direction: 'fromClient', message: { jsonrpc: '2.0', method: 'ping' }, server: 'demo' });
  await rec.flush();
  now += 2 * 86_400_000;
  rec.record({ sessionId: 'new', direction: 'toClient', message: big('shared'), server: 'demo' });
  await rec.flush();
  await store.appendAudit(() => ({ records: [{ seq: 1, ts: new Date(0).toISOString(), type: 'decision', actor: 'a', data: {}, dataJson: '{}', prev: '0', hash: 'h' }], checkpoints: [] }));
  const removed = await rec.prune();
  assert.deepEqual(removed, { messages: 3, payloads: 1 });
  assert.equal((await store.readRecording('old')).length, 0);
  assert.equal((await store.readRecording('new'))[0].body, JSON.stringify(big('shared')));
  assert.equal(count(file, 'recording_payloads'), 1);
  assert.equal(count(file, 'audit_records'), 1);
  await rec.close();
});

test('a failing store never throws into the caller; writes are retried, then dropped and counted', async (t) => {
  const { store } = open(t);
  let failures = 2;
  const flaky: Store = Object.create(store) as Store;
  flaky.appendRecordings = async (rows, payloads) => {
    if (failures-- > 0) throw new Error('disk on fire');
    return store.appendRecordings(rows, payloads);
  };
  const rec = new Recorder(flaky, { pruneInterval: 0, flushInterval: 5 });
  rec.record({ sessionId: 's', direction: 'fromClient', message: { jsonrpc: '2.0', id: 1, method: 'ping' }, server: 'demo' });
  await rec.close();
  assert.equal((await store.readRecording('s')).length, 1, 'written on the third attempt');
  assert.equal(rec.stats().failedWrites, 2);

  failures = 100;
  const rec2 = new Recorder(flaky, { pruneInterval: 0, maxQueue: 5 });
  for (let i = 0; i < 8; i++) rec2.record({ sessionId: 't', direction: 'fromClient', message: { id: i }, server: 'demo' });
  assert.equal(rec2.stats().dropped, 3, 'the queue is bounded');
  await rec2.close();
  assert.equal(rec2.stats().dropped, 8);
  assert.match(rec2.lastError()!.message, /disk on fire/);
});

test('the queue is bounded in bytes too (the oldest go first), and a write takes at most batchBytes', async (t) => {
  const { store } = open(t);
  const big = (i: number) => ({ jsonrpc: '2.0', id: i, result: { text: String(i).padEnd(100_000, '.') } });
  const batches: number[][] = [];
  let stalled = true;
  const observed: Store = Object.create(store) as Store;
  observed.appendRecordings = async (rows, payloads) => {
    if (stalled) throw new Error('store stalled');
    batches.push(rows.map((r) => r.seq));
    return store.appendRecordings(rows, payloads);
  };
  // A stalled store: 30 messages of 100 kB do not pile up past 1 MB.
  const rec = new Recorder(observed, { pruneInterval: 0, flushInterval: 60_000, maxQueueBytes: 1_000_000, batchBytes: 350_000 });
  for (let i = 0; i < 30; i++) rec.record({ sessionId: 's', direction: 'toClient', message: big(i), server: 'demo' });
  assert.ok(rec.stats().pendingBytes <= 1_000_000, `${rec.stats().pendingBytes} bytes held`);
  assert.equal(rec.stats().pending, 9);
  assert.equal(rec.stats().dropped, 21);
  // The store is back: what is held is written, the newest, in batches of at most three (350 kB).
  stalled = false;
  await rec.close();
  const stored = await store.readRecording('s');
  assert.deepEqual(stored.map((m) => Number(m.messageId)), Array.from({ length: 9 }, (_, i) => 21 + i));
  assert.ok(batches.length >= 3 && batches.every((b) => b.length >= 1 && b.length <= 3), JSON.stringify(batches));
  assert.equal(rec.stats().pendingBytes, 0);

  // One message larger than a batch still goes, alone.
  const rec2 = new Recorder(observed, { pruneInterval: 0, batchBytes: 10 });
  batches.length = 0;
  for (let i = 0; i < 2; i++) rec2.record({ sessionId: 'u', direction: 'toClient', message: big(i), server: 'demo' });
  await rec2.close();
  assert.deepEqual(batches.map((b) => b.length), [1, 1]);
});

test('portcullis replay prints every message in order; --json prints the raw messages', async (t) => {
  const { store, file } = open(t);
  const rec = new Recorder(store, { pruneInterval: 0, maxMessageBytes: 300 });
  const t0 = Date.UTC(2026, 0, 1, 12);
  const messages: { direction: 'fromClient' | 'toClient'; message: Record<string, unknown>; decision?: { effect: string; rule: string } }[] = [
    { direction: 'fromClient', message: { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', clientInfo: { name: 'agent', version: '1.0' }, capabilities: {} } } },
    { direction: 'toClient', message: { jsonrpc: '2.0', id: 0, result: { protocolVersion: '2025-11-25', capabilities: {}, serverInfo: { name: 'srv', version: '2' } } } },
    { direction: 'fromClient', message: { jsonrpc: '2.0', method: 'notifications/initialized' } },
    { direction: 'fromClient', message: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'query', arguments: { sql: 'select 1' } } }, decision: { effect: 'allow', rule: 'db/analysts' } },
    { direction: 'toClient', message: { jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: 'one row' }] } } },
    { direction: 'fromClient', message: { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'query', arguments: { sql: 'drop table x' } } }, decision: { effect: 'deny', rule: 'db/never-drop' } },
    { direction: 'toClient', message: { jsonrpc: '2.0', id: 2, result: { isError: true, content: [{ type: 'text', text: 'denied by db/never-drop' }] } } },
    { direction: 'toClient', message: { jsonrpc: '2.0', id: 3, result: { content: [{ type: 'text', text: 'z'.repeat(1000) }] } } },
  ];
  messages.forEach((m, i) => rec.record({ sessionId: 'sess-1', server: 'db', identity: { sub: 'alice' }, ts: t0 + i * 250, ...m }));
  rec.record({ sessionId: 'other', server: 'db', direction: 'fromClient', message: { jsonrpc: '2.0', id: 9, method: 'ping' } });
  await rec.close();

  const r = cli(['replay', 'sess-1', '--store', `sqlite:${file}`]);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines[0], /session sess-1 .*server db .*sub alice .*8 messages/);
  const body = lines.slice(1);
  assert.equal(body.length, messages.length);
  const expected = [
    /^\s*\+0\.000s  → initialize #0  agent 1\.0 protocol 2025-11-25$/,
    /^\s*\+0\.250s  ← initialize response #0/,
    /^\s*\+0\.500s  → notifications\/initialized$/,
    /^\s*\+0\.750s  → tools\/call #1 \[allow db\/analysts\]  query \{"sql":"select 1"\}$/,
    /^\s*\+1\.000s  ← tools\/call response #1  one row$/,
    /^\s*\+1\.250s  → tools\/call #2 \[deny db\/never-drop\]  query \{"sql":"drop table x"\}$/,
    /^\s*\+1\.500s  ← tools\/call response #2  tool error: denied by db\/never-drop$/,
    /^\s*\+1\.750s  ← response #3  \(truncated from \d+ bytes\)/,
  ];
  expected.forEach((re, i) => assert.match(body[i], re));
  assert.doesNotMatch(r.stdout, /ping/);

  const j = cli(['replay', 'sess-1', '--store', `sqlite:${file}`, '--json']);
  assert.equal(j.status, 0, j.stderr);
  const raw = j.stdout.trim().split('\n').map((l) => JSON.parse(l) as { ts: string; direction: string; message: unknown });
  assert.deepEqual(raw.slice(0, 7).map((x) => x.message), messages.slice(0, 7).map((m) => m.message));
  assert.deepEqual(raw.map((x) => x.direction), messages.map((m) => m.direction));
  assert.equal(raw[0].ts, new Date(t0).toISOString());
  assert.equal((raw[7].message as { truncated: boolean }).truncated, true);

  const missing = cli(['replay', 'nope', '--store', `sqlite:${file}`]);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /no recorded messages for session nope/);
});
