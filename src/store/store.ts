// The one storage interface of Portcullis (SPEC section 8). SQLite (embedded, one file) and
// PostgreSQL (shared by replicas) implement it; callers never see which. Every method is async
// even where SQLite could answer synchronously, so a networked implementation fits unchanged.
//
// Each concern is a section of the one interface (AuditStore, RecordingStore, PolicyStore); the
// schema migrations are versioned, so a section added later is a new migration step.

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
  /** dataJson is `data` as canonical JSON: what was hashed, stored as it is. */
  records: Array<AuditRecord & { readonly dataJson: string }>;
  checkpoints: Checkpoint[];
}

export interface AuditRange {
  fromSeq?: number;
  toSeq?: number;
  /** Inclusive bounds on ts (ISO strings, compared as such). */
  since?: string;
  until?: string;
  /** Only records of these types. */
  types?: string[];
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

/** One entry of the policy history: a bundle pushed, or an earlier one put back in force. */
export interface PolicyEntry {
  /** 1, 2, 3, … in the order entries were stored; the entry with the highest id is in force. */
  id: number;
  /** The bundle version (SHA-256 of its canonical content). */
  version: string;
  /** The policy files, by name, exactly as pushed. */
  files: Record<string, string>;
  message: string;
  /** Who put it in force: the pusher's sub, or the admin token's id. */
  by: string;
  /** ISO 8601 UTC. */
  loadedAt: string;
  action: 'push' | 'rollback';
}

export type PolicySummary = Omit<PolicyEntry, 'files'>;

export interface PolicyStore {
  /** Stores an entry, which is then the one in force (on every replica, see watchPolicy). */
  appendPolicy(entry: Omit<PolicyEntry, 'id' | 'loadedAt'>): Promise<PolicyEntry>;
  policyInForce(): Promise<PolicyEntry | undefined>;
  /** Newest first. */
  policyHistory(limit: number): Promise<PolicySummary[]>;
  /** The newest entry of that version, with its files. */
  policyByVersion(version: string): Promise<PolicyEntry | undefined>;
  /**
   * Calls `listener` whenever an entry is stored by any process sharing the store (PostgreSQL:
   * LISTEN/NOTIFY; SQLite serves one process, so only its own appends). Resolves once listening;
   * the function it returns stops.
   */
  watchPolicy(listener: () => void): Promise<() => Promise<void>>;
}

export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'expired' | 'cancelled';

/** A held request waiting for (or past) a human's decision (SPEC 5). */
export interface ApprovalRecord {
  id: string;
  status: ApprovalStatus;
  /** Who asked: sub, groups, and the credential (identityKey) that sent it. */
  requester: { sub: string; groups: string[]; key: string };
  server: string;
  method: string;
  tool?: string;
  resource?: string;
  prompt?: string;
  /** The arguments exactly as sent, and their digest (bound into the approval). */
  args?: Record<string, unknown>;
  argsDigest: string;
  rule: string;
  /** Who may decide: the rule's approvers. */
  approvers: { sub?: string[]; groups?: string[] };
  bundleVersion: string;
  sessionId?: string;
  requestId?: string | number;
  /** ISO 8601 UTC. */
  createdAt: string;
  expiresAt: string;
  decidedAt?: string;
  /** The approver's sub (or admin:<token id>), or what ended it (client cancelled, gateway shut down). */
  decidedBy?: string;
  reason?: string;
  /** The rule's `grant.ttl` (ms): once approved, an identical request of the same credential passes that long. */
  grantMs?: number;
  /** For an approved request whose rule has `grant`: until when an identical request passes. */
  grantUntil?: string;
}

export interface ApprovalStore {
  createApproval(a: ApprovalRecord): Promise<void>;
  getApproval(id: string): Promise<ApprovalRecord | undefined>;
  /** Newest first; a pending approval past its expiry is reported as expired. */
  listApprovals(filter: { status?: ApprovalStatus; limit: number }): Promise<ApprovalRecord[]>;
  /**
   * Moves a pending, unexpired approval to `status` atomically (across replicas). Returns the
   * updated record, or undefined when it was not pending any more (decided, expired, cancelled)
   * or does not exist.
   */
  settleApproval(id: string, outcome: { status: Exclude<ApprovalStatus, 'pending'>; decidedBy: string; reason?: string; grantUntil?: string }): Promise<ApprovalRecord | undefined>;
  /** An approved approval that grants this exact request (same credential, server, method, target, digest) now. */
  findGrant(request: { requesterKey: string; server: string; method: string; target: string; argsDigest: string }): Promise<ApprovalRecord | undefined>;
  /** Of these ids, the approvals no longer pending (one query, however many are held). */
  settledApprovals(ids: string[]): Promise<ApprovalRecord[]>;
  /** Calls `listener(id)` when any process settles an approval (PostgreSQL: LISTEN/NOTIFY). */
  watchApprovals(listener: (id: string) => void): Promise<() => Promise<void>>;
  /** True when watchApprovals hears other processes too (PostgreSQL); SQLite hears only its own. */
  readonly approvalsNotifyAcrossProcesses: boolean;
}

/** Recorded messages per session id (sessions without any are absent). */
export interface SessionCounts {
  recordingCounts(sessionIds: string[]): Promise<Map<string, number>>;
}

export interface Store extends AuditStore, RecordingStore, PolicyStore, ApprovalStore, SessionCounts {
  readonly kind: 'sqlite' | 'postgres';
  /** Where it is, for messages (a path or a URL without its password). */
  readonly location: string;
  close(): Promise<void>;
}

/**
 * Part of migration 3 in both stores, in SQL both dialects read alike: the audit log indexed by
 * time and type, and the approvals. A released migration: never edit, add a step.
 */
export const ADMIN_TABLES = `
      CREATE INDEX audit_records_by_ts ON audit_records (ts);
      CREATE INDEX audit_records_by_type ON audit_records (type, seq);
      CREATE TABLE approvals (
        id            TEXT PRIMARY KEY,
        status        TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        expires_at    TEXT NOT NULL,
        requester_key TEXT NOT NULL,
        server        TEXT NOT NULL,
        method        TEXT NOT NULL,
        target        TEXT NOT NULL,
        args_digest   TEXT NOT NULL,
        data          TEXT NOT NULL,
        decided_at    TEXT,
        decided_by    TEXT,
        reason        TEXT,
        grant_until   TEXT
      );
      CREATE INDEX approvals_by_status ON approvals (status, created_at);
      CREATE INDEX approvals_by_request ON approvals (requester_key, server, target, args_digest);`;

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

/** A policy_versions row (of either store) as an entry; without files when the query did not read them. */
export function policyFromRow(r: { id: number | string; version: string; files?: string; message: string; by: string; loaded_at: string; action: string }): PolicySummary | PolicyEntry {
  const summary: PolicySummary = { id: Number(r.id), version: r.version, message: r.message, by: r.by, loadedAt: r.loaded_at, action: r.action as PolicyEntry['action'] };
  return r.files === undefined ? summary : { ...summary, files: JSON.parse(r.files) as Record<string, string> };
}

/** An approvals row (of either store) as a record; a pending one past its expiry reads as expired. */
export function approvalFromRow(r: { id: string; status: string; data: string; decided_at: string | null; decided_by: string | null; reason: string | null; grant_until: string | null }): ApprovalRecord {
  const a = { ...(JSON.parse(r.data) as Omit<ApprovalRecord, 'id' | 'status'>), id: r.id, status: r.status as ApprovalStatus } as ApprovalRecord;
  if (r.decided_at !== null) a.decidedAt = r.decided_at;
  if (r.decided_by !== null) a.decidedBy = r.decided_by;
  if (r.reason !== null) a.reason = r.reason;
  if (r.grant_until !== null) a.grantUntil = r.grant_until;
  if (a.status === 'pending' && a.expiresAt <= new Date().toISOString()) a.status = 'expired';
  return a;
}

/** What the approvals table keeps in `data`: everything fixed at creation. */
export function approvalData(a: ApprovalRecord): string {
  const { id: _id, status: _status, decidedAt: _at, decidedBy: _by, reason: _reason, grantUntil: _grant, ...fixed } = a;
  return JSON.stringify(fixed);
}

/** prev of the first record. */
export const GENESIS_PREV = '0'.repeat(64);
