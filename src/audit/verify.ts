// Verifies an audit chain: every record's hash, every prev link, gapless seq, and every
// checkpoint (its signature, and that the record at its seq still has its hash). Reports the
// first break with its seq and what kind of tampering explains it.
//
// What each attack looks like, and how it is told apart:
// - a field changed: the record's content no longer hashes to its stored hash;
// - a record deleted: seq jumps (or, if later records were renumbered, a record hashes
//   correctly only under seq+1);
// - records reordered: a record hashes correctly only under another seq, and its prev is the
//   hash of a record stored after it;
// - a record inserted: later records were renumbered, so one hashes correctly only under seq-1;
// - the tail truncated: a checkpoint (stored, or exported with --checkpoint-out and given back
//   with --checkpoint) names a seq beyond the last record, or a hash the record no longer has;
// - hashes recomputed after a change (anyone can compute SHA-256): the chain is consistent
//   again, but a signed checkpoint no longer matches, and a forged checkpoint has no valid
//   signature without the private key.
// Records after the last signed checkpoint are protected by the chain only: a forger could
// append to the tail. Checkpoints every N records and at shutdown keep that window small, and
// the report says which records it covers.
//
// Session recordings are verified after the chain, against the seals the chain holds (see
// src/audit/recording-chain.ts); every broken session is reported, with its first bad message.
import type { KeyObject } from 'node:crypto';
import { GENESIS_PREV, type AuditRecord, type Checkpoint, type RecordedMessage, type Store } from '../store/store.js';
import { hashRecord } from './chain.js';
import { checkpointSignatureValid, keyIdOf } from './keys.js';
import { verifySession, type RecordingBreak, type RecordingSeal, type SessionCheck } from './recording-chain.js';

export type BreakKind =
  | 'changed'
  | 'deleted'
  | 'reordered'
  | 'inserted'
  | 'replaced'
  | 'truncated'
  | 'rewritten'
  | 'bad-signature'
  | 'unsigned-checkpoint'
  | 'missing-checkpoint';

export interface ChainBreak {
  seq: number;
  kind: BreakKind;
  message: string;
}

export interface VerifyOptions {
  /** Checks checkpoint signatures; without it they are reported as not checked. */
  publicKey?: KeyObject;
  /** A checkpoint kept elsewhere (audit export --checkpoint-out): detects a truncated tail. */
  checkpoint?: Checkpoint;
  /** When known (from the config), a checkpoint must exist at every multiple of it. */
  checkpointEvery?: number;
  /** True (a store): the chain must start at seq 1 from GENESIS_PREV. False (an export): it may start anywhere. */
  anchored?: boolean;
  /** Called with every record that verified, in seq order. */
  visit?: (r: AuditRecord) => void;
}

export interface RecordingsReport {
  sessions: number;
  messages: number;
  /** Sessions with messages after their last seal (open, or cut short): checked by their links only. */
  unsealed: { session: string; from: number; to: number }[];
  /** Messages recorded before recordings were chained (an upgraded store): not verified. */
  legacyMessages: number;
  /** Every broken session, with its first bad message (at most MAX_BREAKS). */
  breaks: RecordingBreak[];
}

const MAX_BREAKS = 100;

export interface VerifyReport {
  ok: boolean;
  /** The first break, when not ok. */
  break?: ChainBreak;
  records: number;
  firstSeq: number;
  lastSeq: number;
  checkpoints: number;
  signedCheckpoints: number;
  signaturesChecked: boolean;
  /** The highest seq covered by a valid signed checkpoint (0: none). */
  coveredTo: number;
  warnings: string[];
  /** Set by verifyStore once the chain verified. */
  recordings?: RecordingsReport;
}

type Source = () => AsyncIterable<AuditRecord> | Iterable<AuditRecord>;

/** Verifies the chain, then every session's recording against the seals in it. */
export async function verifyStore(store: Store, options: Omit<VerifyOptions, 'anchored' | 'visit'> = {}): Promise<VerifyReport> {
  const seals = new SealIndex();
  const report = await verifyChain(() => store.readAudit(), await store.listCheckpoints(), { ...options, anchored: true, visit: (r) => seals.add(r) });
  if (!report.ok) return report;
  const chainedFrom = await store.recordingsChainedFrom();
  const recordings: RecordingsReport = { sessions: 0, messages: 0, unsealed: [], legacyMessages: 0, breaks: [] };
  const check = (session: string, rows: RecordedMessage[]) => {
    recordings.sessions++;
    recordings.messages += rows.length;
    tally(recordings, session, rows, verifySession(session, rows, seals.of(session), seals.prunedBefore, chainedFrom));
  };
  let session: string | undefined;
  let rows: RecordedMessage[] = [];
  const seen = new Set<string>();
  for await (const m of store.readRecordings()) {
    if (m.sessionId !== session) {
      if (session !== undefined) check(session, rows);
      [session, rows] = [m.sessionId, []];
      seen.add(session);
    }
    rows.push(m);
  }
  if (session !== undefined) check(session, rows);
  for (const id of seals.sessions()) if (!seen.has(id)) tally(recordings, id, [], verifySession(id, [], seals.of(id), seals.prunedBefore, chainedFrom));
  return withRecordings(report, recordings);
}

