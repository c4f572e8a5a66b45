// The PostgreSQL store, for several gateway replicas sharing one database.
//
// One chain across replicas: appendAudit takes a transaction-scoped advisory lock before it
// reads the head, so replicas append one after another and each batch continues from what is
// committed. synchronous_commit stays at the server's default (on): COMMIT returns once the
// WAL is flushed, so a resolved append is durable.
//
// Tables live in the connection's search_path (use `?options=-c%20search_path%3Dportcullis`
// to keep them in their own schema). `data` is TEXT, not jsonb: jsonb would reorder members
// and normalise numbers, and the stored text should be what was hashed.
import { userInfo } from 'node:os';
import pg from 'pg';
import { PortcullisError } from '../errors.js';
import type { OpenStoreOptions } from './open.js';
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

/** Advisory lock keys: "PCLS" + what they guard. */
const LOCK_AUDIT = 0x50434c53_01;
const LOCK_MIGRATE = 0x50434c53_02;
const LOCK_RECORDINGS = 0x50434c53_03;
const PAGE = 1000;
/** NOTIFY channel: a policy entry was stored. */
const POLICY_CHANNEL = 'portcullis_policy';
/** NOTIFY channel: an approval was settled (payload: its id). */
const APPROVAL_CHANNEL = 'portcullis_approval';

