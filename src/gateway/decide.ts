// The decide stage: the only place an Authorized message is made, and only after the decision's
// audit record is durable. Upstream connectors accept nothing else, so "no message reaches an
// upstream without a decision and its audit record" is a property of the types.
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import { randomUUID } from 'node:crypto';
import type { Identity } from '../auth/identity.js';
import type { CompiledBundle, Kind } from '../policy/compile.js';
import { decisionAuditData, digestArgs, recordedText, type AuditType } from '../audit/chain.js';
import type { ApprovalDesk } from './approvals.js';
import { decide, visible } from '../policy/decide.js';
import type { Masker } from '../masking/mask.js';
import { maskerFor, type MaskTarget } from '../masking/select.js';
import type { Decision, DecisionInput } from '../policy/decision.js';
import { errorResponse, FORBIDDEN_BY_POLICY, INTERNAL_ERROR, type Classified } from './classify.js';
import type { Exchange, Reply, Stage } from './pipeline.js';

let mint: (message: JSONRPCMessage, decision: Decision) => Authorized;

/**
 * A message the gateway decided to send upstream, its decision's audit record durable. The private
 * #brand makes the class nominal: an object literal of the same shape does not typecheck (see
 * authorized.test.ts), and `Authorized.is` tells a forged one apart at run time.
 */
export class Authorized {
  readonly #brand = true;
  static {
    mint = (message, decision) => new Authorized(message, decision);
  }
  private constructor(
    readonly message: JSONRPCMessage,
    readonly decision: Decision,
  ) {}
  static is(value: unknown): value is Authorized {
    return typeof value === 'object' && value !== null && #brand in value;
  }
}

/**
 * The same decided message carried in another era's envelope, or on a connection with ids of its
 * own: a 2026-07-28 upstream needs the version and the client's capabilities in `_meta`, and a
 * retry adds the client's `inputResponses` and the server's `requestState`; a pooled or shared
 * connection replaces the JSON-RPC id, the progress token (in `_meta`) and, in a cancellation,
 * the id of the request it cancels (which names that request on the hop it is sent on). Nothing
 * policy decided on may differ: the method and every parameter but those are checked equal, so a
 * translation that changed what was decided throws instead of reaching the upstream.
 */
export function translated(a: Authorized, message: JSONRPCMessage): Authorized {
  if (!Authorized.is(a)) throw new Error('refused a message that carries no decision');
  if (!sameMembers(a.message, message, TOP_HOP_MEMBERS) || !sameMembers(paramsOf(a.message), paramsOf(message), hopParams(message))) {
    // Not the same values: then equal content, compared canonically.
    const strip = (m: JSONRPCMessage) => {
      const { id: _id, params, ...rest } = m as { id?: unknown; method?: unknown; params?: Record<string, unknown> };
      const decided = Object.fromEntries(Object.entries(params ?? {}).filter(([k]) => !hopParams(m).has(k)));
      return digestArgs({ ...rest, params: decided });
    };
    if (strip(a.message) !== strip(message)) throw new Error('an era translation changed what was decided; not sent');
  }
  return mint(message, a.decision);
}

/** What a translation may change: the id (top level), and these parameters. */
const TOP_HOP_MEMBERS = new Set(['id', 'params']); // params: compared member by member
const HOP_PARAMS = new Set(['_meta', 'inputResponses', 'requestState']);
const CANCEL_HOP_PARAMS = new Set([...HOP_PARAMS, 'requestId']);
const hopParams = (m: JSONRPCMessage) => ((m as { method?: unknown }).method === 'notifications/cancelled' ? CANCEL_HOP_PARAMS : HOP_PARAMS);
const paramsOf = (m: JSONRPCMessage) => ((m as { params?: unknown }).params ?? {}) as Record<string, unknown>;

/**
 * Whether both hold the very same values (Object.is) under the same keys, leaving out `skip`: the
 * cheap proof for what translations do, which copy the decided message's own members over.
 */