/** Verifies one session's recording, and the chain that holds its seals (for replay). */
export async function verifyStoredSession(store: Store, sessionId: string, messages: RecordedMessage[], options: Omit<VerifyOptions, 'anchored' | 'visit'> = {}): Promise<VerifyReport> {
  const seals = new SealIndex(sessionId);
  const report = await verifyChain(() => store.readAudit(), await store.listCheckpoints(), { ...options, anchored: true, visit: (r) => seals.add(r) });
  if (!report.ok) return report;
  const recordings: RecordingsReport = { sessions: 1, messages: messages.length, unsealed: [], legacyMessages: 0, breaks: [] };
  tally(recordings, sessionId, messages, verifySession(sessionId, messages, seals.of(sessionId), seals.prunedBefore, await store.recordingsChainedFrom()));
  return withRecordings(report, recordings);
}

function tally(into: RecordingsReport, session: string, rows: RecordedMessage[], c: SessionCheck): void {
  if (c.break && into.breaks.length < MAX_BREAKS) into.breaks.push(c.break);
  if (c.unsealed) into.unsealed.push({ session, from: c.unsealed[0], to: c.unsealed[1] });
  if (c.legacy) into.legacyMessages += rows.length;
}

function withRecordings(report: VerifyReport, recordings: RecordingsReport): VerifyReport {
  const warnings = [...report.warnings];
  const u = recordings.unsealed;
  if (u.length) {
    const list = u.slice(0, 3).map((x) => `${x.session} (messages ${x.from}–${x.to})`).join(', ');
    warnings.push(`${u.length} session recording${u.length > 1 ? 's have' : ' has'} messages not sealed yet (open, or cut short by a crash), checked by their links only: ${list}${u.length > 3 ? ', …' : ''}`);
  }
  if (recordings.legacyMessages) warnings.push(`${recordings.legacyMessages} recorded messages predate chained recordings and are not verified`);
  const ok = recordings.breaks.length === 0;
  return { ...report, ok, recordings, warnings };
}

/** The recording.seal and recording.prune records of a verified chain (of one session, or all). */
class SealIndex {
  private readonly bySession = new Map<string, RecordingSeal[]>();
  prunedBefore = -Infinity;

  constructor(private readonly only?: string) {}

  add(r: AuditRecord): void {
    const d = r.data;
    if (r.type === 'recording.prune' && typeof d.before === 'number') this.prunedBefore = Math.max(this.prunedBefore, d.before);
    if (r.type !== 'recording.seal' || typeof d.session !== 'string' || (this.only !== undefined && d.session !== this.only)) return;
    if (!Number.isInteger(d.messages) || typeof d.digest !== 'string' || typeof d.lastTs !== 'number') return;
    const list = this.bySession.get(d.session) ?? [];
    list.push(d as RecordingSeal);
    this.bySession.set(d.session, list);
  }

  of(session: string): RecordingSeal[] {
    return this.bySession.get(session) ?? [];
  }

  sessions(): Iterable<string> {
    return this.bySession.keys();
  }
}

