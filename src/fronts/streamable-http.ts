// The Streamable HTTP front: POST|GET|DELETE /mcp/<server>. Requests pass the HTTP checks,
// authentication and the session lookup here; the session's HttpChannel then serves the protocol
// (SSE streams, Mcp-Session-Id, resumption) and hands each message to the session's pipeline.
import { isJsonContentType } from '@modelcontextprotocol/sdk/shared/mediaType.js';
import { InitializeRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Identity } from '../auth/identity.js';
import { classify, INVALID_PARAMS, INVALID_REQUEST, ShapeError, UPSTREAM_ERROR } from '../gateway/classify.js';
import type { Gateway } from '../gateway/gateway.js';
import { duplicateId, requestId, type Session } from '../gateway/session.js';
import { HttpChannel, refuseUnsupportedVersion } from './http-channel.js';
import { earlyCheck, HttpRefusal, readJsonBody, sendRefusal } from './http-request.js';
import { looksModern, modernVersion, serveStateless } from './stateless-http.js';

const SESSION_HEADER = 'mcp-session-id';

/** Host and Origin were checked for every route before this (gateway.ts). */
export function mcpHandler(gw: Gateway) {
  return async (req: IncomingMessage, res: ServerResponse, serverName: string): Promise<void> => {
    let id: unknown = null;
    try {
      // Authenticate first: an unauthenticated caller gets the same answer for a server that
      // exists and one that does not, so it cannot list the gateway's servers by probing.
      const identity = await gw.authenticate(req, res, serverName);
      if (!identity) return; // the authenticator answered (401 with how to log in)
      if (!Object.hasOwn(gw.config.servers, serverName)) throw new HttpRefusal(404, INVALID_REQUEST, `no server named "${serverName}" on this gateway`);
      const method = req.method ?? 'GET';
      if (method !== 'POST' && method !== 'GET' && method !== 'DELETE') throw new HttpRefusal(405, INVALID_REQUEST, `${method} is not supported on /mcp`, { allow: 'GET, POST, DELETE' });
      const body = method === 'POST' ? await readJsonBody(req, gw.config.limits) : undefined;
      // The body decides the era: a request that names 2026-07-28 in _meta is served on its own,
      // whatever session header it carries (2026-07-28 has clients ignore Mcp-Session-Id).
      if (method === 'POST' && looksModern(req, body)) {
        const version = modernVersion(req, body, requestId(body) ?? null);
        if (version !== undefined) return await serveStateless(gw, req, res, serverName, identity, body as Record<string, unknown>, version);
      }
      if (method === 'POST') id = earlyCheck(body);
      const sessionId = req.headers[SESSION_HEADER];
      if (typeof sessionId === 'string') {
        const session = gw.findSession(sessionId, serverName, identity);
        if (!session) throw new HttpRefusal(404, -32001, 'Session not found: start a new session with initialize');
        if (method === 'POST') transportChecks(req, body, false);
        return await inSession(session, req, res, body, identity);
      }
      if (method !== 'POST' || !isInitialize(body)) throw new HttpRefusal(400, INVALID_REQUEST, 'Mcp-Session-Id header is required (send initialize first)');
      // Everything the transport would refuse is refused before a session (an upstream process, an audit record) exists.
      transportChecks(req, body, true);
      await openSession(gw, req, res, serverName, identity, body);
    } catch (e) {
      if (e instanceof HttpRefusal) return sendRefusal(res, e, id);
      gw.log.error({ err: (e as Error).message, stack: (e as Error).stack }, 'HTTP front error');
      sendRefusal(res, new HttpRefusal(500, -32603, 'internal gateway error'), id);
    }
  };
}

/**
 * What a Streamable HTTP server refuses in a POST beyond the envelope (earlyCheck): the headers,
 * and for an initialize its params, before a session (an upstream process, an audit record)
 * exists; in an open session, a second initialize.
 */