function sameMembers(x: object, y: object, skip: ReadonlySet<string>): boolean {
  if (typeof x !== 'object' || x === null || typeof y !== 'object' || y === null) return x === y;
  let n = 0;
  for (const k of Object.keys(x)) {
    if (skip.has(k)) continue;
    if (!Object.hasOwn(y, k) || !Object.is((x as Record<string, unknown>)[k], (y as Record<string, unknown>)[k])) return false;
    n++;
  }
  for (const k of Object.keys(y)) if (!skip.has(k)) n--;
  return n === 0;
}

/** One bundle version of the policy: a request is decided, and its list reply filtered, by one view. */
export interface PolicyView {
  readonly version: string;
  decide(input: DecisionInput): Decision;
  visible(identity: Identity, server: string, kind: Kind, name: string): boolean;
  /** The masks this version applies to a result for this caller (undefined: none). */
  masker(identity: Identity, server: string, target: MaskTarget): Masker | undefined;
}

/** What the decide stage asks of the policy engine: the view in force now. */
export interface PolicyPoint {
  current(): PolicyView;
}

/** The gateway's policy point over compiled bundles (a PolicySource, or a fixed bundle); `hashKey` is masking.hashKey. */
export function policyPoint(source: { current(): CompiledBundle }, masking: { hashKey?: Buffer } = {}): PolicyPoint {
  const views = new WeakMap<CompiledBundle, PolicyView>();
  return {
    current() {
      const bundle = source.current();
      let view = views.get(bundle);
      if (!view) {
        view = {
          version: bundle.version,
          decide: (input) => decide(bundle, input),
          visible: (identity, server, kind, name) => visible(bundle, identity, server, kind, name),
          masker: (identity, server, target) => maskerFor(bundle, identity, server, target, masking.hashKey),
        };
        views.set(bundle, view);
      }
      return view;
    },
  };
}

/** What the decide stage needs of the audit log: append resolves once the record is durable. */
export interface AuditSink {
  append(type: AuditType, actor: string, data: Record<string, unknown>): Promise<unknown>;
}

const CLIENT_NOTIFICATIONS = new Set(['notifications/initialized', 'notifications/cancelled', 'notifications/progress', 'notifications/roots/list_changed', 'notifications/tasks/status']);

/** Built-in decisions for what policy does not govern: protocol plumbing and replies. */
function builtIn(rule: string, version: string): Decision {
  return { effect: 'allow', rule, bundleVersion: version };
}

