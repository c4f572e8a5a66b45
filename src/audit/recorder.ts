// Session recordings: every JSON-RPC message of a session, both directions, after masking.
//
// Off the critical path: record() only serialises the message (a snapshot: the caller may
// reuse the object) and queues it; a timer writes queued messages in one transaction per
// flush. Recordings are best effort where the audit log is not: when the store fails, batches
// are retried a few times and the queue is bounded in messages and in bytes (oldest dropped,
// counted), so a slow or broken store never holds up or exhausts the gateway. A write takes at
// most batchBytes of messages, so what crosses to the writer thread at once is bounded too.
// Decisions are in the audit log, which does fail closed.
//
// Storage: a message larger than maxMessageBytes is cut to that many bytes and marked with its
// original size. Bodies of at least `inlineBytes` are stored once per distinct content
// (content-addressed by SHA-256), so a large result returned a thousand times costs one row.
// Retention: sessions whose every message is older than `retention` are pruned periodically,
// with the payloads no message references any more. Audit records are never pruned.
//
// Tamper evidence (src/audit/recording-chain.ts): each message gets its seq and chain hash when
// its batch is written, not when it is recorded, so what is stored is gapless and in order even
// when a batch fails, is retried or is dropped. Only after a batch committed does the session's
// digest advance; seals into the audit log carry that digest, so a seal covers exactly what was
// stored. Seals are appended without waiting: record() still never waits on the store.
import { createHash } from 'node:crypto';
import type { Identity } from '../auth/identity.js';
import type { AuditRecord } from '../store/store.js';
import { GENESIS_PREV, type Direction, type Payload, type RecordingRow } from '../store/store.js';
import type { AuditType } from './chain.js';
import { linkHash, type RecordingSeal } from './recording-chain.js';
import type { RecordingWriter } from './writer.js';

export interface RecordInput {
  sessionId: string;
  /** fromClient: client → gateway; toClient: gateway → client. */
  direction: Direction;
  /** The parsed JSON-RPC message, already masked. */
  message: unknown;
  server: string;
  identity?: Pick<Identity, 'sub'> | null;
  /** When it passed the gateway (default: now). */
  ts?: number | Date;
  /** The policy decision on this message, when it was decided (replay shows it). */
  decision?: { effect: string; rule: string };
}

export interface RecorderOptions {
  /** Messages larger than this (bytes of JSON) are truncated; default 256 KiB. */
  maxMessageBytes?: number;
  /** Messages older than this (ms) are pruned; default 30 days. */
  retention?: number;
  /** How often a prune runs (ms); default 10 minutes; 0 disables the timer. */
  pruneInterval?: number;
  /** How long a message may wait in memory before it is written (ms); default 50. */
  flushInterval?: number;
  /** A flush starts at once when this many messages are queued; default 500. */
  batchSize?: number;
  /** Most messages held in memory while the store is slow or failing; default 20000. */
  maxQueue?: number;
  /** Most bytes of messages held in memory (the oldest go first); default 64 MiB. */
  maxQueueBytes?: number;
  /** Most bytes of messages in one write (at least one message); default 4 MiB. */
  batchBytes?: number;
  /** Bodies at least this large are stored content-addressed; default 1024. */
  inlineBytes?: number;
  clock?: () => number;
  /** The audit log that seals recordings (recording.seal) and notes prunes (recording.prune); without it recordings are unsealed. */
  audit?: { append(type: AuditType, actor: string, data: Record<string, unknown>): Promise<AuditRecord> };
  /** Seal every session with unsealed stored messages this often (ms); default 30 s; 0 disables the timer. */
  sealInterval?: number;
  /** Seal a session once this many of its stored messages are unsealed; default 1000. */
  sealEvery?: number;
}

export interface RecorderStats {
  recorded: number;
  written: number;
  truncated: number;
  dropped: number;
  failedWrites: number;
  pending: number;
  pendingBytes: number;
  /** recording.seal records appended, and those whose append failed. */
  seals: number;
  failedSeals: number;
}

interface Queued {
  row: RecordingRow;
  payload?: Payload;
  attempts: number;
  /** Its message's bytes (UTF-8 JSON, after truncation). */
  bytes: number;
}

/** One session's recording as this process wrote it. */
interface SessionChain {
  /** Messages stored (committed), the hash of the last, and the latest ts among them. */
  stored: number;
  head: string;
  lastTs: number;
  /** Messages covered by a seal that was appended. */
  sealed: number;
  /** Recorded but neither stored nor dropped yet. */
  pending: number;
  /** endSession() was called: the final seal follows once nothing is pending. */
  ending: boolean;
  final: boolean;
  /** Seals of one session are appended one after another. */
  sealing: Promise<void>;
}

