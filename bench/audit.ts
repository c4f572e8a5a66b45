// What the audit log costs and where the time goes:
// - breakdown: the parts of one durable append (canonical JSON, the record's hash, the SQLite
//   transaction with and without its fsync) and of one recorded message;
// - appends: sustained durable appends per second, many concurrent appenders (as many requests
//   in flight), group commit, SQLite WAL with synchronous=FULL on a temp file, written on the
//   caller's thread and through the writer thread (src/audit/writer-thread.ts), with the CPU
//   per append of the event-loop thread and of the whole process; PostgreSQL as well when
//   AUDIT_BENCH_POSTGRES names one (a schema of its own is made and dropped). Every counted
//   append had resolved, i.e. its transaction had committed.
// - recordings: what session recordings cost, chained and sealed into the audit log: CPU per
//   recorded message, write throughput, bytes per message in the file, seals, verify's speed.
//   npx tsx bench/audit.ts   (AUDIT_BENCH_SECONDS, AUDIT_BENCH_CONCURRENCY, AUDIT_BENCH_MESSAGES,
//                             AUDIT_BENCH_POSTGRES, AUDIT_BENCH_ONLY=breakdown|appends|recordings)
import Database from 'better-sqlite3';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { canonicalize } from '../src/audit/canonical.js';
import { AuditLog, canonicalRecord, digestArgs, sha256Hex } from '../src/audit/chain.js';
import { Recorder } from '../src/audit/recorder.js';
import { linkHash } from '../src/audit/recording-chain.js';
import { ThreadWriter } from '../src/audit/writer-thread.js';
import { openStore } from '../src/store/open.js';
import { SqliteStore } from '../src/store/sqlite.js';
import { verifyStore } from '../src/audit/verify.js';

/** A realistic decision record (see DecisionAuditData). */
const decision = (n: number) => ({
  decisionId: `0b1c7a52-4d7e-4f0a-9c1e-${String(n).padStart(12, '0')}`,
  sessionId: 'b7a1c1f0-5f0e-4c1e-9d7a-3f3f7b1d2c11',
  requestId: n,
  effect: 'allow',
  rule: 'postgres-access/analysts-read-only',
  bundleVersion: 'a3f1c2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90',
  identity: { sub: 'alice@example.com', groups: ['analysts', 'engineering'] },
  server: 'db',
  method: 'tools/call',
  tool: 'query',
  argsDigest: digestArgs({ sql: `select * from orders where id = ${n}` }),
});

/** CPU of this process's main thread (the event loop), µs. */
function loopCpuMicros(): number {
  const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1e6) / 100; // CLK_TCK is 100 on Linux
}

export async function benchAudit(): Promise<void> {
  const only = process.env.AUDIT_BENCH_ONLY;
  if (!only || only === 'breakdown') benchBreakdown();
  if (!only || only === 'appends') await benchAppends();
  if (!only || only === 'recordings') await benchRecordings();
}

/** Mean µs per call of f over n calls, after a warm-up. */
function micros(n: number, f: (i: number) => void): number {
  for (let i = 0; i < Math.min(n, 2000); i++) f(i);
  const t = performance.now();
  for (let i = 0; i < n; i++) f(i);
  return ((performance.now() - t) * 1000) / n;
}

