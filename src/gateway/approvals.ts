// Just-in-time approvals (SPEC 5): an `approve` decision holds the request. The desk records a
// pending approval in the store (the arguments exactly as sent, and their digest), tells the
// webhooks, and waits, without holding the session's turn, until an approver decides (through
// the admin API of any replica), the approval expires, or the client withdraws it. What is
// forwarded after an approval is the very message that was held; the decide stage mints it.
import { randomUUID } from 'node:crypto';
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { identityKey } from '../auth/identity.js';
import { digestArgs, recordedText } from '../audit/chain.js';
import type { Decision, DecisionInput } from '../policy/decision.js';
import type { ApprovalRecord, ApprovalStore } from '../store/store.js';
import { errorResponse, FORBIDDEN_BY_POLICY, INTERNAL_ERROR, type Classified } from './classify.js';
import { DECISION_META, type AuditSink } from './decide.js';
import type { Exchange, Reply } from './pipeline.js';
import { notifyWebhooks, type Webhook } from './webhooks.js';

type Request = Extract<Classified, { type: 'request' }>;

/** How often held calls are looked up in the store besides notifications (ms). */
const POLL_MS = 1_000;

export type HoldOutcome =
  /** Forward the held message (the decide stage mints it). */
  | { kind: 'approved'; approval: ApprovalRecord }
  /** Answer the client with this (denied, expired, not recorded, shut down). */
  | { kind: 'answered'; reply: Reply }
  /** The client withdrew the request: it gets no reply. */
  | { kind: 'withdrawn' };

export interface ApprovalDeskOptions {
  store: ApprovalStore;
  audit: AuditSink;
  log: Logger;
  /** Default wait before an approval expires (approvals.timeout), unless the rule sets its own. */
  timeoutMs: number;
  webhooks: Webhook[];
}

interface Waiting {
  approval: ApprovalRecord;
  settle(record: ApprovalRecord | 'shutdown'): void;
}

export class ApprovalDesk {
  readonly #waiting = new Map<string, Waiting>();
  /** Where approvers decide (the admin API's base URL), for the progress message and the webhook text. */
  adminUrl?: string;
  #stopWatching?: () => Promise<void>;
  #poll?: NodeJS.Timeout;
  #closed = false;

  constructor(private readonly o: ApprovalDeskOptions) {}

  /** Follows the store: an approval decided on any replica releases the call held here. */
  async start(): Promise<void> {
    this.#stopWatching = await this.o.store.watchApprovals((id) => void this.settled(id));
  }

  /** Held calls right now (for /metrics). */
  get pending(): number {
    return this.#waiting.size;
  }

