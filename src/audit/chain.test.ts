import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync, createHash } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { PortcullisError } from '../errors.js';
import { SqliteStore } from '../store/sqlite.js';
import { GENESIS_PREV, type Store } from '../store/store.js';
import { canonicalize } from './canonical.js';
import { AuditLog, canonicalRecord, decisionAuditData, digestArgs, hashRecord, RECORDED_TEXT_MAX } from './chain.js';
import { checkpointSignatureValid, loadSigningKey } from './keys.js';
import { openAuditing } from './open.js';
import { ThreadWriter } from './writer-thread.js';
import { verifyStore } from './verify.js';
import { tempDir, writeKey } from './testdata/fixtures.js';

function open(t: Parameters<typeof tempDir>[0], busyTimeout?: number): { store: Store; file: string } {
  const file = join(tempDir(t), 'audit.db');
  const store = SqliteStore.open(file, { busyTimeout });
  t.after(() => store.close());
  return { store, file };
}

test('records chain from the genesis prev; hash is SHA-256 of the canonical record without hash', async (t) => {
  const { store } = open(t);
  const log = await AuditLog.open(store);
  const a = await log.append('session.start', 'alice', { sessionId: 's1', server: 'db' });
  const b = await log.append('decision', 'alice', { effect: 'allow', rule: 'db/r' });
  assert.equal(a.seq, 1);
  assert.equal(a.prev, GENESIS_PREV);
  assert.equal(b.seq, 2);
  assert.equal(b.prev, a.hash);
  const expected = createHash('sha256')
    .update(canonicalize({ actor: a.actor, data: a.data, prev: a.prev, seq: 1, ts: a.ts, type: 'session.start' }))
    .digest('hex');
  assert.equal(a.hash, expected);
  assert.equal(hashRecord(a), a.hash);
  const odd = { seq: 3, ts: 'x', type: 'admin.\u2028"', actor: 'ü\n😀', data: { z: [1.5, null], a: '\u0001' }, prev: 'p' };
  assert.equal(canonicalRecord(odd, canonicalize(odd.data)), canonicalize(odd));
  const stored = [];
  for await (const r of store.readAudit()) stored.push(r);
  assert.deepEqual(stored, [a, b]);
});

test('appends arriving together share one transaction (group commit), seq stays in call order', async (t) => {
  const { store } = open(t);
  const log = await AuditLog.open(store);
  const records = await Promise.all(Array.from({ length: 200 }, (_, i) => log.append('decision', 'bob', { i })));
  assert.deepEqual(records.map((r) => r.seq), Array.from({ length: 200 }, (_, i) => i + 1));
  assert.deepEqual(records.map((r) => r.data.i), Array.from({ length: 200 }, (_, i) => i));
  assert.equal(log.stats().batches, 1);
  assert.equal(log.stats().appended, 200);
  await log.append('decision', 'bob', { i: 200 });
  assert.equal(log.stats().batches, 2);
  assert.equal((await verifyStore(store)).ok, true);
});

test('a reopened log continues seq and prev from the last stored record', async (t) => {
  const { store, file } = open(t);
  const log = await AuditLog.open(store);
  for (let i = 0; i < 5; i++) await log.append('decision', 'a', { i });
  await log.close();
  await store.close();
  const again = SqliteStore.open(file);
  t.after(() => again.close());
  const log2 = await AuditLog.open(again);
  assert.equal(log2.stats().lastSeq, 5);
  const r = await log2.append('session.end', 'a', {});
  assert.equal(r.seq, 6);
  const report = await verifyStore(again);
  assert.equal(report.ok, true, report.break?.message);
  assert.equal(report.records, 6);
});

