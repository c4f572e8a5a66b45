// The Streamable HTTP front: POST|GET|DELETE /mcp/<server>. Requests pass the HTTP checks,
// authentication and the session lookup here; the SDK's server transport then handles the
// protocol (SSE streams, Mcp-Session-Id, MCP-Protocol-Version, resumption) and hands each
// message to the session's pipeline.
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { isJsonContentType } from '@modelcontextprotocol/sdk/shared/mediaType.js';
import { InitializeRequestSchema, JSONRPCMessageSchema, SUPPORTED_PROTOCOL_VERSIONS, type JSONRPCMessage, type MessageExtraInfo, type RequestId } from '@modelcontextprotocol/sdk/types.js';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Identity } from '../auth/identity.js';
import { classify, INVALID_PARAMS, INVALID_REQUEST, ShapeError, UPSTREAM_ERROR } from '../gateway/classify.js';
import type { Gateway } from '../gateway/gateway.js';
import { duplicateId, requestId, type Session } from '../gateway/session.js';
import { BoundedEventStore } from './event-store.js';
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
 * What the SDK's transport would refuse in a POST, refused here first with the same status. For an
 * initialize, all of it, before a session (an upstream process, an audit record) exists. In an
 * open session, the header checks and a second initialize (which the transport would pass on as a
 * request when malformed); the schema check is left to the transport there, not paid twice per
 * message: a request it refuses frees its id (inSession).
 */
function transportChecks(req: IncomingMessage, body: unknown, initializing: boolean): void {
  const id = requestId(body) ?? null;
  const accept = req.headers.accept ?? '';
  // A list, so a substring check, as the transport does.
  if (!accept.includes('application/json') || !accept.includes('text/event-stream')) {
    throw new HttpRefusal(406, INVALID_REQUEST, 'Not Acceptable: the Accept header must list both application/json and text/event-stream', {}, id);
  }
  if (!isJsonContentType(req.headers['content-type'])) throw new HttpRefusal(415, INVALID_REQUEST, 'Content-Type must be application/json', {}, id);
  if (initializing) {
    const message = JSONRPCMessageSchema.safeParse(body);
    if (!message.success) throw new HttpRefusal(400, INVALID_REQUEST, `not a valid JSON-RPC message: ${firstIssue(message.error)}`, {}, id);
    const init = InitializeRequestSchema.safeParse(body);
    if (!init.success) throw new HttpRefusal(400, INVALID_PARAMS, `initialize: ${firstIssue(init.error)}`, {}, id);
    return;
  }
  if ((body as { method?: unknown }).method === 'initialize') throw new HttpRefusal(400, INVALID_REQUEST, 'this session is already initialized: send initialize without Mcp-Session-Id to start a new one', {}, id);
  const version = req.headers['mcp-protocol-version'];
  if (typeof version === 'string' && !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
    throw new HttpRefusal(400, INVALID_REQUEST, `unsupported MCP-Protocol-Version "${version}" (supported: ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')})`, {}, id);
  }
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
 * One HTTP request of an open session. A request takes its id before the transport sees it (two
 * alike in flight would cross their answers: the transport routes replies by id), and carries its
 * own identity to the pipeline through the transport's per-request authInfo.
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
    // Refused by the transport after all: the id was never used.
    if (admission && !admission.delivered) admission.release();
  }
}

function isInitialize(body: unknown): boolean {
  return (body as { method?: unknown }).method === 'initialize' && 'id' in (body as object);
}

/**
 * The downstream side of one HTTP session. A server message that belongs to no client request
 * (roots/list right after initialized, list_changed…) goes on the client's GET stream; until the
 * client has opened it, such messages wait here (bounded), since the SDK transport would drop
 * them: a client that opens its stream a moment after `initialized` must not lose them.
 */
export class HttpChannel {
  readonly transport: StreamableHTTPServerTransport;
  private waiting: JSONRPCMessage[] = [];
  constructor(sessionId: string) {
    this.transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => sessionId,
      eventStore: new BoundedEventStore(),
    });
  }

  send(message: JSONRPCMessage, relatedRequestId?: RequestId): Promise<void> {
    if (relatedRequestId === undefined && !this.standaloneOpen()) {
      if (this.waiting.push(message) > MAX_WAITING) this.waiting.shift();
      return Promise.resolve();
    }
    return this.transport.send(message, { relatedRequestId });
  }

  /** A cancelled request's SSE stream would otherwise stay open until the session ends. */
  cancelled(id: RequestId): void {
    this.transport.closeSSEStream(id);
  }

  /**
   * Serves one HTTP request of this session; after a GET, delivers what waited for its stream.
   * A GET stream outlives no token: it closes when the identity that opened it expires, and the
   * client must come back with a valid one.
   */
  async handle(req: IncomingMessage, res: ServerResponse, body: unknown, identity: Identity): Promise<void> {
    // The transport hands each message on with its own request's authInfo (see identityOf).
    const auth: AuthInfo = { token: '', clientId: '', scopes: [], extra: { [IDENTITY]: identity } };
    const handled = this.transport.handleRequest(Object.assign(req, { auth }), res, body);
    const expiresAt = identity.expiresAt;
    if (req.method === 'GET') {
      if (this.waiting.length) void this.deliverWaiting();
      if (expiresAt !== undefined) {
        const timer = setTimeout(() => this.transport.closeStandaloneSSEStream(), Math.min(Math.max(0, expiresAt - Date.now()), 2 ** 31 - 1)).unref();
        res.once('close', () => clearTimeout(timer));
      }
    }
    await handled;
  }

  private async deliverWaiting(): Promise<void> {
    for (let i = 0; i < 200 && !this.standaloneOpen(); i++) await new Promise((r) => setTimeout(r, 5));
    const messages = this.waiting;
    this.waiting = [];
    for (const m of messages) await this.send(m);
  }

  /** Whether the client's GET stream is open. The SDK keeps it under this id (pinned SDK 1.32.x). */
  private standaloneOpen(): boolean {
    const web = (this.transport as unknown as { _webStandardTransport?: { _streamMapping?: Map<string, unknown> } })._webStandardTransport;
    return web?._streamMapping?.has('_GET_stream') ?? true;
  }

  close(): Promise<void> {
    return this.transport.close();
  }
}

const MAX_WAITING = 1000;

const IDENTITY = 'portcullis.identity';

/** The verified identity of the HTTP request that carried a message (set in HttpChannel.handle). */
function identityOf(extra: MessageExtraInfo | undefined): Identity | undefined {
  return extra?.authInfo?.extra?.[IDENTITY] as Identity | undefined;
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
  channel.transport.onmessage = (message, extra) => {
    const from = identityOf(extra);
    // Never without one: every request reaches the transport through handle(). Fail closed if not.
    if (!from) return session.log.error('a message arrived without its identity; dropped');
    void session.fromClient(message, from);
  };
  channel.transport.onclose = () => session.end('client closed the session');
  await inSession(session, req, res, body, identity);
  // Should the SDK transport still refuse the initialize (everything it checks was checked
  // before), no client could use this session: it must not keep its upstream until idle.
  if (!channel.transport.sessionId) session.end('initialize refused');
}
