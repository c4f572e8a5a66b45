// Runs inside the audit writer thread (see writer-thread.ts): opens the store named by its
// workerData and answers the gateway's calls with storeWriter (writer.ts).
//
// Audit batches commit one transaction at a time, in the order they arrived. Before each
// transaction the thread takes every message already waiting on its port, so the batches
// posted while the last transaction ran share the next one (and its fsync); each batch still
// gets its own answer: its links, or the transaction's error.
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { openStore } from '../store/open.js';
import type { Payload, RecordingRow, Store } from '../store/store.js';
import { signerOf } from './keys.js';
import { storeWriter, type AuditEntry } from './writer.js';
import { wireError, type WriterCall, type WriterMessage, type WriterThreadData } from './writer-thread.js';

/** Most records joined into one transaction. */
const MAX_JOINED = 10_000;

const port = parentPort!;
const data = workerData as WriterThreadData;
const send = (m: WriterMessage) => port.postMessage(m);

let store: Store;
try {
  // The gateway's thread opened (and created, migrated) the store already. PostgreSQL: one audit
  // transaction at a time, recordings beside it.
  store = await openStore(data.url, data.baseDir, { mustExist: true, busyTimeout: data.busyTimeout, connections: 2 });
} catch (e) {
  send({ failed: wireError(e) });
  process.exit(1); // in a worker: ends this thread only
}
const writer = storeWriter(store, { signer: data.privateKey && signerOf(data.privateKey), checkpointEvery: data.checkpointEvery });

const running = new Set<Promise<unknown>>();
const audit: { id: number; entries: AuditEntry[] }[] = [];
let committing = false;
let closing = false;

function track(p: Promise<unknown>): void {
  running.add(p);
  void p.finally(() => running.delete(p));
}

function answer(id: number, p: Promise<unknown>): void {
  track(
    p.then(
      (value) => send({ id, value }),
      (e) => send({ id, error: wireError(e) }),
    ),
  );
}

function receive(m: WriterCall): void {
  const [a, b] = m.args as [unknown, unknown];
  switch (m.op) {
    case 'appendAudit':
      audit.push({ id: m.id, entries: a as AuditEntry[] });
      if (!committing) track(commitAudit());
      return;
    case 'checkpoint':
      // After the batches before it: a checkpoint covers what was appended before it was asked for.
      return answer(m.id, idle().then(() => writer.checkpoint()));
    case 'appendRecordings':
      return answer(m.id, writer.appendRecordings(a as RecordingRow[], b as Payload[]));
    case 'pruneRecordings':
      return answer(m.id, writer.pruneRecordings(a as number));
    case 'recordingCounts':
      return answer(m.id, writer.recordingCounts(a as string[]));
    case 'close':
      closing = true;
      void idle().then(async () => {
        await Promise.allSettled(running);
        await store.close();
        process.exit(0);
      });
      return;
    default:
      // Only writer-thread.ts talks to this thread: anything else is a bug, and the thread fails
      // (the gateway's side fails closed and starts another).
      throw new Error(`the audit writer thread got a call it does not know: ${String((m as { op?: unknown }).op)}`);
  }
}

/** Commits the waiting audit batches, the ones that arrive meanwhile joined, until none waits. */
async function commitAudit(): Promise<void> {
  committing = true;
  try {
    for (;;) {
      for (let m; !closing && (m = receiveMessageOnPort(port)); ) receive(m.message as WriterCall);
      if (!audit.length) return;
      let n = 0;
      let k = 0;
      while (k < audit.length && (k === 0 || n + audit[k].entries.length <= MAX_JOINED)) n += audit[k++].entries.length;
      const calls = audit.splice(0, k);
      try {
        const links = await writer.appendAudit(calls.flatMap((c) => c.entries));
        let i = 0;
        for (const c of calls) send({ id: c.id, value: links.slice(i, (i += c.entries.length)).map(({ seq, ts, prev, hash }) => ({ seq, ts, prev, hash })) });
      } catch (e) {
        for (const c of calls) send({ id: c.id, error: wireError(e) });
      }
    }
  } finally {
    committing = false;
    for (const w of idleWaiters.splice(0)) w();
  }
}

const idleWaiters: (() => void)[] = [];
function idle(): Promise<void> {
  return committing || audit.length ? new Promise((r) => idleWaiters.push(r)) : Promise.resolve();
}

port.on('message', receive);
send({ ready: true });
