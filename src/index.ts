// The library API: compile a policy bundle, decide a request under it, verify an audit export.
// The command line (`portcullis`) is built on the same functions.
import { verifyChain, type VerifyOptions, type VerifyReport } from './audit/verify.js';
import type { AuditRecord } from './store/store.js';
import { PortcullisError } from './errors.js';

export { compileBundle, compileWithProblems, loadBundle, type CompiledBundle, type CompileOptions, type PolicyProblem } from './policy/compile.js';
export { decide } from './policy/decide.js';
export type { Decision, DecisionInput, Effect } from './policy/decision.js';
export type { Identity } from './auth/identity.js';
export { describeReport, verifyChain, type ChainBreak, type VerifyOptions, type VerifyReport } from './audit/verify.js';
export { formatProblem, PortcullisError, type ErrorCode, type Problem } from './errors.js';
export type { AuditRecord } from './store/store.js';

/** Verifies the text of `portcullis audit export` (JSON lines): the chain may start anywhere. */
export function verifyAuditExport(jsonl: string, options: Omit<VerifyOptions, 'anchored'> = {}): Promise<VerifyReport> {
  const records: AuditRecord[] = [];
  jsonl.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    try {
      records.push(JSON.parse(line) as AuditRecord);
    } catch {
      throw new PortcullisError('PCL_USAGE', `line ${i + 1} of the export is not a JSON line`);
    }
  });
  return verifyChain(() => records, [], { ...options, anchored: false });
}
