// The embedded store: one SQLite file in WAL mode through better-sqlite3.
//
// Durability: journal_mode=WAL with synchronous=FULL. In WAL mode, NORMAL skips the fsync of
// the WAL at each commit (it syncs only at WAL checkpoints), so a commit survives a crash of
// the process but not a power loss or kernel panic: an acknowledged audit record could vanish.
// FULL fsyncs the WAL on every commit, so "the append resolved" means "it is on disk". The
// audit log's group commit makes that one fsync per batch, not per record.
//
// better-sqlite3 is synchronous: a commit blocks the event loop for its fsync (≈0.3 ms here).
// Group commit keeps that to one per event-loop turn under load.
//
// Locks: SQLite's own busy handler would wait for another writer's lock *inside* the call, i.e.
// with the event loop blocked: one held lock would freeze every session and the health endpoints
// for the whole busy timeout, per write (audit and recordings alike). So the connection's
// busy_timeout is short (BUSY_SPIN_MS, enough for another process's ordinary commit), and a
// write that still finds the store locked is retried on timers, with the event loop free, until
// `busyTimeout` has passed; then it fails (the audit log then fails closed).
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { PortcullisError } from '../errors.js';
import type {
  AuditRange,
  AuditRecord,
  ChainHead,
  Checkpoint,
  Payload,
  ApprovalRecord,
  ApprovalStatus,
  PolicyEntry,
  PolicySummary,
  RecordedMessage,
  RecordingRow,
  SealedBatch,
  Store,
} from './store.js';
import { ADMIN_TABLES, approvalData, approvalFromRow, messageFromRow as toMessage, policyFromRow, SELECT_MESSAGES, type MessageRow } from './store.js';

/** PRAGMA application_id of a Portcullis store: "PCLS". Tells our files from any other SQLite file. */
export const SQLITE_APPLICATION_ID = 0x50434c53;

/**
 * Schema migrations, applied in order; PRAGMA user_version holds the last applied version.
 * Never edit a released step: add one.
 */