/** Without a desk (a gateway with no store behind it), an approve decision fails closed. */
export function decideStage(points: PolicyPoint, audit: AuditSink, desk?: ApprovalDesk): Stage {
  return async (x, next) => {
    const m = x.msg!;
    const session = x.session;
    // The masking stage may have taken the version already: one version governs the whole exchange.
    const policy = (x.policy ??= points.current());
    if (m.type === 'response') {
      // A client's answer to a server's request (sampling, elicitation, roots): only ids the
      // upstream actually asked for go up, so a client cannot inject answers.
      if (!session.takeServerRequest(m.id)) return undefined;
      x.authorized = mint(m.message, builtIn('protocol/response', policy.version));
      return next();
    }
    if (m.type === 'notification') {
      // Protocol notifications pass; any other is decided like an unknown method (denied unless
      // a methods rule allows it) and audited; a denied notification is dropped, since it gets no reply.
      if (CLIENT_NOTIFICATIONS.has(m.method)) {
        x.authorized = mint(m.message, builtIn('protocol/notification', policy.version));
        return next();
      }
      const input: DecisionInput = { identity: x.identity, server: session.server, method: m.method, time: new Date() };
      const decision = policy.decide(input);
      const decisionId = await onRecord(x, audit, input, decision);
      if (decisionId === undefined) return undefined; // the notification is dropped
      if (decision.effect !== 'allow') {
        session.log.warn({ method: m.method, rule: decision.rule, decisionId }, 'notification dropped by policy');
        return undefined;
      }
      x.authorized = mint(m.message, decision);
      return next();
    }
    let input = decisionInput(x, m);
    let decision: Decision = governed(m) ? policy.decide(input) : builtIn(`protocol/${m.action.kind}`, policy.version);
    if (m.action.kind === 'subscription') {
      // Updates of a resource reveal it: each one is decided as a subscription to it (resources/subscribe); the first one refused refuses the stream.
      for (const resource of m.action.resources) {
        const each: DecisionInput = { ...input, method: 'resources/subscribe', resource };
        const d = policy.decide(each);
        if (d.effect !== 'allow') {
          [input, decision] = [each, d];
          break;
        }
      }
    }
    const decisionId = await onRecord(x, audit, input, decision, m.id);
    if (decisionId === undefined) return auditOutage(m.id, x.decisionId!, 'the request was not forwarded');
    if (decision.effect === 'allow') {
      x.authorized = mint(m.message, decision);
      return next();
    }
    if (decision.effect !== 'approve' || !desk) return denial(m, decision, decisionId);
    const held = await desk.hold(x, m, input, decision, decisionId);
    if (held.kind === 'withdrawn') return undefined;
    if (held.kind === 'answered') return held.reply;
    // Approved: what goes is exactly what was held (the same parsed message, its digest bound into
    // the approval). A bundle changed meanwhile decides again first: a new deny still holds.
    const approval = held.approval;
    if (digestArgs(input.args ?? null) !== approval.argsDigest) throw new Error(`approval ${approval.id} does not match the held request`);
    const now = points.current();
    const again = now.version === decision.bundleVersion ? decision : now.decide({ ...input, time: new Date() });
    const releaseId = randomUUID();
    try {
      await audit.append('approval.released', x.identity.sub, { approvalId: approval.id, decisionId, releaseId, sessionId: session.id, requestId: recordedText(m.id), bundleVersion: now.version, effect: again.effect, rule: again.rule, ...(approval.status === 'approved' && approval.decidedBy && { approvedBy: approval.decidedBy }) });
    } catch (e) {
      session.log.error({ err: (e as Error).message, decisionId }, 'audit write failed; approved request not forwarded');
      return auditOutage(m.id, decisionId, 'the request was not forwarded');
    }
    if (again.effect === 'deny') return denial(m, again, releaseId);
    x.authorized = mint(m.message, again.effect === 'allow' ? again : decision);
    return next();
  };
}

/**
 * Toward the client: a request the upstream sends to the client (sampling, elicitation, roots,
 * tasks) is decided like a client's, by the rules' `serverRequests`, for the session's identity,
 * with its params as `args`; ping is allowed built-in. Audited either way, before anything moves.
 * Refused, it never reaches the client, and its error is the reply, which the outermost toClient
 * stage answers to the upstream (so the upstream does not wait). Server notifications pass.
 */
export function decideServerRequest(points: PolicyPoint, audit: AuditSink): Stage {
  return async (x, next) => {
    const m = x.msg!;
    if (m.type !== 'request') return next();
    const session = x.session;
    const policy = (x.policy = points.current());
    const input: DecisionInput = { identity: x.identity, server: session.server, method: m.method, from: 'server', args: m.params ?? {}, time: new Date() };
    const decision = m.action.kind === 'housekeeping' ? builtIn('protocol/housekeeping', policy.version) : policy.decide(input);
    const decisionId = await onRecord(x, audit, input, decision, m.id);
    if (decisionId === undefined) return auditOutage(m.id, x.decisionId!, 'the request was not passed to the client');
    if (decision.effect === 'allow') return next();
    session.log.warn({ method: m.method, rule: decision.rule, decisionId }, 'server request refused by policy');
    const why = decision.effect === 'approve' ? 'approval required, and approvals are not enabled on this gateway' : decision.message;
    return errorResponse(m.id, FORBIDDEN_BY_POLICY, 'Forbidden by policy', { rule: decision.rule, decisionId, ...(why && { message: why }) });
  };
}

