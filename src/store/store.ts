// The one storage interface of Portcullis (SPEC section 8). SQLite (embedded, one file) and
// PostgreSQL (shared by replicas) implement it; callers never see which. Every method is async
// even where SQLite could answer synchronously, so a networked implementation fits unchanged.
//
// Later issues add policy bundles and approvals as further sections (PolicyStore,
// ApprovalStore) of the same interface; the schema migrations are versioned for that.

/** One record of the tamper-evident audit chain (see docs/audit.md). */
export interface AuditRecord {
  /** 1, 2, 3, … without gaps: one chain per store. */
  seq: number;
  /** ISO 8601 UTC with milliseconds, e.g. "2026-11-24T10:00:00.000Z". */
  ts: string;
  type: string;
  /** Who caused it: an identity's sub, "admin:<token id>", or "system". */
  actor: string;
  /** The caller's JSON object, stored exactly as it was hashed. */
  data: Record<string, unknown>;
  /** The previous record's hash; GENESIS_PREV (64 zeros) for seq 1. */
  prev: string;
  /** SHA-256 (hex) of the RFC 8785 canonical JSON of {seq, ts, type, actor, data, prev}. */
  hash: string;
}

/** A signed statement "the record with this seq has this hash". */
export interface Checkpoint {
  seq: number;
  hash: string;
  ts: string;
  /** Ed25519 signature (base64) of canonical JSON {hash, keyId, seq, ts}; null when no key is configured. */
  signature: string | null;
  /** First 16 hex digits of SHA-256 of the public key (SPKI DER); null when unsigned. */
  keyId: string | null;
}

export interface ChainHead {
  seq: number;
  hash: string;
}

/** What one append transaction stores: the records and any checkpoints they complete. */
export interface SealedBatch {
  records: AuditRecord[];
  checkpoints: Checkpoint[];
}

export interface AuditRange {
  fromSeq?: number;
  toSeq?: number;
  /** Inclusive bounds on ts (ISO strings, compared as such). */
  since?: string;
  until?: string;
}

export interface AuditStore {
  /**
   * Runs `seal` with the chain's current head (undefined when empty) inside one write
   * transaction that excludes every other writer (other processes, other replicas), stores the
   * records and checkpoints it returns, and commits durably. Either all of it is stored or
   * nothing is, and the promise rejects. Reading the head inside the transaction is what keeps
   * one gapless chain across replicas and across failed writes.
   */
  appendAudit(seal: (head: ChainHead | undefined) => SealedBatch): Promise<SealedBatch>;
  auditHead(): Promise<ChainHead | undefined>;
  /** Records in seq order, read in pages (a long log never sits in memory at once). */
  readAudit(range?: AuditRange): AsyncIterable<AuditRecord>;
  /** Stores a checkpoint; one per seq (a second one for the same seq is ignored). */
  putCheckpoint(checkpoint: Checkpoint): Promise<void>;
  listCheckpoints(): Promise<Checkpoint[]>;
}

export type Direction = 'fromClient' | 'toClient';

/** One recorded JSON-RPC message as stored. */
export interface RecordingRow {
  sessionId: string;
  /** Milliseconds since the epoch. */
  ts: number;
  direction: Direction;
  server: string;
  sub: string | null;
  method: string | null;
  /** The JSON-RPC id, as JSON text (ids may be strings or numbers). */
  messageId: string | null;
  /** {effect, rule} of the policy decision on this message, as JSON text, when known. */
  decision: string | null;
  /** The message's JSON text (possibly truncated) when small, else null and payloadHash set. */
  body: string | null;
  /** SHA-256 hex of a content-addressed payload holding the body. */
  payloadHash: string | null;
  /** The original size in bytes when the body was truncated, else null. */
  truncatedFrom: number | null;
  /** Its place in the session's recording: 1, 2, 3, … without gaps (given when it is written). */
  seq: number;
  /** The session's running digest up to this message (see src/audit/recording-chain.ts). */
  hash: string;
}

export interface Payload {
  hash: string;
  body: string;
}

export interface RecordedMessage extends Omit<RecordingRow, 'body' | 'seq' | 'hash'> {
  /** Insertion order within the store; replay sorts by it. */
  id: number;
  /** The message's JSON text, inline or from its payload. */
  body: string;
  /** Null on a message recorded before recordings were chained (schema 1). */
  seq: number | null;
  hash: string | null;
}

export interface RecordingStore {
  /** Stores rows and the payloads they reference, in one transaction; payloads already present are kept once. */
  appendRecordings(rows: RecordingRow[], payloads: Payload[]): Promise<void>;
  /** A session's messages in the order they were recorded. */
  readRecording(sessionId: string): Promise<RecordedMessage[]>;
  /** Every recorded message, by session id, then in recorded order; read in pages. */
  readRecordings(): AsyncIterable<RecordedMessage>;
  /**
   * The first message id written with a seq and hash: messages below it were recorded before
   * recordings were chained (an upgraded store) and cannot be verified; 1 on a new store.
   */
  recordingsChainedFrom(): Promise<number>;
  /**
   * Deletes the recordings of sessions whose every message is older than `before` (ms since the
   * epoch), and payloads nothing references any more. Whole sessions only: a recording that
   * lost its first messages could no longer be verified against its seals.
   */
  pruneRecordings(before: number): Promise<{ messages: number; payloads: number }>;
}

export interface Store extends AuditStore, RecordingStore {
  readonly kind: 'sqlite' | 'postgres';
  /** Where it is, for messages (a path or a URL without its password). */
  readonly location: string;
  close(): Promise<void>;
}

/** The recorded messages with their bodies (inline, or from the payload they reference), in either store's SQL. */
export const SELECT_MESSAGES = `
  SELECT r.id, r.session_id, r.ts, r.direction, r.server, r.sub, r.method, r.message_id, r.decision,
         coalesce(r.body, p.body) AS body, r.payload_hash, r.truncated_from, r.seq, r.hash
    FROM recordings r LEFT JOIN recording_payloads p ON p.hash = r.payload_hash`;

/** A row of SELECT_MESSAGES; PostgreSQL gives BIGINT columns as strings. */
export interface MessageRow {
  id: number | string;
  session_id: string;
  ts: number | string;
  direction: RecordedMessage['direction'];
  server: string;
  sub: string | null;
  method: string | null;
  message_id: string | null;
  decision: string | null;
  body: string | null;
  payload_hash: string | null;
  truncated_from: number | string | null;
  seq: number | string | null;
  hash: string | null;
}

export function messageFromRow(r: MessageRow): RecordedMessage {
  return {
    id: Number(r.id),
    sessionId: r.session_id,
    ts: Number(r.ts),
    direction: r.direction,
    server: r.server,
    sub: r.sub,
    method: r.method,
    messageId: r.message_id,
    decision: r.decision,
    body: r.body ?? '',
    payloadHash: r.payload_hash,
    truncatedFrom: r.truncated_from === null ? null : Number(r.truncated_from),
    seq: r.seq === null ? null : Number(r.seq),
    hash: r.hash,
  };
}

/** prev of the first record. */
export const GENESIS_PREV = '0'.repeat(64);
