// The data path, in order. Messages from the client run through `toUpstream`, outermost first;
// the reply comes back through the same stages in reverse. Messages the upstream sends on its
// own (notifications, sampling/elicitation/roots requests) run through `toClient`; there, the
// reply to a request is the gateway's refusal of it, answered to the upstream.
import { UriTemplate } from '@modelcontextprotocol/sdk/shared/uriTemplate.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { recordedText } from '../audit/chain.js';
import type { Recorder } from '../audit/recorder.js';
import { methodLabel, type Metrics } from '../observability/metrics.js';
import type { Masker } from '../masking/mask.js';
import { fitToSchema } from '../masking/output-schema.js';
import { headerProblem } from '../protocol/mcp-headers.js';
import type { MaskTarget } from '../masking/select.js';
import type { Session } from './session.js';
import { classify, errorResponse, INTERNAL_ERROR, ShapeError, type Action, type Classified } from './classify.js';
import { answerForUpstream, decideInputRequests, decideServerRequest, decideStage, type AuditSink, type PolicyPoint, type PolicyView } from './decide.js';
import { compose, type Exchange, type Reply, type Stage } from './pipeline.js';
import type { ApprovalDesk } from './approvals.js';

export interface PipelineDeps {
  metrics: Metrics;
  policy: PolicyPoint;
  audit: AuditSink;
  recorder?: Recorder;
  approvals?: ApprovalDesk;
  log: Logger;
}

export function buildPipelines(deps: PipelineDeps): { toUpstream: (x: Exchange) => Promise<Reply>; toClient: (x: Exchange) => Promise<Reply> } {
  return {
    toUpstream: compose([failClosed, observed(deps.log, deps.metrics), ...recorded(deps.recorder, deps.policy), classifyStage(true), filterLists, filterCompletions, masking(deps.policy), decideStage(deps.policy, deps.audit, deps.approvals), decideInputRequests(deps.policy, deps.audit), forward]),
    toClient: compose([answerUpstream, failClosed, observed(deps.log, deps.metrics), ...recorded(deps.recorder, deps.policy), classifyStage(false), decideServerRequest(deps.policy, deps.audit), masking(deps.policy), deliver]),
  };
}

/**
 * An error inside any stage is a refusal, never a pass: the sender of a request gets an error
 * (the client; toward the client, the upstream), nothing is forwarded by it.
 */
const failClosed: Stage = async (x, next) => {
  try {
    return await next();
  } catch (e) {
    x.session.log.error({ err: (e as Error).message, stack: (e as Error).stack }, 'stage failed; message refused');
    const id = x.msg?.type === 'request' ? x.msg.id : undefined;
    return id === undefined ? undefined : errorResponse(id, INTERNAL_ERROR, `gateway error: ${(e as Error).message}`);
  }
};

/**
 * Outermost toward the client: the reply to a server's request is the gateway's refusal of it
 * (denied, unaudited, failed). It goes to the upstream, which would otherwise wait for an answer
 * the client will never give, since the client never saw the request.
 */
const answerUpstream: Stage = async (x, next) => {
  const reply = await next();
  const answer = reply && answerForUpstream(x, reply);
  if (answer) await x.session.upstream?.send(answer);
  return reply;
};

/** One structured log line and the metrics per request: who, what, the decision and how long it took. */
function observed(log: Logger, metrics: Metrics): Stage {
  return async (x, next) => {
    const reply = await next();
    const m = x.msg;
    if (m?.type !== 'request') return reply;
    const server = x.session.server;
    metrics.requests.inc({ server, method: methodLabel(m.method), effect: x.decision?.effect ?? (x.direction === 'toClient' ? 'server-request' : 'refused') });
    if (x.direction === 'toUpstream') metrics.latency.observe({ server }, (performance.now() - x.startedAt) / 1000);
    if (log.isLevelEnabled('info')) {
      const a = m.action;
      x.session.log.info(
        {
          dir: x.direction,
          method: recordedText(m.method),
          id: recordedText(m.id),
          ...(a.kind === 'tool' && { tool: recordedText(a.tool) }),
          ...(a.kind === 'resource' && { resource: recordedText(a.resource) }),
          ...(a.kind === 'prompt' && { prompt: recordedText(a.prompt) }),
          ...(x.decision && { effect: x.decision.effect, rule: x.decision.rule, decisionId: x.decisionId }),
          ...(reply && 'error' in reply && { error: reply.error.code }),
          ms: Math.round((performance.now() - x.startedAt) * 1000) / 1000,
        },
        'request',
      );
    }
    return reply;
  };
}