test('data is stored exactly as hashed; non-JSON data rejects only that append', async (t) => {
  const { store } = open(t);
  const log = await AuditLog.open(store);
  const results = await Promise.allSettled([
    log.append('decision', 'a', { ok: 1 }),
    log.append('decision', 'a', { bad: 1n } as unknown as Record<string, unknown>),
    log.append('decision', 'a', { when: new Date(0), gone: undefined }),
  ]);
  assert.equal(results[0].status, 'fulfilled');
  assert.equal(results[1].status, 'rejected');
  assert.equal(((results[1] as PromiseRejectedResult).reason as PortcullisError).code, 'PCL_AUDIT_WRITE_FAILED');
  const third = (results[2] as PromiseFulfilledResult<{ seq: number; data: unknown }>).value;
  assert.equal(third.seq, 2);
  assert.deepEqual(third.data, { when: '1970-01-01T00:00:00.000Z' });
  assert.equal((await verifyStore(store)).ok, true);
});

test('a failing statement rejects every append of the batch; the chain continues without gap or fork', async (t) => {
  const { store, file } = open(t);
  const log = await AuditLog.open(store);
  await log.append('decision', 'a', { n: 1 });
  const attacker = new Database(file);
  t.after(() => attacker.close());
  attacker.exec("CREATE TRIGGER inject BEFORE INSERT ON audit_records WHEN NEW.actor = 'boom' BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
  const batch = await Promise.allSettled([log.append('decision', 'a', { n: 2 }), log.append('decision', 'boom', {}), log.append('decision', 'a', { n: 3 })]);
  for (const r of batch) {
    assert.equal(r.status, 'rejected');
    const e = (r as PromiseRejectedResult).reason as PortcullisError;
    assert.equal(e.code, 'PCL_AUDIT_WRITE_FAILED');
    assert.match(e.message, /injected failure/);
  }
  assert.equal(log.healthy(), false);
  assert.match(log.lastError()!.message, /injected failure/);
  assert.equal(log.stats().failed, 3);
  attacker.exec('DROP TRIGGER inject');
  const next = await log.append('decision', 'a', { n: 4 });
  assert.equal(next.seq, 2);
  assert.equal(log.healthy(), true);
  const report = await verifyStore(store);
  assert.equal(report.ok, true, report.break?.message);
  assert.equal(report.records, 2);
});

test('a store locked by another writer fails the append with PCL_AUDIT_WRITE_FAILED, then recovers', async (t) => {
  const { store, file } = open(t, 50);
  const log = await AuditLog.open(store);
  await log.append('decision', 'a', { n: 1 });
  const other = new Database(file);
  t.after(() => other.close());
  other.exec('BEGIN IMMEDIATE');
  other.prepare("INSERT INTO portcullis_meta (key, value) VALUES ('x', 'y')").run();
  await assert.rejects(log.append('decision', 'a', { n: 2 }), (e: PortcullisError) => e.code === 'PCL_AUDIT_WRITE_FAILED' && /locked|busy/i.test(e.message));
  assert.equal(log.healthy(), false);
  other.exec('ROLLBACK');
  assert.equal((await log.append('decision', 'a', { n: 3 })).seq, 2);
  assert.equal((await verifyStore(store)).ok, true);
});

test('checkpoints every N records and at close, signed with the Ed25519 key', async (t) => {
  const { store, file } = open(t);
  const signer = loadSigningKey(writeKey(join(file, '..')));
  const log = await AuditLog.open(store, { signer, checkpointEvery: 4 });
  await Promise.all(Array.from({ length: 10 }, (_, i) => log.append('decision', 'a', { i })));
  await log.close();
  const cps = await store.listCheckpoints();
  assert.deepEqual(cps.map((c) => c.seq), [4, 8, 10]);
  for (const c of cps) {
    assert.equal(c.keyId, signer.keyId);
    assert.equal(checkpointSignatureValid(c, signer.publicKey), true);
  }
  assert.equal(checkpointSignatureValid({ ...cps[0], seq: 5 }, signer.publicKey), false);
  const report = await verifyStore(store, { publicKey: signer.publicKey, checkpointEvery: 4 });
  assert.equal(report.ok, true, report.break?.message);
  assert.equal(report.coveredTo, 10);
  await assert.rejects(log.append('decision', 'a', {}), (e: PortcullisError) => e.code === 'PCL_AUDIT_WRITE_FAILED');
});

test('without a key checkpoints are stored unsigned, and verify says so', async (t) => {
  const { store } = open(t);
  const log = await AuditLog.open(store, { checkpointEvery: 2 });
  for (let i = 0; i < 3; i++) await log.append('decision', 'a', { i });
  await log.close();
  const cps = await store.listCheckpoints();
  assert.deepEqual(cps.map((c) => [c.seq, c.signature]), [[2, null], [3, null]]);
  const report = await verifyStore(store);
  assert.equal(report.ok, true);
  assert.ok(report.warnings.some((w) => /no checkpoint is signed/.test(w)));
});

test('a missing, unreadable or wrong signing key fails at start with a message naming the path', async (t) => {
  const dir = tempDir(t);
  const missing = join(dir, 'nope.pem');
  assert.throws(() => loadSigningKey(missing), (e: PortcullisError) => e.code === 'PCL_CONFIG_INVALID' && e.message.includes(missing) && /does not exist/.test(e.message));
  const folder = join(dir, 'folder.pem');
  mkdirSync(folder);
  assert.throws(() => loadSigningKey(folder), (e: PortcullisError) => e.message.includes(folder));
  const garbage = join(dir, 'garbage.pem');
  writeFileSync(garbage, 'not a key\n');
  assert.throws(() => loadSigningKey(garbage), (e: PortcullisError) => e.message.includes(garbage) && /not a PEM private key/.test(e.message));
  const rsa = join(dir, 'rsa.pem');
  writeFileSync(rsa, generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
  assert.throws(() => loadSigningKey(rsa), (e: PortcullisError) => e.message.includes(rsa) && /Ed25519/.test(e.message));

  // openAuditing refuses before it creates the store.
  const config = {
    store: { url: 'sqlite:./never.db' },
    audit: { signingKey: './nope.pem', checkpointEvery: 1000, writer: 'thread' as const, recordings: { enabled: true, retention: 1000, maxMessageBytes: 1000, sealInterval: 30_000 } },
  };
  await assert.rejects(openAuditing(config, dir), (e: PortcullisError) => e.message.includes(missing));
  assert.equal(existsSync(join(dir, 'never.db')), false);
});

for (const writer of ['thread', 'loop'] as const) {
  test(`openAuditing (audit.writer: ${writer}) wires store, log and recorder from the config; close writes the final checkpoint`, async (t) => {
    const dir = tempDir(t);
    writeKey(dir, 'k.pem');
    const config = {
      store: { url: 'sqlite:./data/p.db' },
      audit: { signingKey: './k.pem', checkpointEvery: 1000, writer, recordings: { enabled: true, retention: 60_000, maxMessageBytes: 1000, sealInterval: 30_000 } },
    };
    const a = await openAuditing(config, dir);
    // The thread writer pipelines batches (posts the next before the last committed); the loop writer cannot.
    assert.equal(a.writer.pipelined, writer === 'thread');
    assert.equal(a.writer instanceof ThreadWriter, writer === 'thread');
    await a.log.append('session.start', 'alice', { sessionId: 's' });
    a.recorder!.record({ sessionId: 's', direction: 'fromClient', message: { jsonrpc: '2.0', id: 1, method: 'ping' }, server: 'demo' });
    await a.close();
    const store = SqliteStore.open(join(dir, 'data', 'p.db'), { mustExist: true });
    t.after(() => store.close());
    assert.equal((await store.readRecording('s')).length, 1);
    const cps = await store.listCheckpoints();
    assert.equal(cps.length, 1);
    assert.ok(cps[0].signature);
  });
}

test('decisionAuditData carries the documented fields and a digest of the arguments, not the arguments', () => {
  const data = decisionAuditData(
    { identity: { sub: 'alice', groups: ['analysts'], claims: { secret: 'x' }, via: 'oidc' }, server: 'db', method: 'tools/call', tool: 'query', args: { sql: 'select 1' }, time: new Date() },
    { effect: 'allow', rule: 'pg/analysts', bundleVersion: 'v1' },
    { sessionId: 's1', requestId: 7 },
  );
  assert.equal(data.argsDigest, digestArgs({ sql: 'select 1' }));
  assert.equal(data.argsDigest, createHash('sha256').update('{"sql":"select 1"}').digest('hex'));
  assert.deepEqual(JSON.parse(canonicalize(data)), {
    sessionId: 's1',
    requestId: 7,
    effect: 'allow',
    rule: 'pg/analysts',
    bundleVersion: 'v1',
    identity: { sub: 'alice', groups: ['analysts'] },
    server: 'db',
    method: 'tools/call',
    tool: 'query',
    argsDigest: data.argsDigest,
  });
});

test('client-chosen texts longer than RECORDED_TEXT_MAX are recorded by digest, size and prefix, never whole', () => {
  const decide = (tool: string, requestId: string | number, method = 'tools/call') =>
    decisionAuditData({ identity: { sub: 'mallory', groups: [], claims: {}, via: 'api-key' }, server: 'db', method, tool, args: {}, time: new Date() }, { effect: 'deny', rule: '(default)', bundleVersion: 'v1' }, { sessionId: 's', requestId });
  const sha = (t: string) => createHash('sha256').update(t, 'utf8').digest('hex');
  const atLimit = 'x'.repeat(RECORDED_TEXT_MAX);
  assert.equal(decide(atLimit, 1).tool, atLimit, 'up to the limit: as it is');
  // A 4 MB name (a whole request body) and id: a record of about a kilobyte.
  const huge = 'é'.repeat(2 * 1024 * 1024);
  const id = 'i'.repeat(RECORDED_TEXT_MAX + 1);
  const data = decide(huge, id, huge);
  assert.deepEqual(data.tool, { sha256: sha(huge), bytes: 4 * 1024 * 1024, prefix: 'é'.repeat(128) });
  assert.deepEqual(data.method, data.tool);
  assert.deepEqual(data.requestId, { sha256: sha(id), bytes: id.length, prefix: 'i'.repeat(128) });
  assert.ok(canonicalize(data).length < 1200, `${canonicalize(data).length} characters`);
  // Never half a surrogate pair in the prefix.
  const astral = 'a'.repeat(127) + '😀'.repeat(600);
  assert.equal((decide(astral, 1).tool as { prefix: string }).prefix, 'a'.repeat(127));
  assert.equal((decide('😀'.repeat(600), 1).tool as { prefix: string }).prefix, '😀'.repeat(64));
});

test('stats: pending appends and the age of the oldest show a stalled store before any append fails', async (t) => {
  const { store, file } = open(t, 2_000);
  const log = await AuditLog.open(store);
  await log.append('decision', 'a', { n: 1 });
  assert.deepEqual({ ...log.stats(), oldestPendingMs: 0 }, { appended: 1, failed: 0, batches: 1, lastSeq: 1, pending: 0, oldestPendingMs: 0 });
  const other = new Database(file);
  t.after(() => other.close());
  other.exec('BEGIN EXCLUSIVE');
  const waiting = Promise.all([log.append('decision', 'a', { n: 2 }), log.append('decision', 'a', { n: 3 })]);
  await new Promise((r) => setTimeout(r, 250));
  const stalled = log.stats();
  assert.equal(stalled.pending, 2);
  assert.ok(stalled.oldestPendingMs >= 200, `oldest pending ${stalled.oldestPendingMs} ms`);
  assert.equal(log.healthy(), true, 'not failed yet: still waiting for the lock');
  other.exec('COMMIT');
  assert.deepEqual((await waiting).map((r) => r.seq), [2, 3]);
  assert.equal(log.stats().pending, 0);
  assert.equal(log.stats().oldestPendingMs, 0);
  await log.close();
});