/** Verifies the records `source` yields (in seq order; it is read again to diagnose a break). */
export async function verifyChain(source: Source, checkpoints: Checkpoint[], options: VerifyOptions = {}): Promise<VerifyReport> {
  const anchored = options.anchored ?? true;
  const { publicKey } = options;
  const expectedKeyId = publicKey ? keyIdOf(publicKey) : undefined;
  const every = options.checkpointEvery;
  const bySeq = new Map<number, Checkpoint[]>();
  const all = [...checkpoints, ...(options.checkpoint ? [options.checkpoint] : [])];
  for (const c of all) bySeq.set(c.seq, [...(bySeq.get(c.seq) ?? []), c]);

  const report: VerifyReport = {
    ok: true,
    records: 0,
    firstSeq: 0,
    lastSeq: 0,
    checkpoints: all.length,
    signedCheckpoints: all.filter((c) => c.signature).length,
    signaturesChecked: Boolean(publicKey),
    coveredTo: 0,
    warnings: [],
  };
  const fail = (b: ChainBreak): VerifyReport => ({ ...report, ok: false, break: b });

  let p: AuditRecord | undefined; // the last good record
  let pp: AuditRecord | undefined; // the one before it
  let lastMatchingCheckpoint = 0;
  for await (const r of source()) {
    if (!p) {
      report.firstSeq = r.seq;
      if (anchored && r.seq !== 1) {
        return fail(await diagnose(source, r, undefined, undefined, 1) ?? { seq: 1, kind: 'deleted', message: `records 1–${r.seq - 1} are missing: the chain starts at seq ${r.seq} (deleted)` });
      }
    }
    const expectedSeq = p ? p.seq + 1 : anchored ? 1 : r.seq;
    const expectedPrev = p ? p.hash : anchored ? GENESIS_PREV : r.prev;
    if (r.seq !== expectedSeq || hashRecord(r) !== r.hash || r.prev !== expectedPrev) {
      const b = await diagnose(source, r, p, pp, expectedSeq);
      if (b) return fail(b);
    }
    report.records++;
    report.lastSeq = r.seq;
    options.visit?.(r);

    // Checkpoints at this seq.
    const cps = bySeq.get(r.seq) ?? [];
    if (every && r.seq % every === 0 && !checkpoints.some((c) => c.seq === r.seq)) {
      return fail({ seq: r.seq, kind: 'missing-checkpoint', message: `no checkpoint at seq ${r.seq}, though one is written every ${every} records (checkpoints deleted?)` });
    }
    for (const c of cps) {
      const b = checkCheckpoint(c, r, publicKey, expectedKeyId, lastMatchingCheckpoint);
      if (b) return fail(b);
      if (c.signature && publicKey) report.coveredTo = r.seq;
      lastMatchingCheckpoint = r.seq;
    }
    pp = p;
    p = r;
  }

  // Checkpoints beyond the last record: the tail was cut off.
  const beyond = all.filter((c) => c.seq > report.lastSeq).sort((a, b) => a.seq - b.seq);
  if (beyond.length) {
    const c = beyond[beyond.length - 1];
    if (publicKey && c.signature && !checkpointSignatureValid(c, publicKey)) {
      return fail({ seq: c.seq, kind: 'bad-signature', message: `the checkpoint at seq ${c.seq} has an invalid signature` });
    }
    const from = report.lastSeq + 1;
    return fail({
      seq: from,
      kind: 'truncated',
      message: `records ${from}–${c.seq} are missing: a checkpoint covers seq ${c.seq} but the log ends at ${report.lastSeq || 'nothing'} (tail truncated)`,
    });
  }
  if (report.records === 0) report.warnings.push('the log is empty');
  if (!publicKey && report.checkpoints) report.warnings.push('checkpoint signatures not checked: no key given (audit.signingKey in the config, or --public-key)');
  if (report.checkpoints && report.signedCheckpoints === 0) report.warnings.push('no checkpoint is signed: configure audit.signingKey to sign them');
  if (publicKey && report.lastSeq > report.coveredTo) {
    report.warnings.push(`records ${report.coveredTo + 1}–${report.lastSeq} are not yet covered by a signed checkpoint`);
  }
  return report;
}

function checkCheckpoint(c: Checkpoint, r: AuditRecord, publicKey: KeyObject | undefined, keyId: string | undefined, lastGood: number): ChainBreak | undefined {
  if (publicKey) {
    if (!c.signature) {
      return { seq: c.seq, kind: 'unsigned-checkpoint', message: `the checkpoint at seq ${c.seq} is not signed, though a key was given (signature removed?)` };
    }
    if (c.keyId && c.keyId !== keyId) {
      return { seq: c.seq, kind: 'bad-signature', message: `the checkpoint at seq ${c.seq} was signed by key ${c.keyId}, not by the given key ${keyId}` };
    }
    if (!checkpointSignatureValid(c, publicKey)) {
      return { seq: c.seq, kind: 'bad-signature', message: `the checkpoint at seq ${c.seq} has an invalid signature (checkpoint forged or altered)` };
    }
  }
  if (c.hash !== r.hash) {
    return {
      seq: c.seq,
      kind: 'rewritten',
      message: `record ${c.seq} does not have the hash its ${c.signature ? 'signed ' : ''}checkpoint records: records ${lastGood + 1}–${c.seq} were rewritten and their hashes recomputed`,
    };
  }
  return undefined;
}