/**
 * Session recordings: every message of the session, both directions, as the client sent and saw
 * it: masked (the masking stage says when the masked message is known, before anything moves on,
 * so the recording keeps message order), and outside every stage that rewrites a reply. A message
 * refused before it could be classified is recorded under every mask of its server. The reply
 * carries the decision that governed its request, so a replay shows what was decided. Recording
 * never waits on the store.
 */
function recorded(recorder: Recorder | undefined, policy: PolicyPoint): Stage[] {
  if (!recorder) return [];
  return [
    async (x, next) => {
      const s = x.session;
      const decided = () => (x.decision ? { effect: x.decision.effect, rule: x.decision.rule } : undefined);
      const ts = Date.now();
      let done = false;
      x.recordNow = () => {
        // After its end a session's recording is sealed: what reaches it then reaches no client.
        if (done || s.isEnded) return;
        done = true;
        let message: unknown = x.recordable;
        if (message === undefined) {
          try {
            message = x.raw === null || typeof x.raw !== 'object' ? x.raw : ((x.policy ?? policy.current()).masker(x.identity, s.server, undefined)?.envelope(x.raw) ?? x.raw);
          } catch (e) {
            message = { unrecordable: `masking failed: ${(e as Error).message}` }; // never the message in clear
          }
        }
        const toClient = x.direction === 'toClient';
        recorder.record({ sessionId: s.id, server: s.server, identity: x.identity, ts, direction: toClient ? 'toClient' : 'fromClient', message, decision: toClient ? decided() : undefined });
      };
      let reply: Reply;
      try {
        reply = await next();
      } finally {
        // Toward the client, only what it saw: a server message refused (malformed, denied) is not,
        // and the refusal went to the upstream; the audit log holds the decision.
        if (x.direction === 'toUpstream' || (!reply && x.msg)) x.recordNow();
      }
      if (x.direction === 'toClient') return reply;
      if (reply && !s.isEnded) recorder.record({ sessionId: s.id, server: s.server, identity: x.identity, ts: undefined, direction: 'toClient', message: reply, decision: decided() });
      return reply;
    },
  ];
}

// The stages below that act on few messages are not async functions: every other message passes
// straight on, without a promise and its ticks of its own.

function classifyStage(fromClient: boolean): Stage {
  return (x, next) => {
    try {
      x.msg = classify(x.raw, fromClient);
    } catch (e) {
      if (!(e instanceof ShapeError)) return Promise.reject(e);
      x.session.log.warn({ err: recordedText(e.message) }, 'malformed message refused');
      // A malformed request from the upstream is answered to the upstream (see answerUpstream).
      return Promise.resolve(e.id === null ? undefined : errorResponse(e.id, e.code, e.message));
    }
    return next();
  };
}

const LIST_ITEMS = {
  tools: { field: 'tools', kind: 'tool', key: 'name' },
  resources: { field: 'resources', kind: 'resource', key: 'uri' },
  resourceTemplates: { field: 'resourceTemplates', kind: 'resource', key: 'uriTemplate' },
  prompts: { field: 'prompts', kind: 'prompt', key: 'name' },
} as const;

/**
 * A caller sees only what some allow or approve rule could let it use, judged by the same policy
 * version that decided the list request, and no tool whose x-mcp-header annotations are invalid.
 * Items are removed, never rewritten; nextCursor stays, so pagination keeps working (a page may
 * come back shorter).
 */
const filterLists: Stage = (x, next) => (x.msg!.type === 'request' && x.msg!.action.kind === 'list' ? filterList(x, next) : next());

async function filterList(x: Exchange, next: () => Promise<Reply>): Promise<Reply> {
  const reply = await next();
  const m = x.msg!;
  if (m.type !== 'request' || m.action.kind !== 'list' || !reply || !('result' in reply) || !x.policy) return reply;
  const spec = LIST_ITEMS[m.action.list];
  const items = (reply.result as Record<string, unknown>)[spec.field];
  if (!Array.isArray(items)) return reply;
  const { identity } = x;
  const { server } = x.session;
  const shown = items.filter((item) => {
    const name = (item as Record<string, unknown> | null)?.[spec.key];
    if (typeof name !== 'string' || !x.policy!.visible(identity, server, spec.kind, name)) return false;
    if (spec.kind !== 'tool') return true;
    // Whatever the upstream's transport: a tool a 2026 client could not call over HTTP is listed to no one (as the HTTP connector does).
    const problem = headerProblem((item as { inputSchema?: unknown }).inputSchema);
    if (problem !== undefined) reportInvalidTool(x.session, name, problem);
    return problem === undefined;
  });
  if (shown.length === items.length) return reply;
  return { ...reply, result: { ...reply.result, [spec.field]: shown } } as JSONRPCMessage;
}

