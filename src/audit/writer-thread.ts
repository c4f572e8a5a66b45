// The audit writer thread: a worker_threads Worker that opens the store itself and runs
// storeWriter (writer.ts) for the gateway, so that SQLite's commit and fsync, the inserts and the
// chain's hashing happen off the event loop. The gateway still awaits every write: an append
// resolves only once the thread has committed it, so a request is forwarded only after that.
//
// One thread per store, one message per call, answers matched by id. Calls are posted in the
// order they are made. Audit batches are pipelined: the audit log posts each batch at once, and
// the thread commits them in the order posted, one transaction at a time, joining the batches
// that arrived while the last one committed into the next transaction (group commit across
// threads). So the chain's order is the order of append(), and each batch learns its own outcome.
//
// Failure: when the thread dies (an uncaught error, an exit, out of memory), every call it had not
// answered rejects (the gateway denies those requests: fail closed) and onFailure listeners hear
// of it (the audit log turns unhealthy; /readyz says failing until a write succeeds). A new
// thread starts at once. It reads the chain head inside its first transaction, like any writer,
// so nothing is reordered and no gap appears. A call whose transaction committed just before the
// thread died is reported failed all the same (its outcome is unknown): the log may then hold the
// record of a request that was refused, never a forwarded request without its record. When a
// thread cannot start (the store cannot be opened), calls fail at once for RESTART_MS, then the
// next call tries again.
import type { KeyObject } from 'node:crypto';
import v8 from 'node:v8';
import { Worker } from 'node:worker_threads';
import type { Checkpoint, Payload, RecordingRow } from '../store/store.js';
import type { CheckpointSigner } from './keys.js';
import type { AuditEntry, AuditWriter, ChainLink } from './writer.js';

export interface ThreadWriterOptions {
  /** The store's url (store.url) and the folder a sqlite: path is relative to: the thread opens the store itself. */
  url: string;
  baseDir: string;
  /** SQLite: how long a write waits for another connection's lock (ms, default 5000). */
  busyTimeout?: number;
  signer?: CheckpointSigner;
  /** A checkpoint every N records. */
  checkpointEvery: number;
}

/** What the thread is started with (its workerData). A KeyObject crosses threads as it is. */
export interface WriterThreadData {
  url: string;
  baseDir: string;
  busyTimeout?: number;
  privateKey?: KeyObject;
  checkpointEvery: number;
}

export type WriterOp = 'appendAudit' | 'checkpoint' | 'appendRecordings' | 'pruneRecordings' | 'recordingCounts' | 'close';
export interface WriterCall {
  id: number;
  op: WriterOp;
  args: unknown[];
}
export interface WireError {
  message: string;
  code?: string;
}
/** The thread's messages: ready or failed once at start, then one answer per call. */
export type WriterMessage = { ready: true } | { failed: WireError } | { id: number; value: unknown } | { id: number; error: WireError };

/**
 * The thread's semi-spaces (MB): V8 would let them grow to 16 MB (about 25 MB of heap under load),
 * although what the thread keeps between batches is small; 2 MB holds it near 14 MB for a few more
 * scavenges of about a millisecond each (docs/operations.md, "Memory"). Set as the V8 flag, which
 * V8 reads when it creates an isolate and which would override the Worker's resourceLimits when
 * the process was started with one (SERVE_NODE_FLAGS); the gateway's own heap keeps the size it
 * started with. No old generation limit: running out of it would end the thread, and every
 * pending append with it.
 */
const THREAD_SEMI_SPACE_MB = 2;

/** After a thread failed to start, calls fail at once for this long before another start is tried (ms). */
const RESTART_MS = 1_000;

interface Call {
  op: WriterOp;
  args: unknown[];
  resolve(value: unknown): void;
  reject(e: Error): void;
}

export function wireError(e: unknown): WireError {
  const code = (e as { code?: unknown } | null)?.code;
  return { message: e instanceof Error ? e.message : String(e), ...(typeof code === 'string' && { code }) };
}

function fromWire(w: WireError): Error {
  return Object.assign(new Error(w.message), w.code === undefined ? {} : { code: w.code });
}

export class ThreadWriter implements AuditWriter {
  readonly pipelined = true;
  private thread: Worker | undefined;
  private starting: Promise<void> | undefined;
  /** Calls made while no thread serves; posted in order once one does. */
  private readonly waiting: Call[] = [];
  private readonly inFlight = new Map<number, Call>();
  private nextId = 0;
  private startFailure: { at: number; error: Error } | undefined;
  private readonly failureListeners: ((e: Error) => void)[] = [];
  private closed = false;
  private readonly data: WriterThreadData;

  private constructor(o: ThreadWriterOptions) {
    this.data = { url: o.url, baseDir: o.baseDir, busyTimeout: o.busyTimeout, privateKey: o.signer?.privateKey, checkpointEvery: o.checkpointEvery };
  }

  /** Starts the thread; resolves once it has opened the store, rejects when it cannot. */
  static async start(o: ThreadWriterOptions): Promise<ThreadWriter> {
    const w = new ThreadWriter(o);
    await (w.starting = w.spawn());
    return w;
  }

