// Session recordings: every JSON-RPC message of a session, both directions, after masking.
//
// Off the critical path: record() only serialises the message (a snapshot: the caller may
// reuse the object) and queues it; a timer writes queued messages in one transaction per
// flush. Recordings are best effort where the audit log is not: when the store fails, batches
// are retried a few times and the queue is bounded (oldest dropped, counted), so a slow or
// broken store never holds up or exhausts the gateway. Decisions are in the audit log, which
// does fail closed.
//
// Storage: a message larger than maxMessageBytes is cut to that many bytes and marked with its
// original size. Bodies of at least `inlineBytes` are stored once per distinct content
// (content-addressed by SHA-256), so a large result returned a thousand times costs one row.
// Retention: messages older than `retention` are pruned periodically, with the payloads no
// message references any more. Audit records are never pruned.
import { createHash } from 'node:crypto';
import type { Identity } from '../auth/identity.js';
import type { Direction, Payload, RecordingRow, Store } from '../store/store.js';

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
  /** Bodies at least this large are stored content-addressed; default 1024. */
  inlineBytes?: number;
  clock?: () => number;
}

export interface RecorderStats {
  recorded: number;
  written: number;
  truncated: number;
  dropped: number;
  failedWrites: number;
  pending: number;
}

interface Queued {
  row: RecordingRow;
  payload?: Payload;
  attempts: number;
}

const MAX_ATTEMPTS = 3;

export class Recorder {
  private queue: Queued[] = [];
  private timer: NodeJS.Timeout | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  private closed = false;
  private error: Error | undefined;
  private readonly counters = { recorded: 0, written: 0, truncated: 0, dropped: 0, failedWrites: 0 };
  private readonly o: Required<RecorderOptions>;

  constructor(
    private readonly store: Store,
    options: RecorderOptions = {},
  ) {
    this.o = {
      maxMessageBytes: options.maxMessageBytes ?? 256 * 1024,
      retention: options.retention ?? 30 * 86_400_000,
      pruneInterval: options.pruneInterval ?? 10 * 60_000,
      flushInterval: options.flushInterval ?? 50,
      batchSize: options.batchSize ?? 500,
      maxQueue: options.maxQueue ?? 20_000,
      inlineBytes: options.inlineBytes ?? 1024,
      clock: options.clock ?? Date.now,
    };
    if (this.o.pruneInterval > 0) {
      this.pruneTimer = setInterval(() => void this.prune().catch((e: Error) => (this.error = e)), this.o.pruneInterval);
      this.pruneTimer.unref();
    }
  }

  /** Queues one message; never throws, never waits. */
  record(input: RecordInput): void {
    if (this.closed) return;
    let text: string;
    try {
      text = JSON.stringify(input.message) ?? 'null';
    } catch (e) {
      text = JSON.stringify({ unrecordable: (e as Error).message });
    }
    const bytes = Buffer.byteLength(text, 'utf8');
    let truncatedFrom: number | null = null;
    if (bytes > this.o.maxMessageBytes) {
      text = utf8Prefix(text, this.o.maxMessageBytes);
      truncatedFrom = bytes;
      this.counters.truncated++;
    }
    const msg = (input.message ?? {}) as { method?: unknown; id?: unknown };
    const inline = Buffer.byteLength(text, 'utf8') < this.o.inlineBytes;
    const payloadHash = inline ? null : createHash('sha256').update(text, 'utf8').digest('hex');
    const row: RecordingRow = {
      sessionId: input.sessionId,
      ts: input.ts instanceof Date ? input.ts.getTime() : (input.ts ?? this.o.clock()),
      direction: input.direction,
      server: input.server,
      sub: input.identity?.sub ?? null,
      method: typeof msg.method === 'string' ? msg.method : null,
      messageId: typeof msg.id === 'string' || typeof msg.id === 'number' ? JSON.stringify(msg.id) : null,
      decision: input.decision ? JSON.stringify({ effect: input.decision.effect, rule: input.decision.rule }) : null,
      body: inline ? text : null,
      payloadHash,
      truncatedFrom,
    };
    this.enqueue({ row, payload: payloadHash ? { hash: payloadHash, body: text } : undefined, attempts: 0 });
    this.counters.recorded++;
  }

  /** Writes everything queued so far. */
  async flush(): Promise<void> {
    // Bounded: under constant load the queue never empties; what was queued at the call is
    // written (or has used up its attempts) after this many rounds.
    let rounds = Math.ceil(this.queue.length / this.o.batchSize) * MAX_ATTEMPTS + MAX_ATTEMPTS + 1;
    while ((this.writing || this.queue.length) && rounds-- > 0) {
      if (this.writing) await this.writing;
      else await this.write();
    }
  }

  /** Deletes messages older than the retention period; returns what was removed. */
  async prune(now: number = this.o.clock()): Promise<{ messages: number; payloads: number }> {
    return this.store.pruneRecordings(now - this.o.retention);
  }

  stats(): RecorderStats {
    return { ...this.counters, pending: this.queue.length };
  }

  lastError(): Error | undefined {
    return this.error;
  }

  /** Writes what is queued and stops the timers. Does not close the store. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  private enqueue(q: Queued): void {
    this.queue.push(q);
    if (this.queue.length > this.o.maxQueue) {
      this.queue.shift();
      this.counters.dropped++;
    }
    if (this.queue.length >= this.o.batchSize) this.scheduleNow();
    else this.scheduleLater();
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
    const batch = this.queue.splice(0, Math.max(this.o.batchSize, 1) * 4);
    const payloads = new Map<string, Payload>();
    for (const q of batch) if (q.payload) payloads.set(q.payload.hash, q.payload);
    this.writing = (async () => {
      try {
        await this.store.appendRecordings(batch.map((q) => q.row), [...payloads.values()]);
        this.counters.written += batch.length;
        this.error = undefined;
      } catch (e) {
        this.error = e as Error;
        this.counters.failedWrites++;
        // Back at the front, in order, unless they have failed too often or there is no room.
        const retry = batch.filter((q) => ++q.attempts < MAX_ATTEMPTS);
        this.counters.dropped += batch.length - retry.length;
        this.queue.unshift(...retry);
        while (this.queue.length > this.o.maxQueue) {
          this.queue.shift();
          this.counters.dropped++;
        }
      } finally {
        this.writing = undefined;
        if (this.queue.length && !this.closed) {
          if (this.error) this.scheduleLater();
          else if (this.queue.length >= this.o.batchSize) this.scheduleNow();
          else this.scheduleLater();
        }
      }
    })();
    return this.writing;
  }
}

/** The longest prefix of text that fits in maxBytes of UTF-8, never splitting a character. */
export function utf8Prefix(text: string, maxBytes: number): string {
  const buf = Buffer.from(text, 'utf8');
  if (buf.length <= maxBytes) return text;
  let end = maxBytes;
  while (end > 0 && (buf[end] & 0xc0) === 0x80) end--; // back off continuation bytes
  return buf.subarray(0, end).toString('utf8');
}