/** Invalid tool definitions already reported, by upstream, tool and problem: once per process, not per session or listing. */
const reported = new Set<string>();
const MAX_REPORTED = 10_000;

function reportInvalidTool(session: Session, tool: string, problem: string): void {
  const key = `${session.server}\0${tool}\0${problem}`;
  if (reported.has(key) || reported.size >= MAX_REPORTED) return;
  reported.add(key);
  session.log.warn({ tool, problem }, 'upstream tool left out of tools/list: its x-mcp-header annotations are invalid, so a 2026-07-28 client could not call it over HTTP');
}

/** Server messages that carry data for the client (SPEC 4): masked under every mask of the server. */
const DATA_FROM_SERVER = new Set(['notifications/message', 'notifications/progress', 'sampling/createMessage']);

/**
 * Masking (SPEC 4, docs/masking.md). Toward the upstream it takes the policy version that will
 * decide (so one version chooses both), masks the client's message for the recording only (the
 * upstream receives it unchanged), and masks the reply the upstream returns. Toward the client it
 * masks what the server sends on its own. What is delivered and recorded is the masked message.
 */
function masking(points: PolicyPoint): Stage {
  return async (x, next) => {
    const m = x.msg!;
    const s = x.session;
    const policy = (x.policy ??= points.current());
    if (x.direction === 'toClient') {
      const method = m.type === 'response' ? undefined : m.method;
      const masker = method && DATA_FROM_SERVER.has(method) ? policy.masker(x.identity, s.server, undefined) : undefined;
      if (masker && m.type !== 'response' && m.params) {
        const params = masker.envelope(m.params) as Record<string, unknown>;
        if (params !== m.params) x.msg = { ...m, params, message: { ...m.message, params } as JSONRPCMessage };
      }
      x.recordable = x.msg!.message;
      x.recordNow?.();
      return next();
    }
    const target = m.type === 'request' ? maskTarget(m.action) : undefined;
    const masker = m.type === 'request' ? (target ? policy.masker(x.identity, s.server, target) : undefined) : policy.masker(x.identity, s.server, undefined);
    x.recordable = masker ? maskClientMessage(m, masker) : m.message;
    x.recordNow?.();
    const reply = await next();
    if (m.type === 'request' && m.action.kind === 'list' && m.action.list === 'tools' && reply && 'result' in reply) rememberOutputSchemas(s, reply.result);
    // Only what came from the upstream: the gateway's own refusals carry nothing to mask.
    if (!masker || !reply || x.decision?.effect !== 'allow') return reply;
    if ('result' in reply) {
      let result = masker.envelope(reply.result) as Record<string, unknown>;
      if (result === reply.result) return reply;
      const schema = target?.kind === 'tool' ? outputSchemas.get(s)?.get(target.name) : undefined;
      if (schema && 'structuredContent' in result) result = { ...result, structuredContent: fitToSchema(reply.result.structuredContent, result.structuredContent, schema) };
      return { ...reply, result } as JSONRPCMessage;
    }
    if ('error' in reply) {
      const error = masker.envelope(reply.error);
      return error === reply.error ? reply : ({ ...reply, error } as JSONRPCMessage);
    }
    return reply;
  };
}

/** Each session's tools' outputSchemas, from its tools/list replies, so masked structuredContent keeps fitting them. */
const outputSchemas = new WeakMap<Session, Map<string, unknown>>();

function rememberOutputSchemas(s: Session, result: Record<string, unknown>): void {
  const tools = result.tools;
  if (!Array.isArray(tools)) return;
  let known = outputSchemas.get(s);
  if (!known) outputSchemas.set(s, (known = new Map()));
  for (const t of tools as Array<{ name?: unknown; outputSchema?: unknown }>) if (typeof t?.name === 'string' && t.outputSchema !== undefined && known.size < 10_000) known.set(t.name, t.outputSchema);
}

function maskTarget(a: Action): MaskTarget {
  if (a.kind === 'tool') return { kind: 'tool', name: a.tool };
  if (a.kind === 'resource') return { kind: 'resource', name: a.resource };
  if (a.kind === 'prompt') return { kind: 'prompt', name: a.prompt };
  if (a.kind === 'completion') return a.prompt !== undefined ? { kind: 'prompt', name: a.prompt } : a.resource !== undefined ? { kind: 'resource', name: a.resource } : undefined;
  return undefined;
}