/** Says what explains the anomaly at record r (p and pp: the two good records before it). */
async function diagnose(source: Source, r: AuditRecord, p: AuditRecord | undefined, pp: AuditRecord | undefined, expectedSeq: number): Promise<ChainBreak | undefined> {
  if (r.seq > expectedSeq) {
    const last = r.seq - 1;
    const which = last > expectedSeq ? `records ${expectedSeq}–${last} are` : `record ${expectedSeq} is`;
    return { seq: expectedSeq, kind: 'deleted', message: `${which} missing: seq jumps from ${p?.seq ?? 0} to ${r.seq} (deleted)` };
  }
  if (r.seq < expectedSeq) {
    return { seq: r.seq, kind: 'inserted', message: `seq ${r.seq} appears again after seq ${p?.seq} (a record was inserted or duplicated)` };
  }
  const contentOk = hashRecord(r) === r.hash;
  if (!contentOk) {
    const realSeq = seqThatHashes(r);
    if (realSeq !== undefined) {
      const prevAt = await positionOfHash(source, r.prev);
      if (prevAt !== undefined && prevAt > r.seq) {
        return { seq: r.seq, kind: 'reordered', message: `the record at seq ${r.seq} is record ${realSeq} moved here: its prev is the hash of the record now at seq ${prevAt} (records reordered)` };
      }
      if (realSeq > r.seq) {
        return { seq: r.seq, kind: 'deleted', message: `record ${r.seq} was deleted and later records renumbered (the record now at seq ${r.seq} was seq ${realSeq})` };
      }
      return {
        seq: realSeq,
        kind: 'inserted',
        message: `${r.seq - realSeq > 1 ? `records ${realSeq}–${r.seq - 1} were` : `record ${realSeq} was`} inserted: the original record ${realSeq} now sits at seq ${r.seq}`,
      };
    }
    return { seq: r.seq, kind: 'changed', message: `record ${r.seq}'s fields do not match its hash (a field was changed after it was written)` };
  }
  // The record is intact, but it does not follow the record before it.
  if (!p) {
    return { seq: r.seq, kind: 'changed', message: `record ${r.seq}'s prev is not the genesis value ${GENESIS_PREV.slice(0, 8)}…` };
  }
  if (pp && r.prev === pp.hash) {
    return { seq: p.seq, kind: 'inserted', message: `record ${p.seq} was inserted: record ${r.seq} is chained to record ${pp.seq}` };
  }
  const prevAt = await positionOfHash(source, r.prev);
  if (prevAt !== undefined && prevAt > r.seq) {
    return { seq: r.seq, kind: 'reordered', message: `record ${r.seq} is chained to the record now at seq ${prevAt}, which comes after it (records reordered)` };
  }
  return { seq: p.seq, kind: 'replaced', message: `record ${p.seq} is not the record that record ${r.seq} was chained to (replaced by another record, or record ${r.seq}'s prev altered)` };
}

/** The seq under which a record's content hashes to its stored hash, searched near its position. */
function seqThatHashes(r: AuditRecord): number | undefined {
  for (let d = 1; d <= 64; d++) {
    for (const s of [r.seq + d, r.seq - d]) {
      if (s >= 1 && hashRecord({ ...r, seq: s }) === r.hash) return s;
    }
  }
  return undefined;
}

/** Where (at which stored seq) the record with this stored hash sits; one more pass, only to explain a break. */
async function positionOfHash(source: Source, hash: string): Promise<number | undefined> {
  for await (const r of source()) if (r.hash === hash) return r.seq;
  return undefined;
}

/** For people: what was verified, or the first break of the chain, or every broken recording (one line each). */
export function describeReport(report: VerifyReport): string {
  if (!report.ok && report.break) return `audit log broken at seq ${report.break.seq} (${report.break.kind}): ${report.break.message}`;
  const rec = report.recordings;
  if (!report.ok && rec) return rec.breaks.map(describeRecordingBreak).join('\n');
  const range = report.records ? ` (seq ${report.firstSeq}–${report.lastSeq})` : '';
  const sigs = report.signaturesChecked ? `, ${report.signedCheckpoints} signatures valid` : report.signedCheckpoints ? ', signatures not checked' : ', none signed';
  const recordings = rec ? `; ${rec.messages} recorded messages in ${rec.sessions} sessions verified` : '';
  return `ok: ${report.records} records verified${range}, ${report.checkpoints} checkpoints${report.checkpoints ? sigs : ''}${recordings}`;
}

export function describeRecordingBreak(b: RecordingBreak): string {
  return `recording of session ${b.session} broken at message ${b.message} (${b.kind}): ${b.text}`;
}