  /** An approval changed in the store: wake whoever holds its call (no id: look at every held one, in one query). */
  async settled(id?: string): Promise<void> {
    const ids = id !== undefined ? [id] : [...this.#waiting.keys()];
    if (!ids.length) return;
    const records = await this.o.store.settledApprovals(ids).catch(() => []);
    for (const record of records) this.#waiting.get(record.id)?.settle(record);
  }

  /**
   * Holds a request until it is decided. Resolves with what to do: forward, answer, or nothing.
   * The session's turn is released before waiting, so its later messages (a cancellation of this
   * very request included) still flow.
   */
  async hold(x: Exchange, m: Request, input: DecisionInput, decision: Decision, decisionId: string): Promise<HoldOutcome> {
    const session = x.session;
    const target = input.tool ?? input.resource ?? input.prompt ?? '';
    const argsDigest = digestArgs(input.args ?? null);
    const requesterKey = identityKey(input.identity);
    if (this.#closed) return { kind: 'answered', reply: errorResponse(m.id, INTERNAL_ERROR, 'the gateway is shutting down: the request was not held for approval') };

    // A grant (rule `grant: {ttl}`): an identical request of the same credential, recently approved, passes.
    if (decision.grantMs) {
      const grant = await this.o.store.findGrant({ requesterKey, server: input.server, method: input.method, target, argsDigest }).catch(() => undefined);
      if (grant && grant.rule === decision.rule) {
        try {
          await this.o.audit.append('approval.granted', input.identity.sub, { approvalId: grant.id, decisionId, sessionId: session.id, requestId: recordedText(m.id), rule: decision.rule, argsDigest, grantUntil: grant.grantUntil });
        } catch {
          return { kind: 'answered', reply: errorResponse(m.id, INTERNAL_ERROR, 'Audit log unavailable: the request was not forwarded (PCL_AUDIT_WRITE_FAILED)') };
        }
        return { kind: 'approved', approval: grant };
      }
    }

    const now = Date.now();
    const approval: ApprovalRecord = {
      id: randomUUID(),
      status: 'pending',
      requester: { sub: input.identity.sub, groups: [...input.identity.groups], key: requesterKey },
      server: input.server,
      method: input.method,
      ...(input.tool !== undefined && { tool: input.tool }),
      ...(input.resource !== undefined && { resource: input.resource }),
      ...(input.prompt !== undefined && { prompt: input.prompt }),
      ...(input.args !== undefined && { args: input.args }),
      argsDigest,
      rule: decision.rule,
      approvers: decision.approvers ?? {},
      bundleVersion: decision.bundleVersion,
      ...(decision.grantMs !== undefined && { grantMs: decision.grantMs }),
      sessionId: session.id,
      requestId: m.id,
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + (decision.timeoutMs ?? this.o.timeoutMs)).toISOString(),
    };
    // Recorded before anyone can be asked: an approval nobody can find later is no approval.
    try {
      await this.o.store.createApproval(approval);
      await this.o.audit.append('approval.requested', input.identity.sub, {
        approvalId: approval.id,
        decisionId,
        sessionId: session.id,
        requestId: recordedText(m.id),
        server: input.server,
        method: recordedText(input.method),
        tool: recordedText(input.tool),
        resource: recordedText(input.resource),
        prompt: recordedText(input.prompt),
        rule: decision.rule,
        argsDigest,
        expiresAt: approval.expiresAt,
      });
    } catch (e) {
      this.o.log.error({ err: (e as Error).message }, 'could not record an approval; request refused');
      return { kind: 'answered', reply: errorResponse(m.id, INTERNAL_ERROR, 'The approval could not be recorded: the request was not forwarded (PCL_AUDIT_WRITE_FAILED)', { code: 'PCL_AUDIT_WRITE_FAILED', retryable: true }) };
    }
    notifyWebhooks(this.o.webhooks, 'approval.requested', approval, this.adminUrl, this.o.log);

    const outcome = new Promise<ApprovalRecord | 'shutdown' | 'withdrawn'>((resolve) => {
      let done = false;
      const finish = (r: ApprovalRecord | 'shutdown' | 'withdrawn') => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.#waiting.delete(approval.id);
        release();
        resolve(r);
      };
      // The session counts the held call as in flight: idle end, shutdown and the client's own
      // cancellation see it. Withdrawing settles the approval as cancelled, so nobody approves it later.
      const release = session.hold(m.id, (reason) => {
        void this.#end(approval.id, 'cancelled', reason).then(() => finish('withdrawn'));
      });
      const timer = setTimeout(() => void this.#end(approval.id, 'expired', 'timeout').then((r) => r && finish(r)), Date.parse(approval.expiresAt) - Date.now());
      timer.unref?.();
      this.#waiting.set(approval.id, { approval, settle: finish });
      // The approval was visible in the store before this wait began (its audit record came in
      // between): a decision made meanwhile notified nobody here. Look once now.
      void this.settled(approval.id);
      // Another process on the same SQLite file (a wrap, a second serve) cannot notify this one:
      // while calls are held, look at them once a second (one query for all of them).
      if (!this.o.store.approvalsNotifyAcrossProcesses) this.#poll ??= setInterval(() => (this.#waiting.size ? void this.settled() : (clearInterval(this.#poll), (this.#poll = undefined))), POLL_MS).unref();
    });
    x.releaseTurn();
    this.#progress(x, m, approval);
    const result = await outcome;

    if (result === 'withdrawn') return { kind: 'withdrawn' };
    if (result === 'shutdown') return { kind: 'answered', reply: refusal(m, `the gateway shut down while approval ${approval.id} was pending: the request was withdrawn and not forwarded`, approval, decisionId) };
    notifyWebhooks(this.o.webhooks, `approval.${result.status}`, result, this.adminUrl, this.o.log);
    switch (result.status) {
      case 'approved':
        return { kind: 'approved', approval: result };
      case 'denied':
        return { kind: 'answered', reply: refusal(m, `Denied by approver ${result.decidedBy}${result.reason ? `: ${result.reason}` : ''} (approval ${result.id}, rule ${result.rule})`, result, decisionId) };
      case 'expired':
        return { kind: 'answered', reply: refusal(m, `Approval ${result.id} expired at ${result.expiresAt} without a decision (rule ${result.rule}); the request was not forwarded`, result, decisionId) };
      case 'cancelled':
        return { kind: 'withdrawn' };
      default:
        // Still pending: the store could not be updated at the expiry. Not forwarded, and said so.
        return { kind: 'answered', reply: refusal(m, `Approval ${result.id} could not be settled (the store did not answer); the request was not forwarded`, result, decisionId) };
    }
  }

  /** Moves a pending approval to expired or cancelled, with its audit record; returns where it ended (it may have been decided meanwhile). */
  async #end(id: string, status: 'expired' | 'cancelled', why: string): Promise<ApprovalRecord | undefined> {
    const ended = await this.o.store.settleApproval(id, { status, decidedBy: `gateway:${why}` }).catch(() => undefined);
    if (ended) {
      await this.o.audit.append(`approval.${status}`, 'system', { approvalId: id, sessionId: ended.sessionId, requestId: recordedText(ended.requestId), reason: why }).catch((e) => this.o.log.error({ err: (e as Error).message }, `could not record an approval ${status}`));
      return ended;
    }
    return this.o.store.getApproval(id).catch(() => undefined);
  }

