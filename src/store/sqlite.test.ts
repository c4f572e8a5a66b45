import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { PortcullisError } from '../errors.js';
import { tempDir } from '../audit/testdata/fixtures.js';
import { openStore, sqlitePath } from './open.js';
import { SQLITE_APPLICATION_ID, SQLITE_SCHEMA_VERSION, SqliteStore } from './sqlite.js';

const isStoreInvalid = (pattern: RegExp) => (e: unknown) =>
  e instanceof PortcullisError && e.code === 'PCL_STORE_INVALID' && pattern.test(e.message);

test('a new store is one WAL file with FULL sync, marked as ours, at the latest schema version', async (t) => {
  const dir = tempDir(t);
  const store = await openStore('sqlite:./data/p.db', dir);
  await store.close();
  const db = new Database(join(dir, 'data', 'p.db'), { readonly: true });
  t.after(() => db.close());
  assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  assert.equal(db.pragma('application_id', { simple: true }), SQLITE_APPLICATION_ID);
  assert.equal(db.pragma('user_version', { simple: true }), SQLITE_SCHEMA_VERSION);
  const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[]).map((r) => r.name);
  assert.deepEqual(tables.filter((n) => !n.startsWith('sqlite_')), ['approvals', 'audit_checkpoints', 'audit_records', 'policy_versions', 'portcullis_meta', 'recording_payloads', 'recordings']);
});

test('synchronous=FULL is set on the connection that writes', (t) => {
  const store = SqliteStore.open(join(tempDir(t), 's.db'));
  t.after(() => store.close());
  const db = (store as unknown as { db: Database.Database }).db;
  assert.equal(db.pragma('synchronous', { simple: true }), 2); // FULL
});

test("the page cache is SQLite's 2 MiB, not better-sqlite3's 16 MB (it fills under load: 16 MB per connection)", (t) => {
  const store = SqliteStore.open(join(tempDir(t), 's.db'));
  t.after(() => store.close());
  const db = (store as unknown as { db: Database.Database }).db;
  assert.equal(db.pragma('cache_size', { simple: true }), -2048);
});

test('reopening keeps the data and does not migrate again', async (t) => {
  const file = join(tempDir(t), 's.db');
  const a = SqliteStore.open(file);
  await a.putCheckpoint({ seq: 1, hash: 'h', ts: 't', signature: null, keyId: null });
  await a.close();
  const b = SqliteStore.open(file, { mustExist: true });
  t.after(() => b.close());
  assert.deepEqual(await b.listCheckpoints(), [{ seq: 1, hash: 'h', ts: 't', signature: null, keyId: null }]);
});

test('a text file is refused with PCL_STORE_INVALID and left untouched', (t) => {
  const file = join(tempDir(t), 'notes.txt');
  writeFileSync(file, 'these are my notes\n'.repeat(100));
  const before = readFileSync(file);
  assert.throws(() => SqliteStore.open(file), isStoreInvalid(/notes\.txt is not a Portcullis store \(not a SQLite database\)/));
  assert.deepEqual(readFileSync(file), before);
  assert.equal(existsSync(`${file}-wal`), false);
});

test('a SQLite database of another application is refused, naming its tables, and left untouched', (t) => {
  const file = join(tempDir(t), 'other.db');
  const other = new Database(file);
  other.exec("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('ada');");
  other.close();
  const before = readFileSync(file);
  assert.throws(() => SqliteStore.open(file), isStoreInvalid(/other\.db is a SQLite database but not a Portcullis store \(it has tables customers\)/));
  assert.deepEqual(readFileSync(file), before);
  const check = new Database(file, { readonly: true });
  t.after(() => check.close());
  assert.equal(check.pragma('journal_mode', { simple: true }), 'delete');
});

test('a store from a newer Portcullis is refused', (t) => {
  const file = join(tempDir(t), 'new.db');
  SqliteStore.open(file).close();
  const db = new Database(file);
  db.pragma(`user_version = ${SQLITE_SCHEMA_VERSION + 1}`);
  db.close();
  assert.throws(() => SqliteStore.open(file), isStoreInvalid(/newer Portcullis/));
});

test('mustExist refuses a missing file instead of creating it', (t) => {
  const file = join(tempDir(t), 'missing.db');
  assert.throws(() => SqliteStore.open(file, { mustExist: true }), isStoreInvalid(/does not exist/));
  assert.equal(existsSync(file), false);
});