function benchBreakdown(): void {
  const n = 20_000;
  const data = Array.from({ length: n }, (_, i) => decision(i));
  const json = data.map((d) => canonicalize(d));
  const line = (what: string, us: number, where: string) => console.log(`  ${what.padEnd(58)} ${us.toFixed(1).padStart(7)} µs  ${where}`);
  console.log('where the time of one audit append goes (decision-sized record):');
  line('canonical JSON of the data (append())', micros(n, (i) => canonicalize(data[i])), 'event loop');
  line("the record's SHA-256 (canonical record + hash)", micros(n, (i) => sha256Hex(canonicalRecord({ seq: i, ts: '2026-11-29T10:00:00.000Z', type: 'decision', actor: 'alice', prev: 'a'.repeat(64) }, json[i]))), 'writer');
  const dir = mkdtempSync(join(tmpdir(), 'pcl-bench-breakdown-'));
  try {
    for (const sync of ['FULL', 'OFF'] as const) {
      const store = SqliteStore.open(join(dir, `${sync}.db`));
      const db = (store as unknown as { db: Database.Database }).db; // the bench looks inside: one statement, one pragma
      db.pragma(`synchronous = ${sync}`);
      const mode = `${db.pragma('journal_mode', { simple: true })}, synchronous=${sync}`;
      const insert = db.prepare('INSERT INTO audit_records (seq, ts, type, actor, data, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?)');
      const head = db.prepare('SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1');
      let seq = 0;
      const one = db.transaction((j: string) => (head.get(), insert.run(++seq, 't', 'decision', 'alice', j, 'p', 'h')));
      const hundred = db.transaction((k: number) => {
        head.get();
        for (let r = 0; r < 100; r++) insert.run(++seq, 't', 'decision', 'alice', json[(k + r) % n], 'p', 'h');
      });
      line(`SQLite transaction of 1 record (${mode})`, micros(sync === 'FULL' ? 3000 : n, (i) => one.immediate(json[i % n])), 'writer');
      line(`SQLite transaction of 100 records (${mode}), per record`, micros(300, (i) => hundred.immediate(i)) / 100, 'writer');
      void store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const messages = Array.from({ length: n }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'tools/call', params: { name: 'echo', arguments: { message: `message ${i}` } } }));
  const rec = new Recorder({ appendRecordings: async () => undefined, pruneRecordings: async () => ({ messages: 0, payloads: 0 }), recordingCounts: async () => new Map() }, { pruneInterval: 0, flushInterval: 1e9, maxQueue: 1e9, batchSize: 1e9 });
  line('recording one message (record(): snapshot, queue)', micros(n, (i) => rec.record({ sessionId: 's', direction: 'fromClient', message: messages[i], server: 'echo' })), 'event loop');
  const rows = (rec as unknown as { queue: { row: Parameters<typeof linkHash>[1] }[] }).queue.map((q) => q.row);
  line("a recorded message's chain link (SHA-256)", micros(rows.length, (i) => linkHash('a'.repeat(64), rows[i % rows.length])), 'event loop');
}

