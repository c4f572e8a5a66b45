// Random session recordings and random single tampering operations on them, in SQL, for the
// property tests of SQLite and PostgreSQL stores (src/audit/recording-chain.test.ts,
// src/store/postgres.test.ts). Each operation says which sessions verify must then name, and
// which message of the session it tampered with.
import fc from 'fast-check';
import { AuditLog } from '../src/audit/chain.js';
import { Recorder } from '../src/audit/recorder.js';
import { linkHash } from '../src/audit/recording-chain.js';
import type { Store } from '../src/store/store.js';

export interface SessionSpec {
  id: string;
  messages: { direction: 'fromClient' | 'toClient'; method?: string; id?: number; text: string; decision?: boolean }[];
}

/** 1–4 sessions of 1–10 messages; some bodies large enough to go to a shared payload. */
export const sessionsArb: fc.Arbitrary<SessionSpec[]> = fc
  .uniqueArray(fc.stringMatching(/^[a-f0-9]{4}$/), { minLength: 1, maxLength: 4 })
  .chain((ids) =>
    fc.tuple(
      ...ids.map((id) =>
        fc.record({
          id: fc.constant(id),
          messages: fc.array(
            fc.record(
              {
                direction: fc.constantFrom('fromClient' as const, 'toClient' as const),
                method: fc.constantFrom('tools/call', 'ping', 'notifications/progress'),
                id: fc.nat(50),
                // Repeated large texts share one payload row.
                text: fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom('L'.repeat(300), 'M'.repeat(400))),
                decision: fc.boolean(),
              },
              { requiredKeys: ['direction', 'text'] },
            ),
            { minLength: 1, maxLength: 10 },
          ),
        }),
      ),
    ),
  );

/** Records the sessions interleaved (in `order`), in several batches, sealing every `sealEvery` messages; ends them all. */
export async function recordSessions(store: Store, sessions: SessionSpec[], order: number[], sealEvery: number): Promise<void> {
  const log = await AuditLog.open(store, { checkpointEvery: 7 });
  const rec = new Recorder(store, { audit: log, pruneInterval: 0, sealInterval: 0, sealEvery, inlineBytes: 64, clock: () => 1_800_000_000_000 });
  const next = sessions.map(() => 0);
  let n = 0;
  for (const pick of order) {
    const i = pick % sessions.length;
    const s = sessions[i];
    if (next[i] >= s.messages.length) continue;
    const m = s.messages[next[i]++];
    const message = { jsonrpc: '2.0', ...(m.method && { method: m.method }), ...(m.id !== undefined && { id: m.id }), params: { text: m.text } };
    rec.record({ sessionId: s.id, server: 'srv', identity: { sub: 'alice' }, direction: m.direction, message, ...(m.decision && { decision: { effect: 'allow', rule: 'p/r' } }) });
    if (++n % 4 === 0) await rec.flush();
  }
  // What the order left out, in order.
  sessions.forEach((s, i) => {
    for (const m of s.messages.slice(next[i])) rec.record({ sessionId: s.id, server: 'srv', direction: m.direction, message: { jsonrpc: '2.0', params: { text: m.text } } });
  });
  for (const s of sessions) rec.endSession(s.id);
  await rec.close();
  await log.close();
}

