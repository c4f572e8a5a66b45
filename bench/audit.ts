// Sustained durable audit appends per second: many concurrent appenders (as many requests in
// flight), group commit, SQLite WAL with synchronous=FULL on a temp file. Every counted append
// had resolved, i.e. its transaction had committed and been fsynced.
//   npx tsx bench/audit.ts            (AUDIT_BENCH_SECONDS, AUDIT_BENCH_CONCURRENCY to vary)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { AuditLog, digestArgs } from '../src/audit/chain.js';
import { SqliteStore } from '../src/store/sqlite.js';
import { verifyStore } from '../src/audit/verify.js';

export async function benchAudit(): Promise<void> {
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

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await benchAudit();