async function benchAppends(): Promise<void> {
  const seconds = Number(process.env.AUDIT_BENCH_SECONDS ?? 4);
  const levels = process.env.AUDIT_BENCH_CONCURRENCY ? [Number(process.env.AUDIT_BENCH_CONCURRENCY)] : [1, 16, 256, 1024];
  const dir = mkdtempSync(join(tmpdir(), 'pcl-bench-audit-'));
  const postgres = process.env.AUDIT_BENCH_POSTGRES;
  const schema = `pcl_bench_${process.pid}`;
  const admin = postgres ? new pg.Client(postgres) : undefined;
  await admin?.connect();
  await admin?.query(`CREATE SCHEMA ${schema}`);
  const pgUrl = postgres && `${postgres}${postgres.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;
  console.log('durable audit appends (each counted append had committed):');
  try {
    for (const kind of postgres ? ['sqlite', 'postgres'] : ['sqlite']) {
      for (const thread of [false, true]) {
        const url = kind === 'sqlite' ? `sqlite:./audit-${thread}.db` : pgUrl!;
        const store = await openStore(url, dir);
        const writer = thread ? await ThreadWriter.start({ url, baseDir: dir, checkpointEvery: 1000 }) : undefined;
        const log = await AuditLog.open(store, writer ? { writer } : { checkpointEvery: 1000 });
        for (let i = 0; i < 200; i++) await log.append('decision', 'alice@example.com', decision(i));
        for (const concurrency of levels) {
          let done = 0;
          const latencies: number[] = [];
          const batches0 = log.stats().batches;
          const cpu0 = process.cpuUsage();
          const loop0 = loopCpuMicros();
          const start = performance.now();
          const deadline = start + seconds * 1000;
          await Promise.all(
            Array.from({ length: concurrency }, async () => {
              while (performance.now() < deadline) {
                const t = performance.now();
                await log.append('decision', 'alice@example.com', decision(done));
                latencies.push(performance.now() - t);
                done++;
              }
            }),
          );
          const elapsed = (performance.now() - start) / 1000;
          const cpu = process.cpuUsage(cpu0);
          const loop = loopCpuMicros() - loop0;
          latencies.sort((a, b) => a - b);
          const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))].toFixed(2);
          console.log(
            `  ${kind.padEnd(8)} ${(thread ? 'writer thread' : 'event loop').padEnd(13)} ${String(concurrency).padStart(4)} appenders: ${Math.round(done / elapsed).toLocaleString('en-US').padStart(7)}/s` +
              `  p50 ${pct(0.5)} ms p99 ${pct(0.99)} ms  CPU per append: event loop ${(loop / done).toFixed(1)} µs, process ${((cpu.user + cpu.system) / done).toFixed(1)} µs` +
              `  (${(done / (log.stats().batches - batches0)).toFixed(1)} records/batch)`,
          );
        }
        await log.close();
        await writer?.close();
        const verify = await verifyStore(store);
        await store.close();
        if (!verify.ok) console.log(`  ${kind}: CHAIN BROKEN: ${verify.break?.message}`);
      }
    }
  } finally {
    await admin?.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin?.end();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Sessions of tools/call requests and replies, recorded interleaved as many sessions at once would be. */
async function benchRecordings(): Promise<void> {
  const total = Number(process.env.AUDIT_BENCH_MESSAGES ?? 100_000);
  const sessions = 200;
  const dir = mkdtempSync(join(tmpdir(), 'pcl-bench-rec-'));
  try {
    const file = join(dir, 'rec.db');
    const store = SqliteStore.open(file);
    const log = await AuditLog.open(store, { checkpointEvery: 1000 });
    const rec = new Recorder(store, { audit: log, pruneInterval: 0 });
    const message = (n: number) =>
      n % 2
        ? { jsonrpc: '2.0', id: n, result: { content: [{ type: 'text', text: `row ${n}: ${'x'.repeat(400)}` }] } }
        : { jsonrpc: '2.0', id: n, method: 'tools/call', params: { name: 'query', arguments: { sql: `select * from orders where id = ${n}`, limit: 100 } } };
    const cpu0 = process.cpuUsage();
    let recordCpu = 0;
    const start = performance.now();
    for (let n = 0; n < total; n++) {
      const t = performance.now();
      rec.record({ sessionId: `session-${n % sessions}`, server: 'db', identity: { sub: 'alice@example.com' }, direction: n % 2 ? 'toClient' : 'fromClient', message: message(n) });
      recordCpu += performance.now() - t;
      if (n % 500 === 499) await new Promise((r) => setImmediate(r)); // let the writer run, as between requests
    }
    for (let s = 0; s < sessions; s++) (rec as { endSession?: (id: string) => void }).endSession?.(`session-${s}`);
    await rec.close();
    await log.close();
    const elapsed = (performance.now() - start) / 1000;
    const cpu = process.cpuUsage(cpu0);
    let seals = 0;
    for await (const r of store.readAudit()) if (r.type === 'recording.seal') seals++;
    const t = performance.now();
    const verify = await verifyStore(store);
    const verifySeconds = (performance.now() - t) / 1000;
    await store.close();
    const db = new Database(file);
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.exec('VACUUM');
    const bytes = (db.pragma('page_count', { simple: true }) as number) * (db.pragma('page_size', { simple: true }) as number);
    db.close();
    console.log(
      `recordings, ${total} messages in ${sessions} sessions: ${Math.round(total / elapsed).toLocaleString('en-US')} messages/s written` +
        ` (record() ${((recordCpu * 1000) / total).toFixed(1)} µs each, ${(((cpu.user + cpu.system) / total)).toFixed(1)} µs CPU per message in all),` +
        ` ${Math.round(bytes / total)} bytes/message in the file, ${seals} seals; verify ${Math.round(total / verifySeconds).toLocaleString('en-US')} messages/s (${verify.ok ? 'ok' : 'BROKEN'})`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await benchAudit();
