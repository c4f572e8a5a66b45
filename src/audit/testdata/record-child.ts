// Records three sessions under load, sealing every 50 ms, until killed; prints "seals <n>" as
// seals are appended. Run by crash.test.ts, which SIGKILLs it: the sessions are cut short.
import { SqliteStore } from '../../store/sqlite.js';
import { AuditLog } from '../chain.js';
import { Recorder } from '../recorder.js';

const store = SqliteStore.open(process.argv[2]);
const log = await AuditLog.open(store);
const rec = new Recorder(store, { audit: log, pruneInterval: 0, sealInterval: 50, flushInterval: 5 });
let seals = 0;
for (let n = 0; ; n++) {
  rec.record({ sessionId: `cut-${n % 3}`, server: 'srv', direction: n % 2 ? 'toClient' : 'fromClient', message: { jsonrpc: '2.0', id: n, method: 'tools/call', params: { n } } });
  if (n % 50 === 49) await new Promise((r) => setTimeout(r, 1));
  if (rec.stats().seals !== seals) process.stdout.write(`seals ${(seals = rec.stats().seals)}\n`);
}
