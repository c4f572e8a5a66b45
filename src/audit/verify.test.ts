// Tampering the way an attacker with the database file would: better-sqlite3 straight on the
// file (dropping the append-only triggers first), then the real CLI must find it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteStore } from '../store/sqlite.js';
import { AuditLog, hashRecord } from './chain.js';
import { loadSigningKey } from './keys.js';
import { cli, tempDir, writeConfig, writeKey } from './testdata/fixtures.js';

const RECORDS = 23;
const EVERY = 5;

/** A signed log of 23 records (checkpoints at 5, 10, 15, 20 and 23) and a config naming it. */
async function makeLog(t: Parameters<typeof tempDir>[0]): Promise<{ dir: string; db: string; config: string; key: string }> {
  const dir = tempDir(t);
  const key = writeKey(dir);
  const config = writeConfig(dir, { signingKey: key, checkpointEvery: EVERY });
  const db = join(dir, 'audit.db');
  const store = SqliteStore.open(db);
  const log = await AuditLog.open(store, { signer: loadSigningKey(key), checkpointEvery: EVERY });
  for (let i = 1; i <= RECORDS; i++) {
    const type = i === 1 ? 'session.start' : i === RECORDS ? 'session.end' : 'decision';
    // record 7 holds U+2028 and U+2029, which an export line carries raw (JSON.stringify)
    const note = i === 7 ? { note: 'line\u2028separator, paragraph\u2029separator' } : {};
    await log.append(type, 'alice', { i, effect: i % 3 ? 'allow' : 'deny', server: 'db', sessionId: 's1', ...note });
  }
  await log.close();
  await store.close();
  return { dir, db, config, key };
}

function attack(db: string, fn: (d: Database.Database) => void): void {
  const d = new Database(db);
  d.exec('DROP TRIGGER IF EXISTS audit_records_no_update; DROP TRIGGER IF EXISTS audit_records_no_delete;');
  fn(d);
  d.close();
}

function brokenAt(out: string): number | undefined {
  const m = /broken at seq (\d+) \(([a-z-]+)\)/.exec(out);
  return m ? Number(m[1]) : undefined;
}

function kindOf(out: string): string | undefined {
  return /broken at seq \d+ \(([a-z-]+)\)/.exec(out)?.[1];
}

interface Row {
  seq: number;
  ts: string;
  type: string;
  actor: string;
  data: string;
  prev: string;
  hash: string;
}

function rehash(r: Row, seq = r.seq): string {
  return hashRecord({ seq, ts: r.ts, type: r.type, actor: r.actor, data: JSON.parse(r.data) as Record<string, unknown>, prev: r.prev });
}

test('an untouched log verifies: exit 0, records and checkpoints counted', async (t) => {
  const { config, db } = await makeLog(t);
  const r = cli(['audit', 'verify', '-c', config]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /ok: 23 records verified \(seq 1–23\), 5 checkpoints, 5 signatures valid/);
  // The same through --store with the public key derived from the signing key given as --public-key.
  const r2 = cli(['audit', 'verify', '--store', `sqlite:${db}`]);
  assert.equal(r2.status, 0, r2.stdout + r2.stderr);
  assert.match(r2.stderr, /signatures not checked/);
});

test('one changed field is found at its seq', async (t) => {
  const { config, db } = await makeLog(t);
  attack(db, (d) => d.prepare("UPDATE audit_records SET actor = 'mallory' WHERE seq = 7").run());
  const r = cli(['audit', 'verify', '-c', config]);
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.equal(brokenAt(r.stdout), 7, r.stdout);
  assert.equal(kindOf(r.stdout), 'changed');
});

test('a changed data value is found (the data column is hashed too)', async (t) => {
  const { config, db } = await makeLog(t);
  attack(db, (d) => d.prepare(`UPDATE audit_records SET data = replace(data, '"deny"', '"allow"') WHERE seq = 9`).run());
  const r = cli(['audit', 'verify', '-c', config]);
  assert.equal(r.status, 1, r.stdout);
  assert.equal(brokenAt(r.stdout), 9, r.stdout);
});