const MAX_ATTEMPTS = 3;

export class Recorder {
  private queue: Queued[] = [];
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  private closed = false;
  private error: Error | undefined;
  private sealTimer: NodeJS.Timeout | undefined;
  private readonly chains = new Map<string, SessionChain>();
  private readonly sealsInFlight = new Set<Promise<void>>();
  private readonly counters = { recorded: 0, written: 0, truncated: 0, dropped: 0, failedWrites: 0, seals: 0, failedSeals: 0 };
  private readonly o: Required<Omit<RecorderOptions, 'audit'>>;
  private readonly audit: RecorderOptions['audit'];

  constructor(
    private readonly writer: RecordingWriter,
    options: RecorderOptions = {},
  ) {
    this.o = {
      maxMessageBytes: options.maxMessageBytes ?? 256 * 1024,
      retention: options.retention ?? 30 * 86_400_000,
      pruneInterval: options.pruneInterval ?? 10 * 60_000,
      flushInterval: options.flushInterval ?? 50,
      batchSize: options.batchSize ?? 500,
      maxQueue: options.maxQueue ?? 20_000,
      maxQueueBytes: options.maxQueueBytes ?? 64 * 1024 * 1024,
      batchBytes: options.batchBytes ?? 4 * 1024 * 1024,
      inlineBytes: options.inlineBytes ?? 1024,
      clock: options.clock ?? Date.now,
      sealInterval: options.sealInterval ?? 30_000,
      sealEvery: Math.max(1, Math.floor(options.sealEvery ?? 1000)),
    };
    this.audit = options.audit;
    if (this.audit && this.o.sealInterval > 0) {
      this.sealTimer = setInterval(() => {
        for (const [id, c] of this.chains) if (c.stored > c.sealed) this.seal(id, false);
      }, this.o.sealInterval);
      this.sealTimer.unref();
    }
    if (this.o.pruneInterval > 0) {
      this.pruneTimer = setInterval(() => void this.prune().catch((e: Error) => (this.error = e)), this.o.pruneInterval);
      this.pruneTimer.unref();
    }
  }

  /** Queues one message; never throws, never waits. Nothing is recorded for a session after endSession(). */
  record(input: RecordInput): void {
    if (this.closed) return;
    let chain = this.chains.get(input.sessionId);
    if (chain?.ending) return;
    let text: string;
    try {
      text = JSON.stringify(input.message) ?? 'null';
    } catch (e) {
      text = JSON.stringify({ unrecordable: (e as Error).message });
    }
    let bytes = Buffer.byteLength(text, 'utf8');
    let truncatedFrom: number | null = null;
    if (bytes > this.o.maxMessageBytes) {
      text = utf8Prefix(text, this.o.maxMessageBytes);
      truncatedFrom = bytes;
      bytes = Buffer.byteLength(text, 'utf8');
      this.counters.truncated++;
    }
    const msg = (input.message ?? {}) as { method?: unknown; id?: unknown };
    const inline = bytes < this.o.inlineBytes;
    const payloadHash = inline ? null : createHash('sha256').update(text, 'utf8').digest('hex');
    const row: RecordingRow = {
      sessionId: input.sessionId,
      ts: input.ts instanceof Date ? input.ts.getTime() : (input.ts ?? this.o.clock()),
      direction: input.direction,
      server: input.server,
      // Stored text must read back as written, or its hash would not verify: no lone surrogates.
      sub: input.identity ? wellFormed(input.identity.sub) : null,
      method: typeof msg.method === 'string' ? wellFormed(msg.method) : null,
      messageId: typeof msg.id === 'string' || typeof msg.id === 'number' ? JSON.stringify(msg.id) : null,
      decision: input.decision ? JSON.stringify({ effect: input.decision.effect, rule: input.decision.rule }) : null,
      body: inline ? text : null,
      payloadHash,
      truncatedFrom,
      seq: 0, // given when written
      hash: '',
    };
    if (!chain) this.chains.set(input.sessionId, (chain = { stored: 0, head: GENESIS_PREV, lastTs: 0, sealed: 0, pending: 0, ending: false, final: false, sealing: Promise.resolve() }));
    chain.pending++;
    this.enqueue({ row, payload: payloadHash ? { hash: payloadHash, body: text } : undefined, attempts: 0, bytes });
    this.counters.recorded++;
  }

