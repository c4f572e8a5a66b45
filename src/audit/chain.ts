// The tamper-evident audit log: one hash chain per store, appended with group commit.
//
// Record:  {seq, ts, type, actor, data, prev, hash}
//          hash = SHA-256 hex of the RFC 8785 canonical JSON of the record without `hash`
//          prev = the previous record's hash; GENESIS_PREV (64 zeros) for seq 1
// Every `checkpointEvery` records (seq % N === 0), and at close(), a checkpoint (seq, hash) is
// stored in the same transaction, signed with the Ed25519 key when one is configured.
//
// Group commit: append() queues the record and schedules one flush with setImmediate, which
// runs after the event loop's I/O phase, so every append caused by the I/O of this loop turn
// (many requests at once) goes into the same transaction and shares one fsync. A microtask
// would flush too early (one request's worth); a timer would add latency. append() resolves
// only after its transaction committed (synchronous=FULL: on disk).
//
// Where the transaction runs is the writer's business (writer.ts). On this thread through the
// store, one batch is written at a time and appends queue for the next. A writer thread
// (writer-thread.ts) hashes, inserts and commits while this event loop goes on: each loop turn's
// batch is posted at once and the thread joins what waits into its next transaction. Either
// way the records are chained in the order of append().
//
// Failure: the writer reads the chain head inside the write transaction, so a failed batch
// leaves nothing behind and the next batch continues from what is really stored: no gap, no
// fork. Every append of the failed batch rejects with PCL_AUDIT_WRITE_FAILED (the gateway then
// denies the request: fail closed), healthy() turns false until a write succeeds; so it does
// when the writer's thread dies.
import { createHash } from 'node:crypto';
import { identityLabel } from '../auth/identity.js';
import type { Decision, DecisionInput } from '../policy/decision.js';
import { PortcullisError } from '../errors.js';
import type { AuditRecord, Checkpoint, Store } from '../store/store.js';
import { canonicalize } from './canonical.js';
import type { CheckpointSigner } from './keys.js';
import { recordOf, storeWriter, type AuditEntry, type AuditWriter } from './writer.js';

export type AuditType =
  | 'session.start'
  | 'session.end'
  | 'decision'
  | `approval.${string}`
  | 'policy.change'
  | `admin.${string}`
  | 'recording.seal'
  | 'recording.prune';

/**
 * The data of a `decision` record (what the gateway should pass). argsDigest, not the
 * arguments: the log proves what was decided without copying payloads (and secrets) into it.
 */
export interface DecisionAuditData {
  [key: string]: unknown;
  decisionId?: string;
  sessionId?: string;
  /** The JSON-RPC id of the request. */
  requestId?: RecordedText | number;
  effect: Decision['effect'];
  rule: string;
  message?: string;
  bundleVersion: string;
  /** keyId: which API key, when the identity is one (two keys may share a sub). */
  identity: { sub: string; keyId?: string; groups: string[] };
  server: string;
  method: RecordedText;
  /** "server" for a request the upstream sent to the client (sampling, elicitation, roots); absent for the client's requests. */
  from?: 'server';
  tool?: RecordedText;
  resource?: RecordedText;
  prompt?: RecordedText;
  /** SHA-256 hex of the canonical JSON of the arguments (see digestArgs). */
  argsDigest?: string;
}

/** Builds a decision record's data from what the policy was asked and answered. */
export function decisionAuditData(
  input: DecisionInput,
  decision: Decision,
  extra: { decisionId?: string; sessionId?: string; requestId?: string | number } = {},
): DecisionAuditData {
  // Members in canonical (sorted) order, so canonicalisation finds nothing to sort; and no spread
  // of `extra` into the literal: V8 then builds it member by member, several times slower.
  const label = identityLabel(input.identity);
  const data: DecisionAuditData = {
    argsDigest: input.args === undefined ? undefined : digestArgs(input.args),
    bundleVersion: decision.bundleVersion,
    decisionId: extra.decisionId,
    effect: decision.effect,
    from: input.from === 'server' ? 'server' : undefined,
    identity: label.keyId === undefined ? { groups: [...input.identity.groups], sub: label.sub } : { groups: [...input.identity.groups], keyId: label.keyId, sub: label.sub },
    message: decision.message,
    method: recordedText(input.method),
    prompt: recordedText(input.prompt),
    requestId: recordedText(extra.requestId),
    resource: recordedText(input.resource),
    rule: decision.rule,
    server: input.server,
    sessionId: extra.sessionId,
    tool: recordedText(input.tool),
  };
  return data; // undefined members are dropped by canonicalisation
}

/** Longest client-chosen text (a name, a URI, a method, a request id) that records and log lines carry as it is. */
export const RECORDED_TEXT_MAX = 1024;

