// Where the audit log and the recorder write: the chain's transactions, checkpoints, recordings.
//
// storeWriter writes on the caller's thread through a Store. ThreadWriter (writer-thread.ts)
// runs the same storeWriter on a worker thread that opens the store itself, so that a SQLite
// commit and its fsync, the inserts and the hashing of the chain leave the gateway's event loop;
// the caller still awaits each write's outcome, so "durable before forward" is unchanged.
import { PortcullisError } from '../errors.js';
import { GENESIS_PREV, type AuditRecord, type ChainHead, type Checkpoint, type SealedBatch, type Store } from '../store/store.js';
import type { CheckpointSigner } from './keys.js';
import { canonicalRecord, sha256Hex } from './chain.js';

/** One record to append, as the audit log queued it: its data already canonical JSON. */
export interface AuditEntry {
  type: string;
  actor: string;
  /** canonicalize(data): what is hashed. */
  dataJson: string;
}

/**
 * A record whose `data` is parsed from its canonical JSON only when read: appending never reads
 * it (what is hashed and stored is dataJson), so the hot path pays no parse.
 */
export function recordOf(fields: Omit<AuditRecord, 'data'>, dataJson: string): AuditRecord & { readonly dataJson: string } {
  let data: Record<string, unknown> | undefined;
  const { seq, ts, type, actor, prev, hash } = fields;
  const record = {
    seq,
    ts,
    type,
    actor,
    get data() {
      return (data ??= JSON.parse(dataJson) as Record<string, unknown>);
    },
    prev,
    hash,
  };
  // Not enumerable: the record looks (and compares, and serialises) like any other.
  return Object.defineProperty(record, 'dataJson', { value: dataJson }) as AuditRecord & { readonly dataJson: string };
}

/** What a record got when its batch was written: its place in the chain. */
export type ChainLink = Pick<AuditRecord, 'seq' | 'ts' | 'prev' | 'hash'>;

/** What the recorder writes (a Store is one, and so is every AuditWriter). */
export type RecordingWriter = Pick<Store, 'appendRecordings' | 'pruneRecordings' | 'recordingCounts'>;

export interface AuditWriter extends RecordingWriter {
  /**
   * Chains the entries, in order, onto the stored head inside one write transaction and commits
   * durably: all of them or none (the promise rejects).
   */
  appendAudit(entries: AuditEntry[]): Promise<ChainLink[]>;
  /**
   * True when appendAudit may be called again before the last call settled: the writer commits
   * batches in call order (and may join waiting ones into one transaction). False: one at a time.
   */
  readonly pipelined: boolean;
  /** Stores a checkpoint of the stored head (signed when a key is configured); undefined when the log is empty. */
  checkpoint(): Promise<Checkpoint | undefined>;
  /** Calls `listener` when the writer fails between writes (its thread died). */
  onFailure(listener: (e: Error) => void): void;
  close(): Promise<void>;
}

export interface SealOptions {
  /** Signs checkpoints; without it checkpoints are stored unsigned. */
  signer?: CheckpointSigner;
  /** A checkpoint every N records. */
  checkpointEvery: number;
}

/** A checkpoint of `head`, signed when there is a signer. */
export function makeCheckpoint(head: ChainHead, signer: CheckpointSigner | undefined, ts = new Date().toISOString()): Checkpoint {
  const unsigned = { seq: head.seq, hash: head.hash, ts };
  return signer ? signer.sign(unsigned) : { ...unsigned, signature: null, keyId: null };
}

/** The records of a batch chained onto `head`, and the checkpoints they complete (seq % checkpointEvery === 0). */
export function sealBatch(head: ChainHead | undefined, entries: AuditEntry[], o: SealOptions, ts = new Date().toISOString()): SealedBatch {
  let seq = head?.seq ?? 0;
  let prev = head?.hash ?? GENESIS_PREV;
  const records: SealedBatch['records'] = [];
  const checkpoints: Checkpoint[] = [];
  for (const e of entries) {
    const body = { seq: ++seq, ts, type: e.type, actor: e.actor, prev };
    const hash = sha256Hex(canonicalRecord(body, e.dataJson));
    records.push(recordOf({ ...body, hash }, e.dataJson));
    if (seq % o.checkpointEvery === 0) checkpoints.push(makeCheckpoint({ seq, hash }, o.signer, ts));
    prev = hash;
  }
  return { records, checkpoints };
}

/** Writes on the caller's thread. */
export function storeWriter(store: Store, o: SealOptions): AuditWriter {
  if (!(Number.isInteger(o.checkpointEvery) && o.checkpointEvery >= 1)) throw new PortcullisError('PCL_CONFIG_INVALID', `checkpointEvery must be a whole number ≥ 1 (got ${o.checkpointEvery})`);
  return {
    pipelined: false, // two transactions at once could take the lock out of order
    async appendAudit(entries) {
      return (await store.appendAudit((head) => sealBatch(head, entries, o))).records;
    },
    async checkpoint() {
      const head = await store.auditHead();
      if (!head) return undefined;
      const cp = makeCheckpoint(head, o.signer);
      await store.putCheckpoint(cp);
      return cp;
    },
    appendRecordings: (rows, payloads) => store.appendRecordings(rows, payloads),
    pruneRecordings: (before) => store.pruneRecordings(before),
    recordingCounts: (sessionIds) => store.recordingCounts(sessionIds),
    onFailure() {},
    async close() {},
  };
}