/** The client's message as the recording stores it: arguments (and a client's answers) masked. */
function maskClientMessage(m: Classified, masker: Masker): unknown {
  const raw = m.message as unknown as Record<string, unknown>;
  if (m.type === 'response') {
    const result = 'result' in raw ? masker.envelope(raw.result) : undefined;
    return result === undefined || result === raw.result ? raw : { ...raw, result };
  }
  const p = m.params;
  if (!p) return raw;
  // tools/call and prompts/get carry `arguments`, completion/complete an `argument`.
  const key = 'arguments' in p ? 'arguments' : 'argument' in p ? 'argument' : undefined;
  const masked = key ? masker.data(p[key]) : m.type === 'notification' ? masker.data(p) : p;
  if (masked === (key ? p[key] : p)) return raw;
  return { ...raw, params: key ? { ...p, [key]: masked } : masked };
}


/**
 * Completions reveal nothing that lists hide. A value is kept only when the request it would
 * complete could be made: for a ref/resource, the template expanded (the SDK's UriTemplate) with
 * the value and the context arguments is a URI the caller may read; for a ref/prompt, prompts/get
 * with those arguments is not denied. Decided by the same policy version as the completion
 * request. Values are removed, never rewritten; `total` goes when any was, since it would count
 * the hidden ones.
 */
const filterCompletions: Stage = (x, next) => (x.msg!.type === 'request' && x.msg!.action.kind === 'completion' ? filterCompletion(x, next) : next());

async function filterCompletion(x: Exchange, next: () => Promise<Reply>): Promise<Reply> {
  const reply = await next();
  const m = x.msg!;
  if (m.type !== 'request' || m.action.kind !== 'completion' || !reply || !('result' in reply) || !x.policy) return reply;
  const completion = (reply.result as Record<string, unknown>).completion as Record<string, unknown> | undefined;
  if (!Array.isArray(completion?.values)) return reply;
  const usable = completionUsable(x.policy, x, m.action);
  const values = completion.values.filter((v): v is string => typeof v === 'string' && usable(v));
  if (values.length === completion.values.length) return reply;
  const { total: _hidden, ...rest } = completion;
  return { ...reply, result: { ...reply.result, completion: { ...rest, values } } } as JSONRPCMessage;
}

function completionUsable(policy: PolicyView, x: Exchange, a: Extract<Action, { kind: 'completion' }>): (value: string) => boolean {
  const base = { identity: x.identity, server: x.session.server, time: new Date() };
  const args = (value: string) => ({ ...a.context, [a.argument]: value });
  if (a.prompt !== undefined) return (value) => policy.decide({ ...base, method: 'prompts/get', prompt: a.prompt, args: args(value) }).effect !== 'deny';
  const template = new UriTemplate(a.resource!); // classify has checked that it parses
  return (value) => {
    let resource: string;
    try {
      resource = template.expand(args(value));
    } catch {
      return false; // a value the SDK refuses to expand (over its length limits)
    }
    return policy.decide({ ...base, method: 'resources/read', resource }).effect !== 'deny';
  };
}

/** Innermost stage toward the upstream: sends the Authorized message and waits for its reply. */
const forward: Stage = async (x) => {
  const m = x.msg!;
  const s = x.session;
  const authorized = x.authorized;
  const upstream = s.upstream;
  if (!authorized) throw new Error('forward reached without a decision');
  if (!upstream) throw new Error('session has no upstream');
  await x.turnReady;
  if (m.type !== 'request') {
    try {
      await upstream.send(authorized);
    } finally {
      x.releaseTurn();
    }
    if (m.type === 'notification' && m.method === 'notifications/cancelled') {
      const requestId = m.params?.requestId;
      if (typeof requestId === 'string' || typeof requestId === 'number') s.cancelled(requestId);
    }
    return undefined;
  }
  const meta = m.params?._meta as { progressToken?: unknown } | undefined;
  const reply = s.expect(m.id, meta?.progressToken);
  upstream.send(authorized).catch((e: Error) => s.failed(m.id, e.message));
  x.releaseTurn();
  const answer = await reply;
  if (m.method === 'initialize' && answer && 'result' in answer) {
    const { protocolVersion, capabilities } = answer.result as { protocolVersion?: unknown; capabilities?: Record<string, unknown> };
    if (typeof protocolVersion === 'string') upstream.setProtocolVersion(protocolVersion);
    s.serverCapabilities = capabilities;
  }
  return answer;
};

/** Innermost stage toward the client: delivers a server-initiated message on the right stream. */
const deliver: Stage = async (x) => {
  const m = x.msg!;
  const s = x.session;
  // The client's answer may go up only for a request it was actually sent.
  if (m.type === 'request') s.rememberServerRequest(m.id);
  try {
    await s.sendToClient(m.message as JSONRPCMessage, s.relatedRequest(m.message));
  } catch (e) {
    if (m.type === 'request') s.takeServerRequest(m.id);
    throw e;
  }
  return undefined;
};