/** A client-chosen text as records and log lines carry it: itself, or when longer than RECORDED_TEXT_MAX, what identifies it. */
export type RecordedText = string | { bytes: number; prefix: string; sha256: string };

/**
 * Within RECORDED_TEXT_MAX characters: the text. Longer: its SHA-256 (of its UTF-8, hex), its
 * size in bytes and its first 128 characters, as an object, which no name can be taken for. So a
 * client cannot make every record and log line of its requests as large as a request body (a
 * refused request is recorded too); the upstream still gets the whole name.
 */
export function recordedText<T>(value: T): T | RecordedText {
  if (typeof value !== 'string' || value.length <= RECORDED_TEXT_MAX) return value;
  const high = value.charCodeAt(127);
  const cut = high >= 0xd800 && high <= 0xdbff ? 127 : 128; // never half a surrogate pair
  return { bytes: Buffer.byteLength(value, 'utf8'), prefix: value.slice(0, cut), sha256: sha256Hex(value) }; // canonical order
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** SHA-256 hex of the canonical JSON of a request's arguments. */
export function digestArgs(args: unknown): string {
  return sha256Hex(canonicalize(args ?? null));
}

/** The hash of a record: SHA-256 of the canonical JSON of every field but `hash`. */
export function hashRecord(r: Omit<AuditRecord, 'hash'>): string {
  return sha256Hex(canonicalize({ seq: r.seq, ts: r.ts, type: r.type, actor: r.actor, data: r.data, prev: r.prev }));
}

/**
 * canonicalize(record without hash), assembled from the already canonical data: the members
 * in JCS order are actor, data, prev, seq, ts, type. A test holds it equal to canonicalize().
 */
export function canonicalRecord(r: Omit<AuditRecord, 'hash' | 'data'>, dataJson: string): string {
  return `{"actor":${JSON.stringify(r.actor)},"data":${dataJson},"prev":${JSON.stringify(r.prev)},"seq":${canonicalize(r.seq)},"ts":${JSON.stringify(r.ts)},"type":${JSON.stringify(r.type)}}`;
}

export interface AuditLogOptions {
  /** Signs checkpoints; without it checkpoints are stored unsigned. (Given to the writer instead, when there is one.) */
  signer?: CheckpointSigner;
  /** A checkpoint every N records (default 1000). (Given to the writer instead, when there is one.) */
  checkpointEvery?: number;
  /** Largest number of records in one transaction (default 10000). */
  maxBatch?: number;
  /** Where batches are written; default: storeWriter(store) on this thread. */
  writer?: AuditWriter;
}

export interface AuditStats {
  /** Records durably appended by this process. */
  appended: number;
  /** Appends rejected because their write failed. */
  failed: number;
  /** Batches written: one transaction each, except that a writer thread joins the batches waiting for it into one. */
  batches: number;
  /** The last seq this process wrote or found at open. */
  lastSeq: number;
  /** Appends not yet resolved (queued, or in a transaction that has not committed). */
  pending: number;
  /** How long the oldest unresolved append has waited (ms); 0 when none. A store that is stalled
   *  (another writer holds its lock, a slow disk) shows here before any append fails. */
  oldestPendingMs: number;
}

interface Pending extends AuditEntry {
  /** 1, 2, 3, … in the order of append(). */
  n: number;
  /** performance.now() at append. */
  at: number;
  resolve: (r: AuditRecord) => void;
  reject: (e: Error) => void;
}

export class AuditLog {
  private queue: Pending[] = [];
  /** Batches handed to the writer and not settled yet, oldest first. */
  private readonly inFlight: Pending[][] = [];
  private scheduled = false;
  private closed = false;
  /** Appends queued so far (the n of the last). */
  private enqueued = 0;
  private flushWaiters: { upTo: number; resolve: () => void }[] = [];
  private error: Error | undefined;
  private readonly counters = { appended: 0, failed: 0, batches: 0, lastSeq: 0 };
  private readonly maxBatch: number;

  private constructor(
    private readonly writer: AuditWriter,
    options: AuditLogOptions,
  ) {
    this.maxBatch = Math.max(1, Math.floor(options.maxBatch ?? 10_000));
    writer.onFailure((e) => (this.error = e));
  }

  /** Opens the log on a store; the chain continues from the last stored record. */
  static async open(store: Store, options: AuditLogOptions = {}): Promise<AuditLog> {
    if (options.writer && (options.signer || options.checkpointEvery !== undefined)) {
      throw new TypeError('AuditLog.open: with a writer, give signer and checkpointEvery to the writer');
    }
    const writer = options.writer ?? storeWriter(store, { signer: options.signer, checkpointEvery: Math.max(1, Math.floor(options.checkpointEvery ?? 1000)) });
    const log = new AuditLog(writer, options);
    log.counters.lastSeq = (await store.auditHead())?.seq ?? 0;
    return log;
  }

  /**
   * Appends a record; resolves with it once it is durable. Rejects with PCL_AUDIT_WRITE_FAILED
   * when it could not be written (data that is not JSON, a closed log, a failed transaction).
   */
  append(type: AuditType, actor: string, data: Record<string, unknown>): Promise<AuditRecord> {
    if (this.closed) return Promise.reject(new PortcullisError('PCL_AUDIT_WRITE_FAILED', 'the audit log is closed'));
    let dataJson: string;
    try {
      if (typeof type !== 'string' || (type as string) === '') throw new TypeError('type must be a non-empty string');
      if (typeof actor !== 'string') throw new TypeError('actor must be a string');
      if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new TypeError('data must be a JSON object');
      // Store exactly what is hashed: a value JSON cannot carry must not vanish between the two.
      dataJson = canonicalize(data);
      canonicalize([type, actor]); // refuses lone surrogates here, not inside a shared batch
    } catch (e) {
      return Promise.reject(new PortcullisError('PCL_AUDIT_WRITE_FAILED', `audit record not written: ${(e as Error).message}`));
    }
    return new Promise<AuditRecord>((resolve, reject) => {
      this.queue.push({ n: ++this.enqueued, type, actor, dataJson, at: performance.now(), resolve, reject });
      this.schedule();
    });
  }

  /** Resolves when everything appended so far has been written or has failed (appends made later do not hold it up). */
  flush(): Promise<void> {
    const upTo = this.enqueued;
    if (this.oldestUnsettled() > upTo) return Promise.resolve();
    return new Promise((resolve) => this.flushWaiters.push({ upTo, resolve }));
  }

  /** The n of the oldest append not yet written or failed; Infinity when none. */
  private oldestUnsettled(): number {
    return this.inFlight[0]?.[0].n ?? this.queue[0]?.n ?? Infinity;
  }

  /** Writes a checkpoint of the current head (signed when a key is configured); undefined when the log is empty. */
  async checkpoint(): Promise<Checkpoint | undefined> {
    await this.flush();
    return this.writer.checkpoint();
  }

  /** False after a failed write, until a write succeeds again (for /readyz). */
  healthy(): boolean {
    return this.error === undefined;
  }

  lastError(): Error | undefined {
    return this.error;
  }

  stats(): AuditStats {
    const oldest = this.inFlight[0]?.[0] ?? this.queue[0];
    return {
      ...this.counters,
      pending: this.inFlight.reduce((n, b) => n + b.length, this.queue.length),
      oldestPendingMs: oldest ? Math.round(performance.now() - oldest.at) : 0,
    };
  }

  /** Writes what is queued, a final checkpoint, and refuses further appends. Does not close the store. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.flush();
    try {
      await this.checkpoint();
    } catch (e) {
      this.error = e as Error;
      throw new PortcullisError('PCL_AUDIT_WRITE_FAILED', `the closing audit checkpoint could not be written: ${(e as Error).message}`);
    }
  }

  private schedule(): void {
    if (this.scheduled || (this.inFlight.length && !this.writer.pipelined)) return;
    this.scheduled = true;
    setImmediate(() => void this.run());
  }

  private async run(): Promise<void> {
    this.scheduled = false;
    const batch = this.queue.splice(0, this.maxBatch);
    if (!batch.length) return;
    this.inFlight.push(batch);
    if (this.queue.length && this.writer.pipelined) this.schedule();
    try {
      const links = await this.writer.appendAudit(batch);
      this.error = undefined;
      this.counters.batches++;
      this.counters.appended += links.length;
      this.counters.lastSeq = links[links.length - 1].seq;
      for (let i = 0; i < batch.length; i++) {
        const { type, actor, dataJson, resolve } = batch[i];
        const { seq, ts, prev, hash } = links[i];
        resolve(recordOf({ seq, ts, type, actor, prev, hash }, dataJson));
      }
    } catch (e) {
      this.error = e as Error;
      this.counters.failed += batch.length;
      const failure = new PortcullisError('PCL_AUDIT_WRITE_FAILED', `audit write failed: ${(e as Error).message}`);
      for (const p of batch) p.reject(failure);
    } finally {
      this.inFlight.splice(this.inFlight.indexOf(batch), 1);
      if (this.queue.length) this.schedule();
      const oldest = this.oldestUnsettled();
      this.flushWaiters = this.flushWaiters.filter((w) => (oldest > w.upTo ? void w.resolve() : true));
    }
  }
}
