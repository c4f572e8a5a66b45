// Appends under load until killed; prints "<seq> <hash>" for every append once it resolved
// (acknowledged = durable). Run by crash.test.ts, which SIGKILLs it.
import { SqliteStore } from '../../store/sqlite.js';
import { AuditLog } from '../chain.js';

const file = process.argv[2];
const store = SqliteStore.open(file);
const log = await AuditLog.open(store, { checkpointEvery: 100 });

async function appender(worker: number): Promise<never> {
  for (let n = 0; ; n++) {
    const r = await log.append('decision', `worker-${worker}`, { n, effect: 'allow', pad: 'x'.repeat(n % 200) });
    process.stdout.write(`${r.seq} ${r.hash}\n`);
  }
}
await Promise.all(Array.from({ length: 32 }, (_, i) => appender(i)));