test('a deleted record is found at its seq', async (t) => {
  const { config, db } = await makeLog(t);
  attack(db, (d) => d.prepare('DELETE FROM audit_records WHERE seq = 12').run());
  const r = cli(['audit', 'verify', '-c', config]);
  assert.equal(r.status, 1, r.stdout);
  assert.equal(brokenAt(r.stdout), 12, r.stdout);
  assert.equal(kindOf(r.stdout), 'deleted');
});

test('a deleted record with the later ones renumbered is found', async (t) => {
  const { config, db } = await makeLog(t);
  attack(db, (d) => {
    d.prepare('DELETE FROM audit_records WHERE seq = 12').run();
    for (let s = 13; s <= RECORDS; s++) d.prepare('UPDATE audit_records SET seq = ? WHERE seq = ?').run(s - 1, s);
  });
  const r = cli(['audit', 'verify', '-c', config]);
  assert.equal(r.status, 1, r.stdout);
  assert.equal(brokenAt(r.stdout), 12, r.stdout);
  assert.equal(kindOf(r.stdout), 'deleted');
});

test('two swapped records are found as reordered', async (t) => {
  const { config, db } = await makeLog(t);
  attack(db, (d) => {
    d.prepare('UPDATE audit_records SET seq = -1 WHERE seq = 7').run();
    d.prepare('UPDATE audit_records SET seq = 7 WHERE seq = 8').run();
    d.prepare('UPDATE audit_records SET seq = 8 WHERE seq = -1').run();
  });
  const r = cli(['audit', 'verify', '-c', config]);
  assert.equal(r.status, 1, r.stdout);
  assert.equal(brokenAt(r.stdout), 7, r.stdout);
  assert.equal(kindOf(r.stdout), 'reordered');
});

test('an inserted record (correctly hashed, later records shifted) is found at its seq', async (t) => {
  const { config, db } = await makeLog(t);
  attack(db, (d) => {
    for (let s = RECORDS; s >= 7; s--) d.prepare('UPDATE audit_records SET seq = ? WHERE seq = ?').run(s + 1, s);
    const before = d.prepare('SELECT * FROM audit_records WHERE seq = 6').get() as Row;
    const forged: Row = { seq: 7, ts: before.ts, type: 'decision', actor: 'alice', data: JSON.stringify({ effect: 'allow', forged: true }), prev: before.hash, hash: '' };
    forged.hash = rehash(forged);
    d.prepare('INSERT INTO audit_records (seq, ts, type, actor, data, prev, hash) VALUES (@seq, @ts, @type, @actor, @data, @prev, @hash)').run(forged);
  });
  const r = cli(['audit', 'verify', '-c', config]);
  assert.equal(r.status, 1, r.stdout);
  assert.equal(brokenAt(r.stdout), 7, r.stdout);
  assert.equal(kindOf(r.stdout), 'inserted');
});

test('a truncated tail is found against an exported checkpoint', async (t) => {
  const { config, db, dir } = await makeLog(t);
  const cp = join(dir, 'checkpoint.json');
  const exp = cli(['audit', 'export', '-c', config, '--checkpoint-out', cp]);
  assert.equal(exp.status, 0, exp.stderr);
  assert.equal(exp.stdout.trim().split('\n').length, RECORDS);
  assert.equal((JSON.parse(readFileSync(cp, 'utf8')) as { seq: number }).seq, RECORDS);
  attack(db, (d) => {
    d.prepare('DELETE FROM audit_records WHERE seq > 20').run();
    d.prepare('DELETE FROM audit_checkpoints WHERE seq > 20').run();
  });
  // Without the exported checkpoint, a clean cut at a checkpoint cannot be told from a shorter log.
  assert.equal(cli(['audit', 'verify', '-c', config]).status, 0);
  const r = cli(['audit', 'verify', '-c', config, '--checkpoint', cp]);
  assert.equal(r.status, 1, r.stdout);
  assert.equal(brokenAt(r.stdout), 21, r.stdout);
  assert.equal(kindOf(r.stdout), 'truncated');
  assert.match(r.stdout, /records 21–23 are missing/);
});