  /**
   * The session has ended: once its queued messages are stored (or dropped), its final seal is
   * appended, and nothing more is recorded for it. Never waits.
   */
  endSession(sessionId: string): void {
    const chain = this.chains.get(sessionId);
    if (!chain || chain.ending) return;
    chain.ending = true;
    this.settle(sessionId, chain);
  }

  /** Writes everything queued so far. */
  async flush(): Promise<void> {
    // Bounded: under constant load the queue never empties; what was queued at the call is
    // written (or has used up its attempts) after this many rounds.
    // (A batch stops short of batchBytes only when the next message would pass it: two batches carry more.)
    let rounds = (Math.ceil(this.queue.length / this.o.batchSize) + 2 * Math.ceil(this.queuedBytes / this.o.batchBytes)) * MAX_ATTEMPTS + MAX_ATTEMPTS + 1;
    while ((this.writing || this.queue.length) && rounds-- > 0) {
      if (this.writing) await this.writing;
      else await this.write();
    }
  }

  /**
   * Deletes sessions whose every message is older than the retention period; returns what was
   * removed. The prune is noted in the audit log first (verify tells it from a deletion), and
   * nothing is deleted when that note cannot be written.
   */
  async prune(now: number = this.o.clock()): Promise<{ messages: number; payloads: number }> {
    const before = now - this.o.retention;
    await this.audit?.append('recording.prune', 'system', { before });
    return this.writer.pruneRecordings(before);
  }

  stats(): RecorderStats {
    return { ...this.counters, pending: this.queue.length, pendingBytes: this.queuedBytes };
  }

  lastError(): Error | undefined {
    return this.error;
  }

  /**
   * Writes what is queued, seals every session as final (nothing more is recorded by this
   * process) and waits for the seals; stops the timers. Does not close the store or the audit log.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    if (this.sealTimer) clearInterval(this.sealTimer);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const chain of this.chains.values()) chain.ending = true;
    await this.flush();
    // What flush could not write (the store kept failing) is lost: the final seals cover what was stored.
    this.counters.dropped += this.queue.length;
    this.queue = [];
    this.queuedBytes = 0;
    for (const [id, chain] of this.chains) {
      chain.pending = 0;
      this.settle(id, chain);
    }
    while (this.sealsInFlight.size) await Promise.all(this.sealsInFlight);
  }

  /** After a session's messages were stored or dropped: seal when it has ended or enough is unsealed. */
  private settle(id: string, chain: SessionChain): void {
    if (chain.ending && chain.pending === 0) this.seal(id, true);
    else if (chain.stored - chain.sealed >= this.o.sealEvery) this.seal(id, false);
  }

  /** Appends a recording.seal of what is stored of the session now (after the seals before it). */
  private seal(id: string, final: boolean): void {
    const chain = this.chains.get(id);
    if (!chain || chain.final) return;
    if (final) chain.final = true;
    if (!this.audit) {
      if (final) this.chains.delete(id);
      return;
    }
    const audit = this.audit;
    const p = chain.sealing.then(async () => {
      const { stored, head, lastTs } = chain;
      if (stored > chain.sealed || (final && stored > 0)) {
        const seal: RecordingSeal = { sessionId: id, messages: stored, digest: head, lastTs, ...(final && { final: true as const }) };
        try {
          await audit.append('recording.seal', 'system', seal);
          chain.sealed = Math.max(chain.sealed, stored);
          this.counters.seals++;
        } catch (e) {
          this.error = e as Error;
          this.counters.failedSeals++;
        }
      }
      if (final) this.chains.delete(id);
    });
    chain.sealing = p;
    this.sealsInFlight.add(p);
    void p.finally(() => this.sealsInFlight.delete(p));
  }

  /** A queued message that will never be written. */
  private dropped(q: Queued): void {
    this.counters.dropped++;
    const chain = this.chains.get(q.row.sessionId);
    if (chain) {
      chain.pending--;
      this.settle(q.row.sessionId, chain);
    }
  }

  private enqueue(q: Queued): void {
    this.queue.push(q);
    this.queuedBytes += q.bytes;
    this.trim();
    if (this.full()) this.scheduleNow();
    else this.scheduleLater();
  }

  /** Drops the oldest messages while the queue holds too many, or too many bytes (the newest always stays). */
  private trim(): void {
    while (this.queue.length > this.o.maxQueue || (this.queuedBytes > this.o.maxQueueBytes && this.queue.length > 1)) {
      const q = this.queue.shift()!;
      this.queuedBytes -= q.bytes;
      this.dropped(q);
    }
  }