test('store urls: relative to the config folder, absolute, unsupported', async () => {
  assert.equal(sqlitePath('sqlite:./data/p.db', '/etc/pcl'), '/etc/pcl/data/p.db');
  assert.equal(sqlitePath('sqlite:/var/lib/p.db', '/etc/pcl'), '/var/lib/p.db');
  assert.equal(sqlitePath('sqlite:///var/lib/p.db', '/etc/pcl'), '/var/lib/p.db');
  await assert.rejects(openStore('mysql://x', '/'), isStoreInvalid(/not supported/));
  await assert.rejects(openStore('sqlite:', '/'), isStoreInvalid(/names no file/));
});

test('audit records are append-only through the store (triggers refuse UPDATE and DELETE)', async (t) => {
  const file = join(tempDir(t), 's.db');
  const store = SqliteStore.open(file);
  t.after(() => store.close());
  await store.appendAudit(() => ({ records: [{ seq: 1, ts: 't', type: 'x', actor: 'a', data: {}, dataJson: '{}', prev: '0', hash: 'h' }], checkpoints: [] }));
  const db = (store as unknown as { db: Database.Database }).db;
  assert.throws(() => db.prepare("UPDATE audit_records SET actor = 'b'").run(), /append-only/);
  assert.throws(() => db.prepare('DELETE FROM audit_records').run(), /append-only/);
});

test('readAudit pages through long logs in seq order and filters by seq and time', async (t) => {
  const store = SqliteStore.open(join(tempDir(t), 's.db'));
  t.after(() => store.close());
  const records = Array.from({ length: 2500 }, (_, i) => ({ seq: i + 1, ts: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(), type: 'x', actor: 'a', data: { i }, dataJson: JSON.stringify({ i }), prev: 'p', hash: `h${i}` }));
  await store.appendAudit(() => ({ records, checkpoints: [] }));
  const seqs: number[] = [];
  for await (const r of store.readAudit()) seqs.push(r.seq);
  assert.equal(seqs.length, 2500);
  assert.ok(seqs.every((s, i) => s === i + 1));
  const some: number[] = [];
  for await (const r of store.readAudit({ since: records[1000].ts, until: records[1009].ts })) some.push(r.seq);
  assert.deepEqual(some, Array.from({ length: 10 }, (_, i) => 1001 + i));
  assert.deepEqual(await store.auditHead(), { seq: 2500, hash: 'h2499' });
});

test('a write waiting for another connection\'s lock leaves the event loop free, and succeeds once the lock is released', async (t) => {
  const file = join(tempDir(t), 's.db');
  const store = SqliteStore.open(file, { busyTimeout: 5_000 });
  t.after(() => store.close());
  const other = new Database(file);
  t.after(() => other.close());
  other.exec('BEGIN EXCLUSIVE');
  let ticks = 0;
  let longestGap = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    longestGap = Math.max(longestGap, now - last);
    last = now;
    ticks++;
  }, 5);
  t.after(() => clearInterval(timer));
  const started = performance.now();
  const written = store.appendRecordings([{ sessionId: 's', ts: 1, direction: 'fromClient', server: 'x', sub: null, method: 'ping', messageId: '1', decision: null, body: '{}', payloadHash: null, truncatedFrom: null, seq: 1, hash: 'h' }], []);
  setTimeout(() => other.exec('COMMIT'), 400);
  await written;
  const waited = performance.now() - started;
  clearInterval(timer);
  assert.ok(waited >= 380 && waited < 2_000, `the write waited ${waited} ms for a lock held 400 ms`);
  assert.ok(ticks >= 20, `the event loop ran only ${ticks} timer ticks in ${waited} ms`);
  assert.ok(longestGap < 150, `the event loop was blocked for ${longestGap} ms`);
  assert.ok(store.stats().busyRetries > 0);
  assert.equal((await store.readRecording('s')).length, 1);
});

test('a lock held past busyTimeout fails the write with SQLITE_BUSY after about busyTimeout, without blocking', async (t) => {
  const file = join(tempDir(t), 's.db');
  const store = SqliteStore.open(file, { busyTimeout: 300 });
  t.after(() => store.close());
  const other = new Database(file);
  t.after(() => other.close());
  other.exec('BEGIN EXCLUSIVE');
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  t.after(() => clearInterval(timer));
  const started = performance.now();
  await assert.rejects(store.appendAudit(() => ({ records: [], checkpoints: [] })), (e: { code?: string }) => e.code === 'SQLITE_BUSY');
  const waited = performance.now() - started;
  assert.ok(waited >= 290 && waited < 1_500, `failed after ${waited} ms`);
  assert.ok(ticks >= 15, `the event loop ran only ${ticks} timer ticks`);
});
