// Reading the audit log back: records by type, server, tool, effect, subject and time, a page at
// a time, and the sessions it holds. Shared by the admin API and the CLI, so a staging script and
// an operator see the same answer. Type, time and position filter in the store (indexed); the
// fields inside `data` filter here, while the records stream by.
import type { AuditRecord, Store } from '../store/store.js';

export interface AuditQuery {
  type?: string[];
  server?: string;
  tool?: string;
  effect?: string;
  /** The actor, or the identity a decision was made for. */
  sub?: string;
  /** Inclusive ISO 8601 bounds. */
  since?: string;
  until?: string;
  /** How many records at most (default 100, at most 1000). */
  limit?: number;
  /** Where to continue: the nextCursor of the previous page. */
  cursor?: string;
}

export interface AuditPage {
  records: AuditRecord[];
  /** Absent on the last page. */
  nextCursor?: string;
}

export const MAX_PAGE = 1000;

const str = (v: unknown) => (typeof v === 'string' ? v : undefined);

function matches(r: AuditRecord, q: AuditQuery): boolean {
  const d = r.data;
  if (q.server !== undefined && str(d.server) !== q.server) return false;
  if (q.tool !== undefined && str(d.tool) !== q.tool) return false;
  if (q.effect !== undefined && str(d.effect) !== q.effect) return false;
  if (q.sub !== undefined && r.actor !== q.sub && str((d.identity as { sub?: unknown } | undefined)?.sub) !== q.sub) return false;
  return true;
}

/** The cursor is the seq to continue after, opaque to callers. */
export function parseCursor(cursor: string | undefined): number | undefined {
  if (cursor === undefined) return undefined;
  return /^[1-9][0-9]{0,15}$/.test(cursor) ? Number(cursor) : NaN;
}

export async function queryAudit(store: Store, q: AuditQuery): Promise<AuditPage> {
  const limit = Math.min(Math.max(1, q.limit ?? 100), MAX_PAGE);
  const after = parseCursor(q.cursor) ?? 0;
  const records: AuditRecord[] = [];
  for await (const r of store.readAudit({ fromSeq: after + 1, since: q.since, until: q.until, types: q.type })) {
    if (!matches(r, q)) continue;
    if (records.length === limit) return { records, nextCursor: String(records[records.length - 1].seq) };
    records.push(r);
  }
  return { records };
}

export interface SessionSummary {
  id: string;
  sub: string;
  server: string;
  startedAt: string;
  /** Absent while the session is open (or when the gateway stopped without recording its end). */
  endedAt?: string;
  endReason?: string;
  /** Recorded messages (0 when recordings are off). */
  messages: number;
}

export interface SessionQuery {
  since?: string;
  sub?: string;
  server?: string;
  limit?: number;
}

/** Sessions that started since `since`, newest last, from their session.start and session.end records. */
export async function listSessions(store: Store, q: SessionQuery): Promise<SessionSummary[]> {
  const limit = Math.min(Math.max(1, q.limit ?? 100), MAX_PAGE);
  const byId = new Map<string, SessionSummary>();
  for await (const r of store.readAudit({ since: q.since, types: ['session.start', 'session.end'] })) {
    const id = str(r.data.sessionId);
    if (id === undefined) continue;
    if (r.type === 'session.start') {
      const server = str(r.data.server) ?? '';
      if ((q.sub !== undefined && r.actor !== q.sub) || (q.server !== undefined && server !== q.server)) continue;
      byId.set(id, { id, sub: r.actor, server, startedAt: r.ts, messages: 0 });
    } else {
      const s = byId.get(id);
      if (s) (s.endedAt = r.ts), (s.endReason = str(r.data.reason));
    }
  }
  const sessions = [...byId.values()].slice(-limit);
  const counts = await store.recordingCounts(sessions.map((s) => s.id));
  for (const s of sessions) s.messages = counts.get(s.id) ?? 0;
  return sessions;
}