  /** Enough is queued for a write now rather than at the timer. */
  private full(): boolean {
    return this.queue.length >= this.o.batchSize || this.queuedBytes >= this.o.batchBytes;
  }

  /** The next batch: up to four batchSize messages and batchBytes bytes, at least one message. */
  private take(): Queued[] {
    const most = Math.max(this.o.batchSize, 1) * 4;
    let n = 0;
    let bytes = 0;
    while (n < this.queue.length && n < most && (n === 0 || bytes + this.queue[n]!.bytes <= this.o.batchBytes)) bytes += this.queue[n++]!.bytes;
    this.queuedBytes -= bytes;
    return this.queue.splice(0, n);
  }

  private scheduleLater(): void {
    if (this.timer || this.writing) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.write();
    }, this.o.flushInterval);
    this.timer.unref?.();
  }

  private scheduleNow(): void {
    if (this.writing) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    setImmediate(() => void this.write());
  }

  private write(): Promise<void> {
    if (this.writing) return this.writing;
    if (!this.queue.length) return Promise.resolve();
    const batch = this.take();
    const payloads = new Map<string, Payload>();
    for (const q of batch) if (q.payload) payloads.set(q.payload.hash, q.payload);
    // Links continue from what is stored; they take effect only if this batch commits.
    const heads = new Map<string, { stored: number; head: string; lastTs: number; written: number }>();
    for (const { row } of batch) {
      const chain = this.chains.get(row.sessionId)!;
      const h = heads.get(row.sessionId) ?? { stored: chain.stored, head: chain.head, lastTs: chain.lastTs, written: 0 };
      row.seq = ++h.stored;
      row.hash = h.head = linkHash(h.head, row);
      h.lastTs = Math.max(h.lastTs, row.ts);
      h.written++;
      heads.set(row.sessionId, h);
    }
    const stored = () => {
      this.counters.written += batch.length;
      this.error = undefined;
      for (const [id, h] of heads) {
        const chain = this.chains.get(id)!;
        [chain.stored, chain.head, chain.lastTs] = [h.stored, h.head, h.lastTs];
        chain.pending -= h.written;
        this.settle(id, chain);
      }
    };
    this.writing = (async () => {
      try {
        await this.writer.appendRecordings(batch.map((q) => q.row), [...payloads.values()]);
        stored();
      } catch (e) {
        // A write can fail after its commit (the writer thread died, the connection dropped at
        // COMMIT). Written again, the batch would be stored twice: verify would see insertions.
        // This process alone writes these sessions, so their counts tell whether it landed.
        if (await this.landed(heads)) return stored();
        this.error = e as Error;
        this.counters.failedWrites++;
        // Back at the front, in order, unless they have failed too often or there is no room.
        const retry = batch.filter((q) => ++q.attempts < MAX_ATTEMPTS);
        for (const q of batch) if (q.attempts >= MAX_ATTEMPTS) this.dropped(q);
        this.queue.unshift(...retry);
        for (const q of retry) this.queuedBytes += q.bytes;
        this.trim();
      } finally {
        this.writing = undefined;
        if (this.queue.length && !this.closed) {
          if (this.error) this.scheduleLater();
          else if (this.full()) this.scheduleNow();
          else this.scheduleLater();
        }
      }
    })();
    return this.writing;
  }

  /** Whether every session of a failed batch has as many stored messages as it would with the batch. */
  private async landed(heads: Map<string, { stored: number }>): Promise<boolean> {
    try {
      const counts = await this.writer.recordingCounts([...heads.keys()]);
      return [...heads].every(([id, h]) => counts.get(id) === h.stored);
    } catch {
      return false; // the store is failing: the retry will tell
    }
  }
}

/** The text with lone surrogates replaced by U+FFFD, as the store would read them back. */
function wellFormed(text: string): string {
  if (!/[\ud800-\udfff]/.test(text)) return text;
  return text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

/** The longest prefix of text that fits in maxBytes of UTF-8, never splitting a character. */
export function utf8Prefix(text: string, maxBytes: number): string {
  const buf = Buffer.from(text, 'utf8');
  if (buf.length <= maxBytes) return text;
  let end = maxBytes;
  while (end > 0 && (buf[end] & 0xc0) === 0x80) end--; // back off continuation bytes
  return buf.subarray(0, end).toString('utf8');
}
