// Sustained durable audit appends per second: many concurrent appenders (as many requests in
// flight), group commit, SQLite WAL with synchronous=FULL on a temp file. Every counted append
// had resolved, i.e. its transaction had committed and been fsynced.
// Then what session recordings cost, chained and sealed into the audit log: CPU per recorded
// message, write throughput, bytes per message in the file, seals, and verify's speed.
//   npx tsx bench/audit.ts            (AUDIT_BENCH_SECONDS, AUDIT_BENCH_CONCURRENCY,
//                                      AUDIT_BENCH_MESSAGES, AUDIT_BENCH_ONLY=appends|recordings)
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { AuditLog, digestArgs } from '../src/audit/chain.js';
import { Recorder } from '../src/audit/recorder.js';
import { SqliteStore } from '../src/store/sqlite.js';
import { verifyStore } from '../src/audit/verify.js';

export async function benchAudit(): Promise<void> {
  const only = process.env.AUDIT_BENCH_ONLY;
  if (only !== 'recordings') await benchAppends();
  if (only !== 'appends') await benchRecordings();
}

async function benchAppends(): Promise<void> {
  const seconds = Number(process.env.AUDIT_BENCH_SECONDS ?? 5);
  const dir = mkdtempSync(join(tmpdir(), 'pcl-bench-audit-'));
  try {
    for (const concurrency of process.env.AUDIT_BENCH_CONCURRENCY ? [Number(process.env.AUDIT_BENCH_CONCURRENCY)] : [1, 64, 256, 1024]) {
      const store = SqliteStore.open(join(dir, `audit-${concurrency}.db`));
      const log = await AuditLog.open(store, { checkpointEvery: 1000 });
      // A realistic decision record (see DecisionAuditData).
      const data = (n: number) => ({
        decisionId: `d-${n}`,
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
      let done = 0;
      const latencies: number[] = [];
      const deadline = performance.now() + seconds * 1000;
      const worker = async () => {
        while (performance.now() < deadline) {
          const t = performance.now();
          await log.append('decision', 'alice@example.com', data(done));
          latencies.push(performance.now() - t);
          done++;
        }
      };
      const start = performance.now();
      await Promise.all(Array.from({ length: concurrency }, worker));
      const elapsed = (performance.now() - start) / 1000;
      const { batches } = log.stats();
      await log.close();
      const verify = await verifyStore(store);
      await store.close();
      latencies.sort((a, b) => a - b);
      const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))].toFixed(2);
      console.log(
        `audit appends, ${String(concurrency).padStart(4)} concurrent: ${Math.round(done / elapsed).toLocaleString('en-US').padStart(7)} durable records/s` +
          `  (${done} in ${elapsed.toFixed(1)} s, ${batches} commits, ${(done / batches).toFixed(1)} records/commit, latency p50 ${pct(0.5)} ms p99 ${pct(0.99)} ms, chain ${verify.ok ? 'verifies' : 'BROKEN'})`,
      );
    }
  } finally {
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
