// Crash safety: a process appending under load is SIGKILLed; every append it acknowledged must
// be in the store, the chain must verify, and the next append must continue the seq.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { SqliteStore } from '../store/sqlite.js';
import { AuditLog } from './chain.js';
import { Recorder } from './recorder.js';
import { verifyStore } from './verify.js';
import { cli, tempDir } from './testdata/fixtures.js';

const CHILD = fileURLToPath(new URL('./testdata/crash-child.ts', import.meta.url));

async function runAndKill(file: string, minAcks: number): Promise<Map<number, string>> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, file], { stdio: ['ignore', 'pipe', 'inherit'] });
  const acked = new Map<number, string>();
  let buffered = '';
  await new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`child exited on its own: ${code}`))));
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buffered += chunk;
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        const [seq, hash] = line.split(' ');
        acked.set(Number(seq), hash);
      }
      if (acked.size >= minAcks && !child.killed) child.kill('SIGKILL');
    });
  });
  return acked;
}

test('SIGKILL under load loses no acknowledged append; the chain verifies and continues', { timeout: 120_000 }, async (t) => {
  const file = join(tempDir(t), 'crash.db');
  const first = await runAndKill(file, 3000);
  const second = await runAndKill(file, 6000); // a restarted writer continues the same chain, then dies too
  const store = SqliteStore.open(file, { mustExist: true });
  t.after(() => store.close());
  const stored = new Map<number, string>();
  for await (const r of store.readAudit()) stored.set(r.seq, r.hash);
  for (const acked of [first, second]) {
    for (const [seq, hash] of acked) assert.equal(stored.get(seq), hash, `acknowledged seq ${seq} missing or different after the crash`);
  }
  assert.ok(Math.min(...second.keys()) > Math.max(...first.keys()), 'the second writer continued after the first');
  const report = await verifyStore(store, { checkpointEvery: 100 });
  assert.equal(report.ok, true, report.break?.message);
  assert.equal(report.records, stored.size);
  assert.equal(report.lastSeq, stored.size); // gapless from 1

  const log = await AuditLog.open(store);
  const next = await log.append('session.end', 'system', {});
  assert.equal(next.seq, stored.size + 1);
  await log.close();
  const r = cli(['audit', 'verify', '--store', `sqlite:${file}`, '--checkpoint-every', '100']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test('sessions cut short by SIGKILL: their stored recordings verify up to what was written, the unsealed tails are named, and a sealed part is still guarded', { timeout: 120_000 }, async (t) => {
  const file = join(tempDir(t), 'rec.db');
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./testdata/record-child.ts', import.meta.url)), file], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`child exited on its own: ${code}`))));
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      if (/seals ([6-9]|\d\d)/.test(chunk) && !child.killed) child.kill('SIGKILL');
    });
  });
  const store = SqliteStore.open(file, { mustExist: true });
  t.after(() => store.close());
  const seals: { session: string; messages: number; final?: boolean }[] = [];
  for await (const r of store.readAudit()) if (r.type === 'recording.seal') seals.push(r.data as (typeof seals)[number]);
  assert.ok(seals.length >= 6 && seals.every((s) => !s.final), 'periodic seals, no final one: the sessions were cut short');
  const report = await verifyStore(store);
  assert.equal(report.ok, true, report.recordings?.breaks[0]?.text ?? report.break?.message);
  for (const id of ['cut-0', 'cut-1', 'cut-2']) {
    const rows = await store.readRecording(id);
    assert.deepEqual(rows.map((m) => m.seq), rows.map((_, i) => i + 1), `${id}: gapless from 1 as stored`);
    const sealed = Math.max(0, ...seals.filter((s) => s.session === id).map((s) => s.messages));
    const open = report.recordings!.unsealed.find((u) => u.session === id);
    assert.deepEqual(open && [open.from, open.to], rows.length > sealed ? [sealed + 1, rows.length] : undefined, `${id}: the unsealed tail is named`);
  }
  // A restarted gateway records new sessions beside them; the sealed part of a cut session stays guarded.
  const log = await AuditLog.open(store);
  const rec = new Recorder(store, { audit: log, pruneInterval: 0, sealInterval: 0 });
  rec.record({ sessionId: 'after', server: 'srv', direction: 'fromClient', message: { jsonrpc: '2.0', method: 'ping' } });
  await rec.close();
  await log.close();
  assert.equal((await verifyStore(store)).ok, true);
  const victim = seals[0].session;
  new Database(file).prepare('DELETE FROM recordings WHERE session_id = ? AND seq = 1').run(victim);
  const broken = await verifyStore(store);
  assert.deepEqual(broken.recordings!.breaks.map((b) => [b.session, b.message, b.kind]), [[victim, 1, 'deleted']]);
});