const MIGRATIONS: { version: number; sql: string }[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE portcullis_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
      CREATE TABLE audit_records (
        seq   INTEGER PRIMARY KEY,
        ts    TEXT NOT NULL,
        type  TEXT NOT NULL,
        actor TEXT NOT NULL,
        data  TEXT NOT NULL,
        prev  TEXT NOT NULL,
        hash  TEXT NOT NULL
      );
      -- Append-only against mistakes (not against an attacker: that is what the hash chain is for).
      CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
      CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
      CREATE TABLE audit_checkpoints (
        seq       INTEGER PRIMARY KEY,
        hash      TEXT NOT NULL,
        ts        TEXT NOT NULL,
        signature TEXT,
        key_id    TEXT
      );
      CREATE TABLE recordings (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id     TEXT NOT NULL,
        ts             INTEGER NOT NULL,
        direction      TEXT NOT NULL,
        server         TEXT NOT NULL,
        sub            TEXT,
        method         TEXT,
        message_id     TEXT,
        decision       TEXT,
        body           TEXT,
        payload_hash   TEXT,
        truncated_from INTEGER
      );
      CREATE INDEX recordings_by_session ON recordings (session_id, id);
      CREATE INDEX recordings_by_ts ON recordings (ts);
      CREATE INDEX recordings_by_payload ON recordings (payload_hash) WHERE payload_hash IS NOT NULL;
      CREATE TABLE recording_payloads (hash TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
    `,
  },
  {
    // Recordings chained into the audit log: each message's place in its session and the running digest.
    version: 2,
    sql: `
      ALTER TABLE recordings ADD COLUMN seq INTEGER;
      ALTER TABLE recordings ADD COLUMN hash TEXT;
      INSERT OR REPLACE INTO portcullis_meta (key, value)
        SELECT 'recordings_chained_from', coalesce(max(id), 0) + 1 FROM recordings;
    `,
  },
  {
    // The admin API: policy history, approvals; the audit log indexed by time and type.
    version: 3,
    sql: `
      CREATE TABLE policy_versions (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        version   TEXT NOT NULL,
        files     TEXT NOT NULL,
        message   TEXT NOT NULL,
        by        TEXT NOT NULL,
        loaded_at TEXT NOT NULL,
        action    TEXT NOT NULL
      );
      CREATE INDEX policy_versions_by_version ON policy_versions (version, id);
      ${ADMIN_TABLES}
    `,
  },
];
export const SQLITE_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

export interface SqliteStoreOptions {
  /** Refuse to create a new file (verify, export, replay read an existing store). */
  mustExist?: boolean;
  /** How long a write waits for another process's lock before failing (ms). */
  busyTimeout?: number;
}

const PAGE = 1000;

/** How long one write attempt may block the event loop waiting for another writer's lock (ms). */
const BUSY_SPIN_MS = 10;

/**
 * Page cache per connection, in KiB (negative: SQLite's unit for KiB). better-sqlite3 builds
 * SQLite with 16 MB (SQLITE_DEFAULT_CACHE_SIZE=-16000), and under load the writing connection
 * fills it: the store appends rows and reads a few, so SQLite's own default of 2 MB holds the
 * pages a transaction touches; the rest are in the OS's cache (docs/operations.md, "Memory").
 */
const CACHE_KIB = 2048;

function isBusy(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}

interface ApprovalRow {
  id: string;
  status: string;
  data: string;
  decided_at: string | null;
  decided_by: string | null;
  reason: string | null;
  grant_until: string | null;
}

interface PolicyRow {
  id: number;
  version: string;
  files?: string;
  message: string;
  by: string;
  loaded_at: string;
  action: PolicyEntry['action'];
}

interface AuditRow {
  seq: number;
  ts: string;
  type: string;
  actor: string;
  data: string;
  prev: string;
  hash: string;
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly stmts;

  private readonly busyTimeout: number;
  private readonly counters = { busyRetries: 0 };

  private constructor(
    readonly location: string,
    db: Database.Database,
    busyTimeout: number,
  ) {
    this.db = db;
    this.busyTimeout = busyTimeout;
    this.stmts = {
      head: db.prepare<[], { seq: number; hash: string }>('SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1'),
      insertRecord: db.prepare('INSERT INTO audit_records (seq, ts, type, actor, data, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      insertCheckpoint: db.prepare('INSERT OR IGNORE INTO audit_checkpoints (seq, hash, ts, signature, key_id) VALUES (?, ?, ?, ?, ?)'),
      checkpoints: db.prepare<[], { seq: number; hash: string; ts: string; signature: string | null; key_id: string | null }>(
        'SELECT seq, hash, ts, signature, key_id FROM audit_checkpoints ORDER BY seq',
      ),
      insertPayload: db.prepare('INSERT OR IGNORE INTO recording_payloads (hash, body) VALUES (?, ?)'),
      insertRecording: db.prepare(
        `INSERT INTO recordings (session_id, ts, direction, server, sub, method, message_id, decision, body, payload_hash, truncated_from, seq, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      readRecording: db.prepare<[string], MessageRow>(`${SELECT_MESSAGES} WHERE r.session_id = ? ORDER BY r.id`),
      readRecordings: db.prepare<{ session: string; id: number }, MessageRow>(
        `${SELECT_MESSAGES} WHERE (r.session_id, r.id) > (@session, @id) ORDER BY r.session_id, r.id LIMIT ${PAGE}`,
      ),
      chainedFrom: db.prepare<[], { value: string }>("SELECT value FROM portcullis_meta WHERE key = 'recordings_chained_from'"),
      pruneRecordings: db.prepare(
        'DELETE FROM recordings WHERE ts < ? AND session_id NOT IN (SELECT session_id FROM recordings WHERE ts >= ?)',
      ),
      insertPolicy: db.prepare<[string, string, string, string, string, string], PolicyRow>(
        'INSERT INTO policy_versions (version, files, message, by, loaded_at, action) VALUES (?, ?, ?, ?, ?, ?) RETURNING *',
      ),
      policyInForce: db.prepare<[], PolicyRow>('SELECT * FROM policy_versions ORDER BY id DESC LIMIT 1'),
      policyHistory: db.prepare<[number], PolicyRow>('SELECT id, version, message, by, loaded_at, action FROM policy_versions ORDER BY id DESC LIMIT ?'),
      policyByVersion: db.prepare<[string], PolicyRow>('SELECT * FROM policy_versions WHERE version = ? ORDER BY id DESC LIMIT 1'),
      prunePayloads: db.prepare(
        'DELETE FROM recording_payloads WHERE NOT EXISTS (SELECT 1 FROM recordings r WHERE r.payload_hash = recording_payloads.hash)',
      ),
    };
  }

  /** Opens (creating when allowed) a Portcullis SQLite store; refuses any other file with PCL_STORE_INVALID. */
  static open(file: string, options: SqliteStoreOptions = {}): SqliteStore {
    const memory = file === ':memory:';
    if (!memory) {
      if (options.mustExist && !existsSync(file)) {
        throw new PortcullisError('PCL_STORE_INVALID', `no Portcullis store at ${file} (the file does not exist)`);
      }
      if (existsSync(file) && statSync(file).isFile() && statSync(file).size > 0) refuseForeignFile(file);
      if (!options.mustExist) mkdirSync(dirname(file), { recursive: true });
    }
    const busyTimeout = Math.max(0, Math.floor(options.busyTimeout ?? 5000));
    let db: Database.Database;
    try {
      db = new Database(file, { fileMustExist: Boolean(options.mustExist) });
    } catch (e) {
      throw new PortcullisError('PCL_STORE_INVALID', `cannot open the store ${file}: ${(e as Error).message}`);
    }
    try {
      checkIdentity(db, file);
      db.pragma(`busy_timeout = ${busyTimeout}`); // opening and migrating may wait: nothing is served yet
      if (!memory) {
        const mode = db.pragma('journal_mode = WAL', { simple: true });
        if (mode !== 'wal') throw new PortcullisError('PCL_STORE_INVALID', `${file}: cannot switch the store to WAL mode (got ${String(mode)})`);
      }
      db.pragma('synchronous = FULL');
      db.pragma(`cache_size = -${CACHE_KIB}`);
      migrate(db, file);
      db.pragma(`busy_timeout = ${Math.min(busyTimeout, BUSY_SPIN_MS)}`);
    } catch (e) {
      db.close();
      if (e instanceof PortcullisError) throw e;
      throw new PortcullisError('PCL_STORE_INVALID', `${file} is not a usable Portcullis store: ${(e as Error).message}`);
    }
    return new SqliteStore(file, db, busyTimeout);
  }

  /**
   * Runs one synchronous write transaction; while another connection holds the write lock, tries
   * again on timers (the event loop stays free) until busyTimeout has passed, then rethrows.
   * `attempt` must be repeatable: a failed attempt has rolled back.
   */
  private async write<T>(attempt: () => T): Promise<T> {
    const deadline = performance.now() + this.busyTimeout;
    for (let delay = 2; ; delay = Math.min(delay * 2, 100)) {
      try {
        return attempt();
      } catch (e) {
        const left = deadline - performance.now();
        if (!isBusy(e) || left <= 0) throw e;
        this.counters.busyRetries++;
        await new Promise((r) => setTimeout(r, Math.min(delay, left)));
      }
    }
  }

  /** Writes that found the store locked by another connection and were tried again. */
  stats(): { busyRetries: number } {
    return { ...this.counters };
  }

  async appendAudit(seal: (head: ChainHead | undefined) => SealedBatch): Promise<SealedBatch> {
    const { insertRecord, insertCheckpoint, head } = this.stmts;
    // IMMEDIATE takes the write lock before reading the head: no other writer can slip in between.
    const run = this.db.transaction(() => {
      const batch = seal(head.get());
      for (const r of batch.records) insertRecord.run(r.seq, r.ts, r.type, r.actor, r.dataJson, r.prev, r.hash);
      for (const c of batch.checkpoints) insertCheckpoint.run(c.seq, c.hash, c.ts, c.signature, c.keyId);
      return batch;
    });
    return this.write(() => run.immediate());
  }

  async auditHead(): Promise<ChainHead | undefined> {
    return this.stmts.head.get();
  }

  async *readAudit(range: AuditRange = {}): AsyncIterable<AuditRecord> {
    const where: string[] = ['seq > @after'];
    if (range.toSeq !== undefined) where.push('seq <= @toSeq');
    if (range.since !== undefined) where.push('ts >= @since');
    if (range.until !== undefined) where.push('ts <= @until');
    // Types are bound as a JSON array: one prepared statement whatever their number.
    if (range.types !== undefined) where.push('type IN (SELECT value FROM json_each(@types))');
    const page = this.db.prepare<Record<string, unknown>, AuditRow>(
      `SELECT seq, ts, type, actor, data, prev, hash FROM audit_records WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ${PAGE}`,
    );
    let after = (range.fromSeq ?? 1) - 1;
    for (;;) {
      const rows = page.all({ after, toSeq: range.toSeq, since: range.since, until: range.until, types: range.types && JSON.stringify(range.types) });
      for (const row of rows) yield rowToRecord(row);
      if (rows.length < PAGE) return;
      after = rows[rows.length - 1].seq;
    }
  }

  async putCheckpoint(c: Checkpoint): Promise<void> {
    await this.write(() => this.stmts.insertCheckpoint.run(c.seq, c.hash, c.ts, c.signature, c.keyId));
  }

  async listCheckpoints(): Promise<Checkpoint[]> {
    return this.stmts.checkpoints.all().map((r) => ({ seq: r.seq, hash: r.hash, ts: r.ts, signature: r.signature, keyId: r.key_id }));
  }

  async appendRecordings(rows: RecordingRow[], payloads: Payload[]): Promise<void> {
    const { insertPayload, insertRecording } = this.stmts;
    const run = this.db.transaction(() => {
      for (const p of payloads) insertPayload.run(p.hash, p.body);
      for (const r of rows) {
        insertRecording.run(r.sessionId, r.ts, r.direction, r.server, r.sub, r.method, r.messageId, r.decision, r.body, r.payloadHash, r.truncatedFrom, r.seq, r.hash);
      }
    });
    await this.write(() => run.immediate());
  }

  async appendPolicy(entry: Omit<PolicyEntry, 'id' | 'loadedAt'>): Promise<PolicyEntry> {
    const row = await this.write(() => this.stmts.insertPolicy.get(entry.version, JSON.stringify(entry.files), entry.message, entry.by, new Date().toISOString(), entry.action)!);
    for (const listener of this.policyListeners) listener();
    return policyFromRow(row) as PolicyEntry;
  }

  async policyInForce(): Promise<PolicyEntry | undefined> {
    const row = this.stmts.policyInForce.get();
    return row && (policyFromRow(row) as PolicyEntry);
  }

  async policyHistory(limit: number): Promise<PolicySummary[]> {
    return this.stmts.policyHistory.all(limit).map(policyFromRow);
  }

  async policyByVersion(version: string): Promise<PolicyEntry | undefined> {
    const row = this.stmts.policyByVersion.get(version);
    return row && (policyFromRow(row) as PolicyEntry);
  }

  private readonly policyListeners = new Set<() => void>();

  async watchPolicy(listener: () => void): Promise<() => Promise<void>> {
    const own = () => listener();
    this.policyListeners.add(own);
    return async () => void this.policyListeners.delete(own);
  }

  private readonly approvalListeners = new Set<(id: string) => void>();

  async createApproval(a: ApprovalRecord): Promise<void> {
    await this.write(() =>
      this.db
        .prepare('INSERT INTO approvals (id, status, created_at, expires_at, requester_key, server, method, target, args_digest, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)')
        .run(a.id, a.status, a.createdAt, a.expiresAt, a.requester.key, a.server, a.method, a.tool ?? a.resource ?? a.prompt ?? '', a.argsDigest, approvalData(a)),
    );
  }

  async getApproval(id: string): Promise<ApprovalRecord | undefined> {
    const row = this.db.prepare<[string], ApprovalRow>('SELECT * FROM approvals WHERE id = ?').get(id);
    return row && approvalFromRow(row);
  }

  async listApprovals(filter: { status?: ApprovalStatus; limit: number }): Promise<ApprovalRecord[]> {
    const now = new Date().toISOString();
    // A pending row past its expiry is an expired approval: filter on what callers are told.
    const where =
      filter.status === undefined ? '1' : filter.status === 'pending' ? "status = 'pending' AND expires_at > @now" : filter.status === 'expired' ? "(status = 'expired' OR (status = 'pending' AND expires_at <= @now))" : 'status = @status';
    return this.db
      .prepare<Record<string, unknown>, ApprovalRow>(`SELECT * FROM approvals WHERE ${where} ORDER BY created_at DESC LIMIT @limit`)
      .all({ now, status: filter.status, limit: filter.limit })
      .map(approvalFromRow);
  }

  async settleApproval(id: string, o: { status: Exclude<ApprovalStatus, 'pending'>; decidedBy: string; reason?: string; grantUntil?: string }): Promise<ApprovalRecord | undefined> {
    const now = new Date().toISOString();
    // Approve and deny only before the expiry; expiring and withdrawing end a pending one whenever.
    const row = await this.write(() =>
      this.db
        .prepare<unknown[], ApprovalRow>(
          "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, reason = ?, grant_until = ? WHERE id = ? AND status = 'pending' AND (? OR expires_at > ?) RETURNING *",
        )
        .get(o.status, now, o.decidedBy, o.reason ?? null, o.grantUntil ?? null, id, o.status === 'expired' || o.status === 'cancelled' ? 1 : 0, now),
    );
    if (!row) return undefined;
    for (const listener of this.approvalListeners) listener(id);
    return approvalFromRow(row);
  }

  async findGrant(r: { requesterKey: string; server: string; method: string; target: string; argsDigest: string }): Promise<ApprovalRecord | undefined> {
    const row = this.db
      .prepare<unknown[], ApprovalRow>(
        "SELECT * FROM approvals WHERE requester_key = ? AND server = ? AND method = ? AND target = ? AND args_digest = ? AND status = 'approved' AND grant_until > ? ORDER BY decided_at DESC LIMIT 1",
      )
      .get(r.requesterKey, r.server, r.method, r.target, r.argsDigest, new Date().toISOString());
    return row && approvalFromRow(row);
  }

  readonly approvalsNotifyAcrossProcesses = false;

  async settledApprovals(ids: string[]): Promise<ApprovalRecord[]> {
    return this.db
      .prepare<[string], ApprovalRow>("SELECT * FROM approvals WHERE id IN (SELECT value FROM json_each(?)) AND status <> 'pending'")
      .all(JSON.stringify(ids))
      .map(approvalFromRow);
  }

  async watchApprovals(listener: (id: string) => void): Promise<() => Promise<void>> {
    const own = (id: string) => listener(id);
    this.approvalListeners.add(own);
    return async () => void this.approvalListeners.delete(own);
  }

  async recordingCounts(sessionIds: string[]): Promise<Map<string, number>> {
    const rows = this.db
      .prepare<[string], { session_id: string; n: number }>('SELECT session_id, count(*) AS n FROM recordings WHERE session_id IN (SELECT value FROM json_each(?)) GROUP BY session_id')
      .all(JSON.stringify(sessionIds));
    return new Map(rows.map((r) => [r.session_id, r.n]));
  }

  async readRecording(sessionId: string): Promise<RecordedMessage[]> {
    return this.stmts.readRecording.all(sessionId).map(toMessage);
  }

  async *readRecordings(): AsyncIterable<RecordedMessage> {
    let after = { session: '', id: 0 };
    for (;;) {
      const rows = this.stmts.readRecordings.all(after);
      for (const row of rows) yield toMessage(row);
      if (rows.length < PAGE) return;
      const last = rows[rows.length - 1];
      after = { session: last.session_id, id: Number(last.id) };
    }
  }

  async recordingsChainedFrom(): Promise<number> {
    return Number(this.stmts.chainedFrom.get()?.value ?? 1);
  }

  async pruneRecordings(before: number): Promise<{ messages: number; payloads: number }> {
    const { pruneRecordings, prunePayloads } = this.stmts;
    const run = this.db.transaction(() => ({
      messages: pruneRecordings.run(before, before).changes,
      payloads: prunePayloads.run().changes,
    }));
    return this.write(() => run.immediate());
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

function rowToRecord(row: AuditRow): AuditRecord {
  let data: Record<string, unknown>;
  try {
    data = JSON.parse(row.data) as Record<string, unknown>;
  } catch {
    // Keep the text so verify reports the record as changed instead of stopping on a parse error.
    data = { '$unparseable': row.data };
  }
  return { seq: row.seq, ts: row.ts, type: row.type, actor: row.actor, data, prev: row.prev, hash: row.hash };
}

/** A text file or any non-SQLite file: refuse before SQLite touches it (it would not, but say why clearly). */
function refuseForeignFile(file: string): void {
  const header = readFileSync(file).subarray(0, 16).toString('latin1');
  if (header !== 'SQLite format 3\0') {
    throw new PortcullisError('PCL_STORE_INVALID', `${file} is not a Portcullis store (not a SQLite database); point store.url at a new or existing store file`);
  }
}

function checkIdentity(db: Database.Database, file: string): void {
  const appId = db.pragma('application_id', { simple: true }) as number;
  const version = db.pragma('user_version', { simple: true }) as number;
  if (appId === SQLITE_APPLICATION_ID) {
    if (version > SQLITE_SCHEMA_VERSION) {
      throw new PortcullisError('PCL_STORE_INVALID', `${file} was written by a newer Portcullis (schema ${version}, this one knows up to ${SQLITE_SCHEMA_VERSION}); upgrade Portcullis`);
    }
    return;
  }
  const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')").all() as { name: string }[]).map((t) => t.name);
  if (appId === 0 && version === 0 && tables.length === 0) return; // a new, empty database: ours to initialise
  const what = tables.length ? `it has tables ${tables.slice(0, 5).join(', ')}${tables.length > 5 ? ', …' : ''}` : `application_id ${appId}`;
  throw new PortcullisError('PCL_STORE_INVALID', `${file} is a SQLite database but not a Portcullis store (${what}); point store.url at a new or existing store file`);
}

function migrate(db: Database.Database, file: string): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current === SQLITE_SCHEMA_VERSION) return;
  db.transaction(() => {
    // Re-read under the write lock: another process may have migrated meanwhile.
    const from = db.pragma('user_version', { simple: true }) as number;
    for (const step of MIGRATIONS) {
      if (step.version <= from) continue;
      db.exec(step.sql);
      db.pragma(`user_version = ${step.version}`);
    }
    db.pragma(`application_id = ${SQLITE_APPLICATION_ID}`);
    db.prepare("INSERT OR IGNORE INTO portcullis_meta (key, value) VALUES ('created_at', ?)").run(new Date().toISOString());
  }).immediate();
  void file;
}