  /** The thread serving now (undefined while one starts): for diagnostics. Never terminate() it: see the messageerror handler. */
  get worker(): Worker | undefined {
    return this.thread;
  }

  appendAudit(entries: AuditEntry[]): Promise<ChainLink[]> {
    // Only what is hashed crosses: the parsed data stays here.
    return this.call('appendAudit', [entries.map(({ type, actor, dataJson }) => ({ type, actor, dataJson }))]) as Promise<ChainLink[]>;
  }

  checkpoint(): Promise<Checkpoint | undefined> {
    return this.call('checkpoint', []) as Promise<Checkpoint | undefined>;
  }

  async appendRecordings(rows: RecordingRow[], payloads: Payload[]): Promise<void> {
    await this.call('appendRecordings', [rows, payloads]);
  }

  pruneRecordings(before: number): Promise<{ messages: number; payloads: number }> {
    return this.call('pruneRecordings', [before]) as Promise<{ messages: number; payloads: number }>;
  }

  recordingCounts(sessionIds: string[]): Promise<Map<string, number>> {
    return this.call('recordingCounts', [sessionIds]) as Promise<Map<string, number>>;
  }

  onFailure(listener: (e: Error) => void): void {
    this.failureListeners.push(listener);
  }

  /** Lets the calls made so far finish, then the thread closes its store and ends. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.starting?.catch(() => undefined);
    const t = this.thread;
    if (!t) return;
    const exited = new Promise<void>((resolve) => t.once('exit', () => resolve()));
    this.post(t, { op: 'close', args: [], resolve: () => undefined, reject: () => undefined });
    await exited;
  }

  private call(op: WriterOp, args: unknown[]): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const c: Call = { op, args, resolve, reject };
      if (this.closed) return reject(new Error('the audit writer is closed'));
      if (this.thread) return this.post(this.thread, c);
      const failed = this.startFailure;
      if (!this.starting && failed && performance.now() - failed.at < RESTART_MS) return reject(failed.error);
      this.waiting.push(c);
      this.starting ??= this.spawn().catch(() => undefined);
    });
  }

  private post(t: Worker, c: Call): void {
    const id = ++this.nextId;
    this.inFlight.set(id, c);
    try {
      t.postMessage({ id, op: c.op, args: c.args } satisfies WriterCall);
    } catch (e) {
      this.inFlight.delete(id); // not cloneable: nothing was sent
      c.reject(e as Error);
    }
  }

  private spawn(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const t = startThread(this.data);
      let ready = false;
      let error: Error | undefined;
      t.on('message', (m: WriterMessage) => {
        if ('ready' in m) {
          ready = true;
          [this.thread, this.starting, this.startFailure] = [t, undefined, undefined];
          for (const c of this.waiting.splice(0)) this.post(t, c);
          return resolve();
        }
        if ('failed' in m) return void (error = fromWire(m.failed)); // its exit follows
        const c = this.inFlight.get(m.id);
        if (!c) return;
        this.inFlight.delete(m.id);
        if ('error' in m) c.reject(fromWire(m.error));
        else c.resolve(m.value);
      });
      t.on('error', (e) => (error ??= e));
      t.on('messageerror', (e) => {
        // An answer that cannot be read: its call would never settle. Fail every call in flight
        // (their outcome is unknown) rather than end the thread: terminating a thread inside a
        // better-sqlite3 call can abort the whole process (WiseLibs/better-sqlite3#842).
        const failure = new Error(`an answer of the audit writer thread could not be read: ${e.message}`);
        for (const c of this.inFlight.values()) c.reject(failure);
        this.inFlight.clear();
        for (const listener of this.failureListeners) listener(failure);
      });
      t.once('exit', (code) => {
        if (!ready) {
          const failure = new Error(`the audit writer thread could not start: ${error?.message ?? `it exited with code ${code}`}`);
          [this.starting, this.startFailure] = [undefined, { at: performance.now(), error: failure }];
          for (const c of this.waiting.splice(0)) c.reject(failure);
          return reject(failure);
        }
        this.thread = undefined;
        const failure = this.closed ? new Error('the audit writer is closed') : new Error(`the audit writer thread stopped: ${error?.message ?? `it exited with code ${code}`}`);
        for (const c of this.inFlight.values()) c.reject(failure);
        this.inFlight.clear();
        if (this.closed) return;
        for (const listener of this.failureListeners) listener(failure);
        this.starting ??= this.spawn().catch(() => undefined);
      });
    });
  }
}

function startThread(workerData: WriterThreadData): Worker {
  const fromSources = import.meta.url.endsWith('.ts');
  const entry = new URL(fromSources ? './writer-worker.ts' : './writer-worker.js', import.meta.url);
  v8.setFlagsFromString(`--max-semi-space-size=${THREAD_SEMI_SPACE_MB}`);
  if (!fromSources) return new Worker(entry, { workerData });
  // From the TypeScript sources (npm start, tests): a worker does not inherit tsx's loader on
  // Node 20, so the thread registers it before it loads its entry.
  const tsx = import.meta.resolve('tsx/esm/api');
  return new Worker(`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); });`, { eval: true, workerData });
}
