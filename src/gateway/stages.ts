// The data path, in order. Messages from the client run through `toUpstream`, outermost first;
// the reply comes back through the same stages in reverse. Messages the upstream sends on its
// own (notifications, sampling/elicitation/roots requests) run through `toClient`.
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import type { Recorder } from '../audit/recorder.js';
import { methodLabel, type Metrics } from '../observability/metrics.js';
import { classify, errorResponse, INTERNAL_ERROR, ShapeError } from './classify.js';
import { decideStage, type AuditSink, type PolicyPoint } from './decide.js';
import { compose, type Exchange, type Reply, type Stage } from './pipeline.js';

export interface PipelineDeps {
  metrics: Metrics;
  policy: PolicyPoint;
  audit: AuditSink;
  recorder?: Recorder;
  log: Logger;
}

export function buildPipelines(deps: PipelineDeps): { toUpstream: (x: Exchange) => Promise<Reply>; toClient: (x: Exchange) => Promise<Reply> } {
  return {
    toUpstream: compose([failClosed, observed(deps.log, deps.metrics), ...recorded(deps.recorder), classifyStage(true), filterLists, decideStage(deps.policy, deps.audit), forward]),
    toClient: compose([failClosed, observed(deps.log, deps.metrics), ...recorded(deps.recorder), classifyStage(false), deliver]),
  };
}

/** An error inside any stage is a refusal, never a pass: the client gets an error, nothing is forwarded by it. */
const failClosed: Stage = async (x, next) => {
  try {
    return await next();
  } catch (e) {
    x.session.log.error({ err: (e as Error).message, stack: (e as Error).stack }, 'stage failed; message refused');
    const id = x.msg?.type === 'request' ? x.msg.id : undefined;
    return id === undefined || x.direction === 'toClient' ? undefined : errorResponse(id, INTERNAL_ERROR, `gateway error: ${(e as Error).message}`);
  }
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
          method: m.method,
          id: m.id,
          ...(a.kind === 'tool' && { tool: a.tool }),
          ...(a.kind === 'resource' && { resource: a.resource }),
          ...(a.kind === 'prompt' && { prompt: a.prompt }),
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
 * it (outside every stage that rewrites a reply). The reply carries the decision that governed
 * its request, so a replay shows what was decided. Recording never waits on the store.
 */
function recorded(recorder: Recorder | undefined): Stage[] {
  if (!recorder) return [];
  return [
    async (x, next) => {
      const s = x.session;
      const base = { sessionId: s.id, server: s.server, identity: x.identity };
      // After its end a session's recording is sealed: what reaches it then reaches no client.
      if (!s.isEnded) recorder.record({ ...base, direction: x.direction === 'toUpstream' ? 'fromClient' : 'toClient', message: x.raw });
      const reply = await next();
      if (reply && !s.isEnded) recorder.record({ ...base, direction: 'toClient', message: reply, ...(x.decision && { decision: { effect: x.decision.effect, rule: x.decision.rule } }) });
      return reply;
    },
  ];
}

function classifyStage(fromClient: boolean): Stage {
  return async (x, next) => {
    try {
      x.msg = classify(x.raw, fromClient);
    } catch (e) {
      if (!(e instanceof ShapeError)) throw e;
      x.session.log.warn({ err: e.message }, 'malformed message refused');
      return e.id === null || !fromClient ? undefined : errorResponse(e.id, e.code, e.message);
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
 * version that decided the list request. Items are removed, never rewritten; nextCursor stays, so
 * pagination keeps working (a page may come back shorter).
 */
const filterLists: Stage = async (x, next) => {
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
    return typeof name === 'string' && x.policy!.visible(identity, server, spec.kind, name);
  });
  if (shown.length === items.length) return reply;
  return { ...reply, result: { ...reply.result, [spec.field]: shown } } as JSONRPCMessage;
};

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
  if (m.type === 'request') s.rememberServerRequest(m.id);
  await s.sendToClient(m.message as JSONRPCMessage, s.relatedRequest(m.message));
  return undefined;
};