function transportChecks(req: IncomingMessage, body: unknown, initializing: boolean): void {
  const id = requestId(body) ?? null;
  const accept = req.headers.accept ?? '';
  // A list, so a substring check.
  if (!accept.includes('application/json') || !accept.includes('text/event-stream')) {
    throw new HttpRefusal(406, INVALID_REQUEST, 'Not Acceptable: the Accept header must list both application/json and text/event-stream', {}, id);
  }
  if (!isJsonContentType(req.headers['content-type'])) throw new HttpRefusal(415, INVALID_REQUEST, 'Content-Type must be application/json', {}, id);
  if (initializing) {
    const init = InitializeRequestSchema.safeParse(body);
    if (!init.success) throw new HttpRefusal(400, INVALID_PARAMS, `initialize: ${firstIssue(init.error)}`, {}, id);
    return;
  }
  if ((body as { method?: unknown }).method === 'initialize') throw new HttpRefusal(400, INVALID_REQUEST, 'this session is already initialized: send initialize without Mcp-Session-Id to start a new one', {}, id);
  refuseUnsupportedVersion(req, id);
}

type Issue = { path: ReadonlyArray<PropertyKey>; message: string; code?: string; errors?: Issue[][] };

/** The first thing wrong, where: a union's own message says nothing, so its first branch's first issue is named. */
function firstIssue(error: { issues: ReadonlyArray<Issue> }): string {
  let issue = error.issues[0];
  const path: PropertyKey[] = [];
  while (issue) {
    path.push(...issue.path);
    const inner = issue.code === 'invalid_union' ? issue.errors?.[0]?.[0] : undefined;
    if (!inner) break;
    issue = inner;
  }
  return issue ? `${path.map(String).join('.') || 'message'}: ${issue.message}` : 'invalid';
}

/**
 * One HTTP request of an open session. A request takes its id before the channel sees it (two
 * alike in flight would cross their answers: the channel routes replies by id), and carries its
 * own identity to the pipeline (HttpChannel.onmessage).
 */
async function inSession(session: Session, req: IncomingMessage, res: ServerResponse, body: unknown, identity: Identity): Promise<void> {
  const id = req.method === 'POST' ? requestId(body) : undefined;
  const admission = id === undefined ? undefined : session.admit(id);
  if (id !== undefined && !admission) {
    session.log.warn({ id }, 'request id already in flight; refused');
    const refusal = duplicateId(id) as { error: { code: number; message: string } };
    throw new HttpRefusal(400, refusal.error.code, refusal.error.message, {}, id);
  }
  // A client that goes away before its answer (the POST's stream closed early) no longer waits:
  // a call held for approval is withdrawn, so nothing is forwarded later on its behalf.
  if (id !== undefined) res.once('close', () => !res.writableFinished && session.disconnected(id));
  try {
    await (session.channel as HttpChannel).handle(req, res, body, identity);
  } finally {
    // Refused by the channel after all: the id was never used.
    if (admission && !admission.delivered) admission.release();
  }
}

function isInitialize(body: unknown): boolean {
  return (body as { method?: unknown }).method === 'initialize' && 'id' in (body as object);
}

async function openSession(gw: Gateway, req: IncomingMessage, res: ServerResponse, server: string, identity: Identity, body: unknown): Promise<void> {
  const id = randomUUID();
  const channel = new HttpChannel(id);
  let session;
  try {
    session = await gw.openSession(id, server, identity, channel);
  } catch (e) {
    const status = (e as { status?: number }).status ?? 502;
    // 429: this caller's own sessions are the limit (limits.maxSessionsPerIdentity), not the upstream.
    throw new HttpRefusal(status, status === 429 ? INVALID_REQUEST : UPSTREAM_ERROR, (e as Error).message, status === 503 || status === 429 ? { 'retry-after': '5' } : {});
  }
  channel.onmessage = (message, from) => void session.fromClient(message, from);
  channel.onclose = () => session.end('client closed the session');
  try {
    await inSession(session, req, res, body, identity);
  } catch (e) {
    // No client could use a session whose initialize was refused: it must not keep its upstream until idle.
    session.end('initialize refused');
    throw e;
  }
}