test('a change with every later hash recomputed (no key) is caught by the signed checkpoints', async (t) => {
  const { config, db } = await makeLog(t);
  attack(db, (d) => {
    const rows = d.prepare('SELECT * FROM audit_records WHERE seq >= 7 ORDER BY seq').all() as Row[];
    let prev = (d.prepare('SELECT hash FROM audit_records WHERE seq = 6').get() as { hash: string }).hash;
    for (const row of rows) {
      if (row.seq === 7) row.actor = 'mallory';
      row.prev = prev;
      row.hash = rehash(row);
      prev = row.hash;
      d.prepare('UPDATE audit_records SET actor = @actor, prev = @prev, hash = @hash WHERE seq = @seq').run(row);
    }
  });
  const r = cli(['audit', 'verify', '-c', config]);
  assert.equal(r.status, 1, r.stdout);
  assert.equal(brokenAt(r.stdout), 10, r.stdout);
  assert.equal(kindOf(r.stdout), 'rewritten');
  assert.match(r.stdout, /records 6–10 were rewritten/);

  // Forging the checkpoints too needs the private key: the altered ones fail their signatures,
  attack(db, (d) => {
    for (const { seq, hash } of d.prepare('SELECT seq, hash FROM audit_records').all() as Row[]) {
      d.prepare('UPDATE audit_checkpoints SET hash = ? WHERE seq = ?').run(hash, seq);
    }
  });
  const r2 = cli(['audit', 'verify', '-c', config]);
  assert.equal(r2.status, 1, r2.stdout);
  assert.equal(brokenAt(r2.stdout), 10, r2.stdout);
  assert.equal(kindOf(r2.stdout), 'bad-signature');

  // deleted ones are missed (the config says one every 5 records),
  attack(db, (d) => d.prepare('DELETE FROM audit_checkpoints WHERE seq >= 10').run());
  const r3 = cli(['audit', 'verify', '-c', config]);
  assert.equal(r3.status, 1);
  assert.equal(brokenAt(r3.stdout), 10, r3.stdout);
  assert.equal(kindOf(r3.stdout), 'missing-checkpoint');
  // and unsigned ones are refused when a key is given.
  attack(db, (d) => d.prepare('UPDATE audit_checkpoints SET signature = NULL, key_id = NULL').run());
  const r4 = cli(['audit', 'verify', '-c', config]);
  assert.equal(r4.status, 1);
  assert.equal(brokenAt(r4.stdout), 5, r4.stdout);
  assert.equal(kindOf(r4.stdout), 'unsigned-checkpoint');
});

test('an export verifies elsewhere with its checkpoint and the public key; a tampered export does not', async (t) => {
  const { config, dir, key } = await makeLog(t);
  const cp = join(dir, 'cp.json');
  const exp = cli(['audit', 'export', '-c', config, '--since', '2000-01-01', '--checkpoint-out', cp]);
  assert.equal(exp.status, 0, exp.stderr);
  const file = join(dir, 'export.jsonl');
  writeFileSync(file, exp.stdout);
  assert.match(exp.stdout, /\u2028/, 'raw in the export');
  const ok = cli(['audit', 'verify', '--input', file, '--checkpoint', cp, '--public-key', key]);
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /ok: 23 records verified/);
  const lines = exp.stdout.trim().split('\n');
  writeFileSync(file, `${lines.slice(0, 20).join('\n')}\n`);
  const cut = cli(['audit', 'verify', '--input', file, '--checkpoint', cp, '--public-key', key]);
  assert.equal(cut.status, 1);
  assert.equal(brokenAt(cut.stdout), 21, cut.stdout);
  // A future --since exports nothing.
  const none = cli(['audit', 'export', '-c', config, '--since', '2999-01-01']);
  assert.equal(none.status, 0);
  assert.equal(none.stdout, '');
});

test('verify of something that is not a store: exit 1, one line on stderr', async (t) => {
  const dir = tempDir(t);
  const text = join(dir, 'notes.txt');
  writeFileSync(text, 'hello\n');
  const r = cli(['audit', 'verify', '--store', `sqlite:${text}`]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^portcullis: .*notes\.txt is not a Portcullis store/);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  const missing = cli(['audit', 'verify', '--store', `sqlite:${join(dir, 'none.db')}`]);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /does not exist/);
  assert.equal(cli(['audit', 'export', '--store', `sqlite:${text}`, '--format', 'csv']).status, 2);
});