/**
 * A 2026-07-28 upstream asks the client things inside a result (input-required, SEP-2322): each
 * request in `inputRequests` is decided and audited as if the server had sent it, by the same
 * serverRequests rules. One that is not allowed turns the whole result into a refusal, so the
 * client is never asked what policy forbids; the requestState stays untouched otherwise.
 */
export function decideInputRequests(points: PolicyPoint, audit: AuditSink): Stage {
  return async (x, next) => {
    const reply = await next();
    const m = x.msg;
    const result = reply && 'result' in reply ? (reply.result as Record<string, unknown>) : undefined;
    if (m?.type !== 'request' || result?.resultType !== 'input_required') return reply;
    const requests = result.inputRequests;
    if (requests === undefined) return reply;
    if (typeof requests !== 'object' || requests === null || Array.isArray(requests)) return errorResponse(m.id, INTERNAL_ERROR, 'the upstream sent an input-required result whose inputRequests is not an object');
    const policy = x.policy ?? points.current();
    for (const [key, r] of Object.entries(requests as Record<string, { method?: unknown; params?: unknown }>)) {
      const method = typeof r?.method === 'string' ? r.method : '';
      const input: DecisionInput = { identity: x.identity, server: x.session.server, method, from: 'server', args: (r?.params as Record<string, unknown> | undefined) ?? {}, time: new Date() };
      const decision = method ? policy.decide(input) : { effect: 'deny' as const, rule: '(malformed input request)', bundleVersion: policy.version };
      const decisionId = randomUUID();
      try {
        await audit.append('decision', x.identity.sub, decisionAuditData(input, decision, { decisionId, sessionId: x.session.id, requestId: m.id }));
      } catch (e) {
        x.session.log.error({ err: (e as Error).message, decisionId, method }, 'audit write failed; input-required result refused');
        return auditOutage(m.id, decisionId, 'the server asked the client for input, and that could not be recorded');
      }
      if (decision.effect !== 'allow') {
        x.session.log.warn({ method, key, rule: decision.rule, decisionId }, 'input request refused by policy');
        return errorResponse(m.id, FORBIDDEN_BY_POLICY, `Forbidden by policy: the server asked the client for ${method || 'something malformed'}`, { rule: decision.rule, decisionId, inputRequest: key });
      }
    }
    return reply;
  };
}

/**
 * The gateway's own error answer to a server's request (a refusal, an audit outage, a failed
 * stage), for the upstream. Only an error response with the request's own id qualifies, so it
 * carries nothing the client sent.
 */
export function answerForUpstream(x: Exchange, reply: JSONRPCMessage): Authorized | undefined {
  const m = x.msg;
  const id = m?.type === 'request' ? m.id : (x.raw as { id?: unknown } | null)?.id;
  if (!('error' in reply) || reply.id !== id) return undefined;
  const decision = x.decision && x.decision.effect !== 'allow' ? x.decision : { effect: 'deny' as const, rule: '(gateway error)', bundleVersion: x.policy?.version ?? '' };
  return mint(reply, decision);
}

/**
 * The gateway's own answer to a server's request on a connection it shares among sessions, when
 * no session may take the request (servers with share: credential): an error, or the empty
 * result of a ping. It carries nothing any client sent.
 */
export function gatewayAnswer(id: RequestId, outcome: { result: Record<string, never> } | { error: { code: number; message: string } }): Authorized {
  const answer = 'error' in outcome ? { jsonrpc: '2.0' as const, id, error: { code: outcome.error.code, message: outcome.error.message } } : { jsonrpc: '2.0' as const, id, result: {} };
  return mint(answer as JSONRPCMessage, { effect: 'error' in outcome ? 'deny' : 'allow', rule: '(gateway: shared upstream)', bundleVersion: '' });
}

/**
 * A message the gateway sends an upstream on its own behalf, for no one client (the initialize
 * and initialized of a connection its sessions share): allowed built-in and recorded like any
 * decision, durable before it is sent, then Authorized. Rejects when the record cannot be written.
 */