const MIGRATIONS: { version: number; sql: string }[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE audit_records (
        seq BIGINT PRIMARY KEY, ts TEXT NOT NULL, type TEXT NOT NULL, actor TEXT NOT NULL,
        data TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL
      );
      CREATE FUNCTION portcullis_append_only() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'audit records are append-only'; END $$;
      CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
        FOR EACH ROW EXECUTE FUNCTION portcullis_append_only();
      CREATE TABLE audit_checkpoints (seq BIGINT PRIMARY KEY, hash TEXT NOT NULL, ts TEXT NOT NULL, signature TEXT, key_id TEXT);
      CREATE TABLE recordings (
        id BIGSERIAL PRIMARY KEY, session_id TEXT NOT NULL, ts BIGINT NOT NULL, direction TEXT NOT NULL,
        server TEXT NOT NULL, sub TEXT, method TEXT, message_id TEXT, decision TEXT, body TEXT,
        payload_hash TEXT, truncated_from BIGINT
      );
      CREATE INDEX recordings_by_session ON recordings (session_id, id);
      CREATE INDEX recordings_by_ts ON recordings (ts);
      CREATE INDEX recordings_by_payload ON recordings (payload_hash) WHERE payload_hash IS NOT NULL;
      CREATE TABLE recording_payloads (hash TEXT PRIMARY KEY, body TEXT NOT NULL);
    `,
  },
  {
    // Recordings chained into the audit log: each message's place in its session and the running digest.
    version: 2,
    sql: `
      ALTER TABLE recordings ADD COLUMN seq BIGINT, ADD COLUMN hash TEXT;
      INSERT INTO portcullis_meta (key, value)
        SELECT 'recordings_chained_from', (coalesce(max(id), 0) + 1)::text FROM recordings
        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    `,
  },
  {
    // The admin API: policy history, approvals; the audit log indexed by time and type.
    version: 3,
    sql: `
      CREATE TABLE policy_versions (
        id BIGSERIAL PRIMARY KEY, version TEXT NOT NULL, files TEXT NOT NULL, message TEXT NOT NULL,
        by TEXT NOT NULL, loaded_at TEXT NOT NULL, action TEXT NOT NULL
      );
      CREATE INDEX policy_versions_by_version ON policy_versions (version, id);
      ${ADMIN_TABLES}
    `,
  },
];
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

interface AuditRow {
  seq: string;
  ts: string;
  type: string;
  actor: string;
  data: string;
  prev: string;
  hash: string;
}

export class PostgresStore implements Store {
  readonly kind = 'postgres' as const;

  private constructor(
    readonly location: string,
    private readonly pool: pg.Pool,
    private readonly clientConfig: pg.ClientConfig,
  ) {}

  static async open(url: string, options: OpenStoreOptions = {}): Promise<PostgresStore> {
    const location = url.replace(/\/\/([^:@/]*)(:[^@/]*)?@/, '//$1@');
    const parsed = new URL(url);
    const clientConfig: pg.ClientConfig = {
      connectionString: url,
      // libpq defaults the user to the OS user; node-postgres only reads $USER.
      user: parsed.username ? decodeURIComponent(parsed.username) : (process.env.PGUSER ?? userInfo().username),
    };
    const pool = new pg.Pool({ ...clientConfig, max: options.connections ?? 4 });
    pool.on('error', () => {}); // an idle client's connection dropped: the next query reconnects
    const store = new PostgresStore(location, pool, clientConfig);
    try {
      await store.migrate(Boolean(options.mustExist));
    } catch (e) {
      await pool.end();
      if (e instanceof PortcullisError) throw e;
      throw new PortcullisError('PCL_STORE_INVALID', `cannot use the store ${location}: ${(e as Error).message}`);
    }
    return store;
  }

  private async migrate(mustExist: boolean): Promise<void> {
    return this.transaction(async (client) => {
      await client.query('SELECT pg_advisory_xact_lock($1)', [LOCK_MIGRATE]);
      const tables = (await client.query<{ t: string }>("SELECT table_name AS t FROM information_schema.tables WHERE table_schema = current_schema()")).rows.map((r) => r.t);
      let version = 0;
      if (tables.includes('portcullis_meta')) {
        const row = (await client.query<{ value: string }>("SELECT value FROM portcullis_meta WHERE key = 'schema_version'")).rows[0];
        version = Number(row?.value ?? 0);
      } else {
        const ours = ['audit_records', 'audit_checkpoints', 'recordings', 'recording_payloads'].filter((t) => tables.includes(t));
        if (ours.length) {
          throw new PortcullisError('PCL_STORE_INVALID', `${this.location} has tables ${ours.join(', ')} but is not a Portcullis store (no portcullis_meta); use another schema or database`);
        }
        if (mustExist) throw new PortcullisError('PCL_STORE_INVALID', `no Portcullis store at ${this.location}`);
        await client.query('CREATE TABLE portcullis_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)');
        await client.query("INSERT INTO portcullis_meta (key, value) VALUES ('created_at', $1)", [new Date().toISOString()]);
      }
      if (version > POSTGRES_SCHEMA_VERSION) {
        throw new PortcullisError('PCL_STORE_INVALID', `${this.location} was written by a newer Portcullis (schema ${version}); upgrade Portcullis`);
      }
      for (const step of MIGRATIONS) if (step.version > version) await client.query(step.sql);
      await client.query(
        "INSERT INTO portcullis_meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        [String(POSTGRES_SCHEMA_VERSION)],
      );
    });
  }

  async appendAudit(seal: (head: ChainHead | undefined) => SealedBatch): Promise<SealedBatch> {
    return this.transaction(async (client) => {
      // Serialises appenders across replicas; released at COMMIT or ROLLBACK.
      await client.query('SELECT pg_advisory_xact_lock($1)', [LOCK_AUDIT]);
      const row = (await client.query<{ seq: string; hash: string }>('SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1')).rows[0];
      const batch = seal(row ? { seq: Number(row.seq), hash: row.hash } : undefined);
      const r = batch.records;
      if (r.length) {
        await client.query(
          `INSERT INTO audit_records (seq, ts, type, actor, data, prev, hash)
           SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])`,
          [r.map((x) => x.seq), r.map((x) => x.ts), r.map((x) => x.type), r.map((x) => x.actor), r.map((x) => x.dataJson), r.map((x) => x.prev), r.map((x) => x.hash)],
        );
      }
      for (const c of batch.checkpoints) await this.insertCheckpoint(client, c);
      return batch;
    });
  }

  async auditHead(): Promise<ChainHead | undefined> {
    const row = (await this.pool.query<{ seq: string; hash: string }>('SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1')).rows[0];
    return row ? { seq: Number(row.seq), hash: row.hash } : undefined;
  }

  async *readAudit(range: AuditRange = {}): AsyncIterable<AuditRecord> {
    let after = (range.fromSeq ?? 1) - 1;
    for (;;) {
      const rows = (
        await this.pool.query<AuditRow>(
          `SELECT seq, ts, type, actor, data, prev, hash FROM audit_records
            WHERE seq > $1 AND ($2::bigint IS NULL OR seq <= $2) AND ($3::text IS NULL OR ts >= $3) AND ($4::text IS NULL OR ts <= $4)
              AND ($5::text[] IS NULL OR type = ANY($5))
            ORDER BY seq LIMIT ${PAGE}`,
          [after, range.toSeq ?? null, range.since ?? null, range.until ?? null, range.types ?? null],
        )
      ).rows;
      for (const row of rows) {
        let data: Record<string, unknown>;
        try {
          data = JSON.parse(row.data) as Record<string, unknown>;
        } catch {
          data = { $unparseable: row.data };
        }
        yield { seq: Number(row.seq), ts: row.ts, type: row.type, actor: row.actor, data, prev: row.prev, hash: row.hash };
      }
      if (rows.length < PAGE) return;
      after = Number(rows[rows.length - 1].seq);
    }
  }

  private async insertCheckpoint(client: pg.ClientBase | pg.Pool, c: Checkpoint): Promise<void> {
    await client.query('INSERT INTO audit_checkpoints (seq, hash, ts, signature, key_id) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING', [
      c.seq,
      c.hash,
      c.ts,
      c.signature,
      c.keyId,
    ]);
  }

  async putCheckpoint(c: Checkpoint): Promise<void> {
    await this.insertCheckpoint(this.pool, c);
  }

  async listCheckpoints(): Promise<Checkpoint[]> {
    const rows = (await this.pool.query<{ seq: string; hash: string; ts: string; signature: string | null; key_id: string | null }>('SELECT * FROM audit_checkpoints ORDER BY seq')).rows;
    return rows.map((r) => ({ seq: Number(r.seq), hash: r.hash, ts: r.ts, signature: r.signature, keyId: r.key_id }));
  }

  async appendRecordings(rows: RecordingRow[], payloads: Payload[]): Promise<void> {
    return this.transaction(async (client) => {
      // Shared with other appenders, exclusive with prune: a prune cannot delete a payload
      // that an uncommitted recording (on another replica) is about to reference.
      await client.query('SELECT pg_advisory_xact_lock_shared($1)', [LOCK_RECORDINGS]);
      if (payloads.length) {
        await client.query('INSERT INTO recording_payloads (hash, body) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (hash) DO NOTHING', [
          payloads.map((p) => p.hash),
          payloads.map((p) => p.body),
        ]);
      }
      if (rows.length) {
        const col = <K extends keyof RecordingRow>(k: K) => rows.map((r) => r[k]);
        await client.query(
          `INSERT INTO recordings (session_id, ts, direction, server, sub, method, message_id, decision, body, payload_hash, truncated_from, seq, hash)
           SELECT a, b, c, d, e, f, g, h, i, j, k, l, m
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], $13::text[])
                  WITH ORDINALITY AS u(a, b, c, d, e, f, g, h, i, j, k, l, m, n)
            ORDER BY n`,
          [col('sessionId'), col('ts'), col('direction'), col('server'), col('sub'), col('method'), col('messageId'), col('decision'), col('body'), col('payloadHash'), col('truncatedFrom'), col('seq'), col('hash')],
        );
      }
    });
  }

  async appendPolicy(entry: Omit<PolicyEntry, 'id' | 'loadedAt'>): Promise<PolicyEntry> {
    return this.transaction(async (client) => {
      const row = (
        await client.query(
          'INSERT INTO policy_versions (version, files, message, by, loaded_at, action) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *',
          [entry.version, JSON.stringify(entry.files), entry.message, entry.by, new Date().toISOString(), entry.action],
        )
      ).rows[0];
      // Delivered at COMMIT to every replica listening, this one included.
      await client.query(`NOTIFY ${POLICY_CHANNEL}`);
      return policyFromRow(row) as PolicyEntry;
    });
  }

  async policyInForce(): Promise<PolicyEntry | undefined> {
    const row = (await this.pool.query('SELECT * FROM policy_versions ORDER BY id DESC LIMIT 1')).rows[0];
    return row && (policyFromRow(row) as PolicyEntry);
  }

  async policyHistory(limit: number): Promise<PolicySummary[]> {
    return (await this.pool.query('SELECT id, version, message, by, loaded_at, action FROM policy_versions ORDER BY id DESC LIMIT $1', [limit])).rows.map(policyFromRow);
  }

  async policyByVersion(version: string): Promise<PolicyEntry | undefined> {
    const row = (await this.pool.query('SELECT * FROM policy_versions WHERE version = $1 ORDER BY id DESC LIMIT 1', [version])).rows[0];
    return row && (policyFromRow(row) as PolicyEntry);
  }

  watchPolicy(listener: () => void): Promise<() => Promise<void>> {
    return this.listen(POLICY_CHANNEL, () => listener());
  }

  async createApproval(a: ApprovalRecord): Promise<void> {
    await this.pool.query(
      'INSERT INTO approvals (id, status, created_at, expires_at, requester_key, server, method, target, args_digest, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)',
      [a.id, a.status, a.createdAt, a.expiresAt, a.requester.key, a.server, a.method, a.tool ?? a.resource ?? a.prompt ?? '', a.argsDigest, approvalData(a)],
    );
  }

  async getApproval(id: string): Promise<ApprovalRecord | undefined> {
    const row = (await this.pool.query('SELECT * FROM approvals WHERE id = $1', [id])).rows[0];
    return row && approvalFromRow(row);
  }

  async listApprovals(filter: { status?: ApprovalStatus; limit: number }): Promise<ApprovalRecord[]> {
    const now = new Date().toISOString();
    // A pending row past its expiry is an expired approval: filter on what callers are told.
    const [where, params] =
      filter.status === undefined
        ? ['TRUE', []]
        : filter.status === 'pending'
          ? ["status = 'pending' AND expires_at > $2", [now]]
          : filter.status === 'expired'
            ? ["(status = 'expired' OR (status = 'pending' AND expires_at <= $2))", [now]]
            : ['status = $2', [filter.status]];
    const rows = (await this.pool.query(`SELECT * FROM approvals WHERE ${where} ORDER BY created_at DESC LIMIT $1`, [filter.limit, ...params])).rows;
    return rows.map(approvalFromRow);
  }

  async settleApproval(id: string, o: { status: Exclude<ApprovalStatus, 'pending'>; decidedBy: string; reason?: string; grantUntil?: string }): Promise<ApprovalRecord | undefined> {
    return this.transaction(async (client) => {
      const now = new Date().toISOString();
      const row = (
        await client.query(
          "UPDATE approvals SET status = $1, decided_at = $2, decided_by = $3, reason = $4, grant_until = $5 WHERE id = $6 AND status = 'pending' AND ($7 OR expires_at > $2) RETURNING *",
          [o.status, now, o.decidedBy, o.reason ?? null, o.grantUntil ?? null, id, o.status === 'expired' || o.status === 'cancelled'],
        )
      ).rows[0];
      // Delivered at COMMIT to every replica, this one included: the one holding the call releases it.
      if (row) await client.query('SELECT pg_notify($1, $2)', [APPROVAL_CHANNEL, id]);
      return row && approvalFromRow(row);
    });
  }

  async findGrant(r: { requesterKey: string; server: string; method: string; target: string; argsDigest: string }): Promise<ApprovalRecord | undefined> {
    const row = (
      await this.pool.query(
        "SELECT * FROM approvals WHERE requester_key = $1 AND server = $2 AND method = $3 AND target = $4 AND args_digest = $5 AND status = 'approved' AND grant_until > $6 ORDER BY decided_at DESC LIMIT 1",
        [r.requesterKey, r.server, r.method, r.target, r.argsDigest, new Date().toISOString()],
      )
    ).rows[0];
    return row && approvalFromRow(row);
  }

  readonly approvalsNotifyAcrossProcesses = true;

  async settledApprovals(ids: string[]): Promise<ApprovalRecord[]> {
    return (await this.pool.query("SELECT * FROM approvals WHERE id = ANY($1) AND status <> 'pending'", [ids])).rows.map(approvalFromRow);
  }

  watchApprovals(listener: (id: string) => void): Promise<() => Promise<void>> {
    return this.listen(APPROVAL_CHANNEL, (payload) => payload !== undefined && listener(payload));
  }

  /**
   * LISTEN on a connection of its own (outside the pool). A dropped connection is reopened with
   * backoff, and the listener is called (without a payload) once it is back: a NOTIFY sent
   * meanwhile was missed, and re-reading what matters is cheap.
   */
  private async listen(channel: string, listener: (payload?: string) => void): Promise<() => Promise<void>> {
    let stopped = false;
    let client: pg.Client | undefined;
    let retry: NodeJS.Timeout | undefined;
    const connect = async (delay: number, again: boolean): Promise<void> => {
      const c = new pg.Client(this.clientConfig);
      c.on('error', () => {});
      c.on('end', () => {
        if (stopped || client !== c) return;
        client = undefined;
        retry = setTimeout(() => void connect(Math.min(delay * 2, 5000), true).catch(() => undefined), delay);
      });
      c.on('notification', (n) => n.channel === channel && listener(n.payload || undefined));
      try {
        await c.connect();
        await c.query(`LISTEN ${channel}`);
      } catch (e) {
        await c.end().catch(() => {});
        if (!again) throw e;
        if (!stopped) retry = setTimeout(() => void connect(Math.min(delay * 2, 5000), true).catch(() => undefined), delay);
        return;
      }
      if (stopped) return void (await c.end().catch(() => {}));
      client = c;
      if (again) listener();
    };
    await connect(100, false);
    return async () => {
      stopped = true;
      clearTimeout(retry);
      const c = client;
      client = undefined;
      await c?.end().catch(() => {});
    };
  }

  async recordingCounts(sessionIds: string[]): Promise<Map<string, number>> {
    const rows = (await this.pool.query<{ session_id: string; n: string }>('SELECT session_id, count(*) AS n FROM recordings WHERE session_id = ANY($1) GROUP BY session_id', [sessionIds])).rows;
    return new Map(rows.map((r) => [r.session_id, Number(r.n)]));
  }

  async readRecording(sessionId: string): Promise<RecordedMessage[]> {
    return (await this.pool.query<MessageRow>(`${SELECT_MESSAGES} WHERE r.session_id = $1 ORDER BY r.id`, [sessionId])).rows.map(toMessage);
  }

  async *readRecordings(): AsyncIterable<RecordedMessage> {
    let after: [string, number] = ['', 0];
    for (;;) {
      const rows = (await this.pool.query<MessageRow>(`${SELECT_MESSAGES} WHERE (r.session_id, r.id) > ($1, $2) ORDER BY r.session_id, r.id LIMIT ${PAGE}`, after)).rows;
      for (const row of rows) yield toMessage(row);
      if (rows.length < PAGE) return;
      const last = rows[rows.length - 1];
      after = [last.session_id, Number(last.id)];
    }
  }

  async recordingsChainedFrom(): Promise<number> {
    const row = (await this.pool.query<{ value: string }>("SELECT value FROM portcullis_meta WHERE key = 'recordings_chained_from'")).rows[0];
    return Number(row?.value ?? 1);
  }

  async pruneRecordings(before: number): Promise<{ messages: number; payloads: number }> {
    return this.transaction(async (client) => {
      await client.query('SELECT pg_advisory_xact_lock($1)', [LOCK_RECORDINGS]);
      const messages = (await client.query('DELETE FROM recordings WHERE ts < $1 AND session_id NOT IN (SELECT session_id FROM recordings WHERE ts >= $1)', [before])).rowCount ?? 0;
      const payloads = (await client.query('DELETE FROM recording_payloads p WHERE NOT EXISTS (SELECT 1 FROM recordings r WHERE r.payload_hash = p.hash)')).rowCount ?? 0;
      return { messages, payloads };
    });
  }

  /** Runs fn in one transaction on one pooled connection: COMMIT on success, ROLLBACK on any error. */
  private async transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => {});
      throw e;
    } finally {
      client.release();
    }
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => {});
  }
}
