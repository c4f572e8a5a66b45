// Session recordings, linked to the audit chain (docs/audit.md, "Recordings in the chain").
//
// Each session's recording is a hash chain of its own: message n of a session carries
//   seq  = n (1, 2, 3, … in the order written)
//   hash = SHA-256 hex of the JSON array
//          [prev, sessionId, seq, ts, direction, server, sub, method, messageId, decision,
//           body (null when in a payload), payloadHash, truncatedFrom]
//          with prev = the hash of message n-1 (64 zeros for message 1)
// so the hash of the last message is a running digest of the whole recording so far. The
// recorder seals that digest into the audit chain (a `recording.seal` record {session,
// messages, digest, lastTs, final?}) at the session's end, every `sealEvery` messages and
// every `sealInterval`, and notes each prune in a `recording.prune` record {before}.
//
// What verify tells apart, per session (in id order, as replay reads it):
// - a field changed (body, time, direction, decision, …): the message's hash no longer fits;
// - a payload changed: it no longer hashes to its payloadHash;
// - a message deleted: seq jumps; the tail cut off: a seal counts more messages than stored;
// - messages swapped or reordered: seq goes out of order;
// - a message inserted: a seq repeats, a row has no link, or it comes after the final seal;
// - a message moved to another session: a gap in the one, a foreign message in the other
//   (the session id is in the hash);
// - hashes recomputed after an edit: the chain is consistent again, but a seal's digest (in
//   the audit chain, under its checkpoints) no longer matches.
// Messages after a session's last seal (an open session, or one cut short by a crash) are
// checked by their links only: a cut-off or re-hashed tail there goes unnoticed.
import { createHash } from 'node:crypto';
import type { RecordedMessage, RecordingRow } from '../store/store.js';
import { GENESIS_PREV } from '../store/store.js';

/** The data of a `recording.seal` audit record. */
export interface RecordingSeal {
  [key: string]: unknown;
  session: string;
  /** How many messages it covers: messages 1…messages. */
  messages: number;
  /** The hash of message `messages`. */
  digest: string;
  /** The latest ts among them (ms), so that a prune can be told from a deletion. */
  lastTs: number;
  /** The session ended: no message may follow. */
  final?: true;
}

type Linked = Pick<RecordingRow, 'sessionId' | 'ts' | 'direction' | 'server' | 'sub' | 'method' | 'messageId' | 'decision' | 'payloadHash' | 'truncatedFrom'> & {
  seq: number;
  body: string | null;
};

/** The hash of a message given the hash of the one before it. */
export function linkHash(prev: string, m: Linked): string {
  const fields = [prev, m.sessionId, m.seq, m.ts, m.direction, m.server, m.sub, m.method, m.messageId, m.decision, m.payloadHash === null ? m.body : null, m.payloadHash, m.truncatedFrom];
  return createHash('sha256').update(JSON.stringify(fields), 'utf8').digest('hex');
}

export type RecordingBreakKind = 'changed' | 'deleted' | 'reordered' | 'inserted' | 'truncated' | 'rewritten';

export interface RecordingBreak {
  session: string;
  /** The message (its seq within the session) where the recording stops being what was recorded. */
  message: number;
  kind: RecordingBreakKind;
  text: string;
}

export interface SessionCheck {
  break?: RecordingBreak;
  /** Messages checked by their links only (after the last seal): [from, to], when any. */
  unsealed?: [number, number];
  /** All its messages predate chained recordings (an upgraded store): not verifiable. */
  legacy?: boolean;
}

/**
 * Verifies one session's recording (messages in id order) against its seals from a verified
 * audit chain (in chain order) and the latest prune cutoff.
 */
export function verifySession(session: string, rows: RecordedMessage[], seals: RecordingSeal[], prunedBefore: number, chainedFrom: number): SessionCheck {
  const fail = (message: number, kind: RecordingBreakKind, text: string): SessionCheck => ({ break: { session, message, kind, text } });
  const sealed = seals.reduce((n, s) => Math.max(n, s.messages), 0);
  const last = seals.find((s) => s.messages === sealed);
  if (!rows.length) {
    if (last && !(last.lastTs < prunedBefore)) return fail(1, 'deleted', `all ${sealed} sealed messages are missing (deleted; not pruned: the last is newer than any prune)`);
    return {};
  }
  if (!seals.length && rows.every((r) => r.seq === null && r.id < chainedFrom)) return { legacy: true };

  // A recording pruned while its session went on starts after a seal older than the prune.
  let start = 1;
  let prev = GENESIS_PREV;
  const first = rows[0].seq;
  if (first !== null && first > 1) {
    const anchor = seals.find((s) => s.messages === first - 1 && s.lastTs < prunedBefore);
    if (anchor) [start, prev] = [first, anchor.digest];
  }

  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    const want = start + i;
    if (r.seq === null || r.hash === null) return fail(want, 'inserted', `a message without a chain link sits at message ${want} (inserted)`);
    if (r.seq !== want) {
      const later = rows.findIndex((x, j) => j > i && x.seq === want);
      if (r.seq > want) {
        if (later >= 0) return fail(want, 'reordered', `message ${want} is stored after message ${r.seq} (messages swapped or reordered)`);
        return fail(want, 'deleted', `${r.seq - 1 > want ? `messages ${want}–${r.seq - 1} are` : `message ${want} is`} missing: the recording jumps from ${want - 1} to ${r.seq} (deleted, or moved to another session)`);
      }
      return fail(want, rows.some((x, j) => j < i && x.seq === r.seq) ? 'inserted' : 'reordered', `the message at ${want} claims to be message ${r.seq} (inserted, duplicated or moved)`);
    }
    const body = r.payloadHash === null ? r.body : null;
    if (linkHash(prev, { ...r, seq: r.seq, body }) !== r.hash) {
      return fail(want, 'changed', `message ${want} does not match its hash (a field was changed, or it was moved here from another session)`);
    }
    if (r.payloadHash !== null && createHash('sha256').update(r.body, 'utf8').digest('hex') !== r.payloadHash) {
      return fail(want, 'changed', `message ${want}'s body does not match its payload hash (the stored payload was changed)`);
    }
    prev = r.hash;
  }

  const end = start + rows.length - 1;
  let before = 0;
  for (const s of [...seals].sort((a, b) => a.messages - b.messages)) {
    if (s.messages > end) {
      return fail(end + 1, 'truncated', `${s.messages > end + 1 ? `messages ${end + 1}–${s.messages} are` : `message ${end + 1} is`} missing: a seal covers ${s.messages} messages, ${end} are stored (tail cut off)`);
    }
    if (s.messages >= start && rows[s.messages - start].hash !== s.digest) {
      return fail(before + 1, 'rewritten', `messages ${before + 1}–${s.messages} differ from their seal: they were rewritten and their hashes recomputed`);
    }
    before = s.messages;
  }
  const final = seals.find((s) => s.final);
  if (final && end > final.messages) {
    return fail(final.messages + 1, 'inserted', `message${end > final.messages + 1 ? `s ${final.messages + 1}–${end} were` : ` ${end} was`} added after the session's final seal (inserted)`);
  }
  return end > sealed ? { unsealed: [sealed + 1, end] } : {};
}
