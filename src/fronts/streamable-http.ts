// The Streamable HTTP front: POST|GET|DELETE /mcp/<server>. Requests pass the HTTP checks,
// authentication and the session lookup here; the SDK's server transport then handles the
// protocol (SSE streams, Mcp-Session-Id, MCP-Protocol-Version, resumption) and hands each
// message to the session's pipeline.
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Identity } from '../auth/identity.js';
import { classify, INVALID_REQUEST, ShapeError, UPSTREAM_ERROR } from '../gateway/classify.js';
import type { Gateway } from '../gateway/gateway.js';
import { BoundedEventStore } from './event-store.js';
import { checkHostAndOrigin, HttpRefusal, readJsonBody, sendRefusal } from './http-request.js';

const SESSION_HEADER = 'mcp-session-id';

export function mcpHandler(gw: Gateway, boundToLoopback: boolean) {
  return async (req: IncomingMessage, res: ServerResponse, serverName: string): Promise<void> => {
    let id: unknown = null;
    try {
      checkHostAndOrigin(req, gw.config.listen, boundToLoopback);
      if (!Object.hasOwn(gw.config.servers, serverName)) throw new HttpRefusal(404, INVALID_REQUEST, `no server named "${serverName}" on this gateway`);
      const identity = await gw.authenticate(req, res, serverName);
      if (!identity) return; // the authenticator answered (401 with how to log in)
      const method = req.method ?? 'GET';
      if (method !== 'POST' && method !== 'GET' && method !== 'DELETE') throw new HttpRefusal(405, INVALID_REQUEST, `${method} is not supported on /mcp`, { allow: 'GET, POST, DELETE' });
      const body = method === 'POST' ? await readJsonBody(req, gw.config.limits) : undefined;
      if (method === 'POST') id = earlyCheck(body);
      const sessionId = req.headers[SESSION_HEADER];
      if (typeof sessionId === 'string') {
        const session = gw.findSession(sessionId, serverName, identity);
        if (!session) throw new HttpRefusal(404, -32001, 'Session not found: start a new session with initialize');
        // Same principal, maybe a refreshed token: its groups and claims are the ones in force now
        // (a group removed at the provider must stop counting in an open session).
        session.identity = identity;
        return await (session.channel as HttpChannel).handle(req, res, body, identity.expiresAt);
      }
      if (method !== 'POST' || !isInitialize(body)) throw new HttpRefusal(400, INVALID_REQUEST, 'Mcp-Session-Id header is required (send initialize first)');
      await openSession(gw, req, res, serverName, identity, body);
    } catch (e) {
      if (e instanceof HttpRefusal) return sendRefusal(res, e, id);
      gw.log.error({ err: (e as Error).message, stack: (e as Error).stack }, 'HTTP front error');
      sendRefusal(res, new HttpRefusal(500, -32603, 'internal gateway error'), id);
    }
  };
}

/** Refuses, with a proper HTTP error, what cannot be answered inside a stream: batches, bad envelopes. */
function earlyCheck(body: unknown): unknown {
  try {
    const c = classify(body, true);
    return c.type === 'notification' ? null : c.id;
  } catch (e) {
    if (e instanceof ShapeError) throw new HttpRefusal(400, e.code, e.message, {}, e.id);
    throw e;
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
  async handle(req: IncomingMessage, res: ServerResponse, body: unknown, expiresAt?: number): Promise<void> {
    const handled = this.transport.handleRequest(req, res, body);
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

async function openSession(gw: Gateway, req: IncomingMessage, res: ServerResponse, server: string, identity: Identity, body: unknown): Promise<void> {
  const id = randomUUID();
  const channel = new HttpChannel(id);
  let session;
  try {
    session = await gw.openSession(id, server, identity, channel);
  } catch (e) {
    const status = (e as { status?: number }).status ?? 502;
    throw new HttpRefusal(status, UPSTREAM_ERROR, (e as Error).message, status === 503 ? { 'retry-after': '5' } : {});
  }
  channel.transport.onmessage = (message) => void session.fromClient(message);
  channel.transport.onclose = () => session.end('client closed the session');
  await channel.handle(req, res, body);
  // The SDK transport refused the initialize (a wrong Accept header, say): no client can use
  // this session, so it must not keep its upstream (a process group, for stdio) until idle.
  if (!channel.transport.sessionId) session.end('initialize refused');
}