  /** With a progress token, the client is told the call waits, and where approvers decide. */
  #progress(x: Exchange, m: Request, approval: ApprovalRecord): void {
    const token = (m.params?._meta as { progressToken?: unknown } | undefined)?.progressToken;
    if (typeof token !== 'string' && typeof token !== 'number') return;
    const where = this.adminUrl;
    const message = `waiting for approval ${approval.id} (rule ${approval.rule}) until ${approval.expiresAt}${where ? `; approvers decide at ${where}/admin/v1/approvals/${approval.id}` : ''}`;
    x.session.sendToClient({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: token, progress: 0, message } } as JSONRPCMessage, m.id).catch(() => undefined);
  }

  /** Shutdown: every held call is withdrawn (cancelled in the store) and answered with a clear error. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#poll);
    await Promise.all(
      [...this.#waiting.values()].map(async (w) => {
        await this.#end(w.approval.id, 'cancelled', 'the gateway shut down');
        w.settle('shutdown');
      }),
    );
    await this.#stopWatching?.();
  }
}

/** A held request that will not go: a tool error for tools/call (the agent can read it), else -32003. */
function refusal(m: Request, text: string, approval: ApprovalRecord, decisionId: string): Reply {
  if (m.method === 'tools/call') {
    const meta = { [DECISION_META]: { decisionId, rule: approval.rule, effect: 'approve' }, 'portcullis.dev/approval': { id: approval.id, status: approval.status, rule: approval.rule } };
    return { jsonrpc: '2.0', id: m.id as RequestId, result: { content: [{ type: 'text', text }], isError: true, _meta: meta } } as JSONRPCMessage;
  }
  return errorResponse(m.id, FORBIDDEN_BY_POLICY, text, { rule: approval.rule, decisionId, approvalId: approval.id, status: approval.status });
}