/** SQL on the store under test: `$1`-style parameters, rows as plain objects. */
export interface Sql {
  query(sql: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
}

export type TamperKind = 'change' | 'change-payload' | 'delete' | 'insert-duplicate' | 'insert-forged' | 'swap' | 'truncate' | 'move';
export const TAMPER_KINDS: TamperKind[] = ['change', 'change-payload', 'delete', 'insert-duplicate', 'insert-forged', 'swap', 'truncate', 'move'];

export interface Tampered {
  what: string;
  /** verify must report one of these sessions at this message. */
  expect: { session: string; message: number };
  /** Sessions verify may report (the others must verify). */
  sessions: Set<string>;
}

interface Row {
  id: number;
  session_id: string;
  seq: number;
  hash: string;
  payload_hash: string | null;
}

const COLUMNS = ['ts', 'direction', 'server', 'sub', 'method', 'message_id', 'decision', 'body', 'truncated_from', 'seq', 'hash'] as const;

/**
 * Applies one tampering operation chosen by `kind` and `pick` (any number: it selects rows);
 * undefined when the recording has nothing it applies to (e.g. swap in a one-message session).
 */
export async function tamper(sql: Sql, kind: TamperKind, pick: number): Promise<Tampered | undefined> {
  const rows = (await sql.query('SELECT id, session_id, seq, hash, payload_hash FROM recordings ORDER BY session_id, id')).map((r) => ({
    ...(r as unknown as Row),
    id: Number(r.id),
    seq: Number(r.seq),
  }));
  const sessions = [...new Set(rows.map((r) => r.session_id))];
  const of = (s: string) => rows.filter((r) => r.session_id === s);
  const row = rows[pick % rows.length];
  const mine = of(row.session_id);
  const only = (s: string) => new Set([s]);
  switch (kind) {
    case 'change': {
      const column = COLUMNS[pick % COLUMNS.length];
      if (column === 'body' && row.payload_hash !== null) return undefined; // its body is in the payload
      const value: Record<(typeof COLUMNS)[number], string> = {
        ts: 'ts + 1',
        direction: "CASE direction WHEN 'fromClient' THEN 'toClient' ELSE 'fromClient' END",
        server: "server || 'x'",
        sub: "coalesce(sub, '') || 'x'",
        method: "coalesce(method, '') || 'x'",
        message_id: "coalesce(message_id, '') || '9'",
        decision: `CASE WHEN decision IS NULL THEN '{"effect":"allow","rule":"p/r"}' ELSE NULL END`,
        body: "replace(body, '\"jsonrpc\"', '\"jsonrpc\" ')",
        truncated_from: 'coalesce(truncated_from, 0) + 1',
        seq: `seq + ${1 + (pick % 3)}`,
        hash: "'0' || substr(hash, 2)",
      };
      if (column === 'hash' && row.hash.startsWith('0')) return undefined;
      await sql.query(`UPDATE recordings SET ${column} = ${value[column]} WHERE id = $1`, [row.id]);
      return { what: `changed ${column} of message ${row.seq} of ${row.session_id}`, expect: { session: row.session_id, message: row.seq }, sessions: only(row.session_id) };
    }
    case 'change-payload': {
      const withPayload = rows.filter((r) => r.payload_hash !== null);
      if (!withPayload.length) return undefined;
      const target = withPayload[pick % withPayload.length];
      await sql.query("UPDATE recording_payloads SET body = body || ' ' WHERE hash = $1", [target.payload_hash]);
      const affected = withPayload.filter((r) => r.payload_hash === target.payload_hash);
      const first = Math.min(...affected.filter((r) => r.session_id === target.session_id).map((r) => r.seq));
      return { what: `changed the payload of message ${first} of ${target.session_id}`, expect: { session: target.session_id, message: first }, sessions: new Set(affected.map((r) => r.session_id)) };
    }
    case 'delete':
      await sql.query('DELETE FROM recordings WHERE id = $1', [row.id]);
      return { what: `deleted message ${row.seq} of ${row.session_id}`, expect: { session: row.session_id, message: row.seq }, sessions: only(row.session_id) };
    case 'insert-duplicate':
      await sql.query(
        `INSERT INTO recordings (session_id, ts, direction, server, sub, method, message_id, decision, body, payload_hash, truncated_from, seq, hash)
         SELECT session_id, ts, direction, server, sub, method, message_id, decision, body, payload_hash, truncated_from, seq, hash FROM recordings WHERE id = $1`,
        [row.id],
      );
      return { what: `inserted a copy of message ${row.seq} at the end of ${row.session_id}`, expect: { session: row.session_id, message: mine.length + 1 }, sessions: only(row.session_id) };
    case 'insert-forged': {
      // A forger who knows the scheme: a correctly linked message after the last one.
      const last = mine[mine.length - 1];
      const forged = { sessionId: row.session_id, seq: last.seq + 1, ts: 1_800_000_000_001, direction: 'toClient' as const, server: 'srv', sub: 'alice', method: null, messageId: '1', decision: null, body: '{"forged":true}', payloadHash: null, truncatedFrom: null };
      await sql.query(
        `INSERT INTO recordings (session_id, ts, direction, server, sub, method, message_id, decision, body, payload_hash, truncated_from, seq, hash)
         VALUES ($1, $2, $3, $4, $5, NULL, $6, NULL, $7, NULL, NULL, $8, $9)`,
        [forged.sessionId, forged.ts, forged.direction, forged.server, forged.sub, forged.messageId, forged.body, forged.seq, linkHash(last.hash, forged)],
      );
      return { what: `appended a correctly linked message to ${row.session_id}`, expect: { session: row.session_id, message: forged.seq }, sessions: only(row.session_id) };
    }
    case 'swap': {
      if (mine.length < 2) return undefined;
      const a = mine[pick % mine.length];
      const b = mine[(pick + 1 + (pick % (mine.length - 1))) % mine.length];
      if (a.id === b.id) return undefined;
      await sql.query('UPDATE recordings SET id = -1 WHERE id = $1', [a.id]);
      await sql.query('UPDATE recordings SET id = $1 WHERE id = $2', [a.id, b.id]);
      await sql.query('UPDATE recordings SET id = $1 WHERE id = -1', [b.id]);
      return { what: `swapped messages ${a.seq} and ${b.seq} of ${row.session_id}`, expect: { session: row.session_id, message: Math.min(a.seq, b.seq) }, sessions: only(row.session_id) };
    }
    case 'truncate': {
      const from = mine[pick % mine.length].seq;
      await sql.query('DELETE FROM recordings WHERE session_id = $1 AND seq >= $2', [row.session_id, from]);
      return { what: `cut ${row.session_id} off from message ${from}`, expect: { session: row.session_id, message: from }, sessions: only(row.session_id) };
    }
    case 'move': {
      if (sessions.length < 2) return undefined;
      const to = sessions[(sessions.indexOf(row.session_id) + 1 + (pick % (sessions.length - 1))) % sessions.length];
      await sql.query('UPDATE recordings SET session_id = $1 WHERE id = $2', [to, row.id]);
      return { what: `moved message ${row.seq} of ${row.session_id} to ${to}`, expect: { session: row.session_id, message: row.seq }, sessions: new Set([row.session_id, to]) };
    }
  }
}