export async function gatewayMessage(points: PolicyPoint, audit: AuditSink, identity: Identity, server: string, message: JSONRPCMessage): Promise<Authorized> {
  const m = message as { id?: RequestId; method: string };
  const decision = builtIn('protocol/gateway', points.current().version);
  const input: DecisionInput = { identity, server, method: m.method, time: new Date() };
  await audit.append('decision', identity.sub, decisionAuditData(input, decision, { decisionId: randomUUID(), requestId: m.id }));
  return mint(message, decision);
}

/**
 * Puts a decision on the exchange and on the record. Durable before anything moves: a decision
 * without its record is no decision, so undefined (the audit log failed; the caller refuses or
 * drops the message, fail closed) or the record's decisionId.
 */
async function onRecord(x: Exchange, audit: AuditSink, input: DecisionInput, decision: Decision, requestId?: RequestId): Promise<string | undefined> {
  const decisionId = randomUUID();
  x.decision = decision;
  x.decisionId = decisionId;
  try {
    await audit.append('decision', x.identity.sub, decisionAuditData(input, decision, { decisionId, sessionId: x.session.id, requestId }));
    return decisionId;
  } catch (e) {
    x.session.log.error({ err: (e as Error).message, decisionId, method: input.method }, 'audit write failed; message refused');
    return undefined;
  }
}

/** An outage, not a policy answer: the caller may retry; the store's own error stays in the log. */
function auditOutage(id: RequestId, decisionId: string, what: string): Reply {
  return errorResponse(id, INTERNAL_ERROR, `Audit log unavailable: ${what} (PCL_AUDIT_WRITE_FAILED)`, { code: 'PCL_AUDIT_WRITE_FAILED', decisionId, retryable: true });
}

/** Protocol plumbing (initialize, ping, list methods…) is allowed built-in; everything else is policy's. */
function governed(m: Extract<Classified, { type: 'request' }>): boolean {
  return m.action.kind !== 'housekeeping' && m.action.kind !== 'list' && m.action.kind !== 'subscription';
}

/** What policy decides on (and what the audit record describes). */
function decisionInput(x: Exchange, m: Extract<Classified, { type: 'request' }>): DecisionInput {
  const base = { identity: x.identity, server: x.session.server, method: m.method, time: new Date() };
  const a = m.action;
  switch (a.kind) {
    case 'tool':
      return { ...base, tool: a.tool, args: a.args };
    case 'resource':
      return { ...base, resource: a.resource };
    case 'prompt':
      return { ...base, prompt: a.prompt, args: a.args };
    case 'completion':
      return { ...base, prompt: a.prompt, resource: a.resource, args: a.args };
    default:
      return base;
  }
}

/** Where a denied tool result names its decision, so the agent's transcript ties to the audit record. */
export const DECISION_META = 'portcullis.dev/decision';

/**
 * SPEC 3: a denied tools/call is a tool error the agent can read (the rule and its message);
 * anything else is -32003. Both carry the decisionId of the audit record.
 */
export function denial(m: Extract<Classified, { type: 'request' }>, decision: Decision, decisionId: string): Reply {
  const message = decision.message ? `: ${decision.message}` : '';
  const why =
    decision.effect === 'approve'
      ? `Approval required by policy rule ${decision.rule}${message}. Approvals are not enabled on this gateway, so the call was refused.`
      : `Denied by policy rule ${decision.rule}${message}`;
  if (m.method === 'tools/call') {
    const meta = { [DECISION_META]: { decisionId, rule: decision.rule, effect: decision.effect } };
    return { jsonrpc: '2.0', id: m.id, result: { content: [{ type: 'text', text: why }], isError: true, _meta: meta } } as JSONRPCMessage;
  }
  // A client that shows only the error's message still tells its user which rule refused and why.
  return errorResponse(m.id, FORBIDDEN_BY_POLICY, `Forbidden by policy: ${why}`, { rule: decision.rule, decisionId, ...(decision.effect === 'approve' ? { message: why } : decision.message && { message: decision.message }) });
}
