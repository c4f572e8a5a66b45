// Against the local PostgreSQL (PORTCULLIS_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432/test);
// each test in its own schema. Skipped when no server answers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import fc from 'fast-check';
import { PortcullisError } from '../errors.js';
import { AuditLog } from '../audit/chain.js';
import { Recorder } from '../audit/recorder.js';
import { verifyStore } from '../audit/verify.js';
import { describeReport } from '../audit/verify.js';
import { recordSessions, sessionsArb, tamper, TAMPER_KINDS } from '../../test/recording-tamper.js';
import { openStore } from './open.js';
import type { Store } from './store.js';

const BASE = process.env.PORTCULLIS_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432/test';

async function reachable(): Promise<boolean> {
  const c = new pg.Client({ connectionString: BASE, connectionTimeoutMillis: 2000 });
  try {
    await c.connect();
    await c.end();
    return true;
  } catch {
    return false;
  }
}
const skip = (await reachable()) ? false : `no PostgreSQL at ${BASE}`;

/** A fresh schema; returns a store url whose search_path is it, and an admin client. */
async function schema(t: { after: (fn: () => Promise<void>) => void }): Promise<{ url: string; admin: pg.Client; name: string }> {
  const name = `pcl_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client(BASE);
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${name}`);
  t.after(async () => {
    await admin.query(`DROP SCHEMA ${name} CASCADE`);
    await admin.end();
  });
  const url = `${BASE}${BASE.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${name}`)}`;
  return { url, admin, name };
}

async function open(t: Parameters<typeof schema>[0], url: string): Promise<Store> {
  const store = await openStore(url, '/');
  t.after(() => store.close());
  return store;
}

test('two replicas appending at once build one gapless verifiable chain', { skip }, async (t) => {
  const { url } = await schema(t);
  const a = await open(t, url);
  const b = await open(t, url);
  assert.equal(a.kind, 'postgres');
  const logA = await AuditLog.open(a, { checkpointEvery: 50 });
  const logB = await AuditLog.open(b, { checkpointEvery: 50 });
  const records = await Promise.all(
    Array.from({ length: 400 }, (_, i) => (i % 2 ? logA : logB).append('decision', i % 2 ? 'replica-a' : 'replica-b', { i })),
  );
  const seqs = records.map((r) => r.seq).sort((x, y) => x - y);
  assert.deepEqual(seqs, Array.from({ length: 400 }, (_, i) => i + 1));
  await logA.close();
  await logB.close();
  const report = await verifyStore(a, { checkpointEvery: 50 });
  assert.equal(report.ok, true, report.break?.message);
  assert.equal(report.records, 400);
  assert.deepEqual((await a.listCheckpoints()).map((c) => c.seq), [50, 100, 150, 200, 250, 300, 350, 400]);
});

test('tampering in PostgreSQL is detected; records are append-only by trigger', { skip }, async (t) => {
  const { url, admin, name } = await schema(t);
  const store = await open(t, url);
  const log = await AuditLog.open(store);
  for (let i = 0; i < 10; i++) await log.append('decision', 'alice', { i });
  await assert.rejects(admin.query(`UPDATE ${name}.audit_records SET actor = 'x' WHERE seq = 4`), /append-only/);
  await admin.query(`ALTER TABLE ${name}.audit_records DISABLE TRIGGER audit_records_append_only`);
  await admin.query(`UPDATE ${name}.audit_records SET actor = 'mallory' WHERE seq = 4`);
  const report = await verifyStore(store);
  assert.equal(report.ok, false);
  assert.equal(report.break?.seq, 4);
  assert.equal(report.break?.kind, 'changed');
});

test('a failed append rejects with PCL_AUDIT_WRITE_FAILED and the chain continues', { skip }, async (t) => {
  const { url, admin, name } = await schema(t);
  const store = await open(t, url);
  const log = await AuditLog.open(store);
  await log.append('decision', 'a', {});
  await admin.query(`CREATE FUNCTION ${name}.boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$`);
  await admin.query(`CREATE TRIGGER boom BEFORE INSERT ON ${name}.audit_records FOR EACH ROW WHEN (NEW.actor = 'boom') EXECUTE FUNCTION ${name}.boom()`);
  const results = await Promise.allSettled([log.append('decision', 'a', {}), log.append('decision', 'boom', {})]);
  for (const r of results) assert.equal(((r as PromiseRejectedResult).reason as PortcullisError).code, 'PCL_AUDIT_WRITE_FAILED');
  assert.equal(log.healthy(), false);
  await admin.query(`DROP TRIGGER boom ON ${name}.audit_records`);
  assert.equal((await log.append('decision', 'a', {})).seq, 2);
  assert.equal((await verifyStore(store)).ok, true);
});

test('recordings: order, dedup, prune', { skip }, async (t) => {
  const { url, admin, name } = await schema(t);
  const store = await open(t, url);
  let now = 1_000_000;
  const rec = new Recorder(store, { pruneInterval: 0, inlineBytes: 64, retention: 1000, clock: () => now });
  const big = { jsonrpc: '2.0', result: { text: 'y'.repeat(500) } };
  for (let i = 0; i < 20; i++) rec.record({ sessionId: 's', direction: i % 2 ? 'toClient' : 'fromClient', message: i % 2 ? big : { jsonrpc: '2.0', id: i, method: 'ping' }, server: 'demo' });
  await rec.flush();
  const msgs = await store.readRecording('s');
  assert.equal(msgs.length, 20);
  assert.deepEqual(msgs.filter((m) => m.direction === 'fromClient').map((m) => Number(m.messageId)), [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
  assert.equal(msgs[1].body, JSON.stringify(big));
  assert.equal(Number((await admin.query(`SELECT count(*) FROM ${name}.recording_payloads`)).rows[0].count), 1);
  now += 5000;
  assert.deepEqual(await rec.prune(), { messages: 20, payloads: 1 });
  await rec.close();
});

test('property: any single SQL edit of a recording in PostgreSQL fails verify, naming the session and the message', { skip, timeout: 170_000 }, async (t) => {
  await fc.assert(
    fc.asyncProperty(sessionsArb, fc.array(fc.nat(10), { minLength: 5, maxLength: 30 }), fc.integer({ min: 1, max: 5 }), fc.constantFrom(...TAMPER_KINDS), fc.nat(1000), async (sessions, order, sealEvery, kind, pick) => {
      const name = `pcl_test_${randomBytes(6).toString('hex')}`;
      const admin = new pg.Client(BASE);
      await admin.connect();
      await admin.query(`CREATE SCHEMA ${name}`);
      await admin.query(`SET search_path = ${name}`);
      const store = await openStore(`${BASE}${BASE.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${name}`)}`, '/');
      try {
        await recordSessions(store, sessions, order, sealEvery);
        const before = await verifyStore(store);
        assert.equal(before.ok, true, describeReport(before));
        const done = await tamper({ query: async (sql, params) => (await admin.query(sql, params)).rows as Record<string, unknown>[] }, kind, pick);
        fc.pre(done !== undefined);
        const after = await verifyStore(store);
        assert.equal(after.ok, false, `${done!.what}: verify passed`);
        const breaks = after.recordings!.breaks;
        assert.ok(breaks.some((b) => b.session === done!.expect.session && b.message === done!.expect.message), `${done!.what}: got ${describeReport(after)}`);
        for (const b of breaks) assert.ok(done!.sessions.has(b.session), `${done!.what}: session ${b.session} reported too`);
      } finally {
        await store.close();
        await admin.query(`DROP SCHEMA ${name} CASCADE`);
        await admin.end();
      }
    }),
    { numRuns: 40 },
  );
});

test('a schema with foreign tables of the same names is refused', { skip }, async (t) => {
  const { url, admin, name } = await schema(t);
  await admin.query(`CREATE TABLE ${name}.audit_records (id int)`);
  await assert.rejects(openStore(url, '/'), (e: PortcullisError) => e.code === 'PCL_STORE_INVALID' && /not a Portcullis store/.test(e.message));
  await assert.rejects(openStore(url, '/', { mustExist: true }), (e: PortcullisError) => e.code === 'PCL_STORE_INVALID');
});
