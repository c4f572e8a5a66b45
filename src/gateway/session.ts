// One downstream session paired with exactly one upstream session. JSON-RPC ids pass through
// unchanged in both directions; the session tracks what is in flight so replies find their
// request, server-to-client messages find the request stream they belong to, and an upstream
// that dies ends the session with a clear error instead of leaving requests hanging.
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import type { Identity } from '../auth/identity.js';
import type { Upstream } from '../upstreams/upstream.js';
import { errorResponse, UPSTREAM_ERROR } from './classify.js';
import type { Exchange, Reply } from './pipeline.js';

/** The downstream side, as the front offers it. */
export interface ClientChannel {
  /** relatedRequestId ties a server-to-client message to the client request it belongs to. */
  send(message: JSONRPCMessage, relatedRequestId?: RequestId): Promise<void>;
  /** The client cancelled this request: it gets no reply, so whatever waits for one can go. */
  cancelled?(id: RequestId): void;
  close(): Promise<void>;
}

export interface SessionHost {
  toUpstream(x: Exchange): Promise<Reply>;
  toClient(x: Exchange): Promise<Reply>;
  ended(session: Session, reason: string): void;
  log: Logger;
  limits: SessionLimits;
}

export interface SessionLimits {
  upstreamTimeoutMs: number;
  maxResultBytes: number;
  idleTimeoutMs: number;
}

interface InFlight {
  settle(reply: Reply): void;
  progressToken?: unknown;
}

/** A queue of turns: messages reach the upstream in the order the client sent them. */
class Turns {
  private tail: Promise<void> = Promise.resolve();
  take(): { ready: Promise<void>; release: () => void } {
    let release!: () => void;
    const done = new Promise<void>((r) => (release = r));
    const ready = this.tail;
    this.tail = done;
    return { ready, release };
  }
}

export class Session {
  upstream?: Upstream;
  /** The capabilities the upstream answered initialize with. */
  serverCapabilities?: Record<string, unknown>;
  private readonly inFlight = new Map<RequestId, InFlight>();
  private readonly serverRequests = new Set<RequestId>();
  private readonly turns = new Turns();
  /** Delivery of what the upstream sends, in its order (see fromUpstream). */
  private outbound: Promise<unknown> = Promise.resolve();
  private endedWith?: string;
  private resolveEnded!: (reason: string) => void;
  /** Resolves with the reason once the session has ended, from either side. */
  readonly whenEnded = new Promise<string>((r) => (this.resolveEnded = r));
  private resolveClosed!: (upstreamClosed: Promise<void>) => void;
  /** Resolves once the session has ended and its upstream is closed (a stdio upstream's processes are gone). */
  readonly whenClosed = new Promise<void>((r) => (this.resolveClosed = r));
  private drainWaiters: Array<() => void> = [];
  /** Client messages between fromClient and their reply written. */
  private handling = 0;
  readonly log: Logger;
  private readonly idle: NodeJS.Timeout;

  constructor(
    readonly id: string,
    readonly server: string,
    /** Who is calling. Starts as the identity that opened the session; the HTTP front replaces it
     *  with each request's freshly verified identity of the same principal (identityKey), so a
     *  refreshed token's groups and claims are the ones policy sees, not the first token's. */
    public identity: Identity,
    /** The downstream side (the front's transport for this session). */
    readonly channel: ClientChannel,
    private readonly host: SessionHost,
  ) {
    this.log = host.log.child({ session: id, server, sub: identity.sub });
    // Idle sessions end (and their upstream processes exit); a request in flight is not idleness.
    this.idle = setTimeout(() => (this.busy ? this.touch() : this.end(`idle for ${host.limits.idleTimeoutMs} ms (limits.sessionIdleTimeout)`)), host.limits.idleTimeoutMs).unref();
  }

  private touch(): void {
    this.idle.refresh();
  }

  /** Whether requests are in flight, or a client message is still on its way through (graceful shutdown waits for them). */
  get busy(): boolean {
    return this.inFlight.size > 0 || this.handling > 0;
  }

  private wakeIfIdle(): void {
    if (!this.busy) for (const w of this.drainWaiters.splice(0)) w();
  }

  /** Resolves when no request is in flight (at once if none is). */
  drained(): Promise<void> {
    return this.busy ? new Promise((r) => this.drainWaiters.push(r)) : Promise.resolve();
  }

  get isEnded(): boolean {
    return this.endedWith !== undefined;
  }

  attach(upstream: Upstream): void {
    this.upstream = upstream;
    upstream.onmessage = (m) => this.fromUpstream(m);
    upstream.onclose = (reason) => this.end(reason);
  }

  /** A message from the client: through the pipeline, and its reply back to the client. */
  async fromClient(raw: unknown): Promise<void> {
    this.handling++;
    try {
      await this.pass(raw);
    } finally {
      this.handling--;
      this.wakeIfIdle();
    }
  }

  private async pass(raw: unknown): Promise<void> {
    this.touch();
    const turn = this.turns.take();
    let released = false;
    const x: Exchange = {
      session: this,
      direction: 'toUpstream',
      raw,
      startedAt: performance.now(),
      turnReady: turn.ready,
      releaseTurn: () => {
        if (!released) (released = true), turn.release();
      },
    };
    let reply: Reply;
    try {
      reply = await this.host.toUpstream(x);
    } finally {
      x.releaseTurn();
    }
    if (reply && !this.isEnded) await this.channel.send(reply, x.msg?.type === 'request' ? x.msg.id : undefined).catch((e) => this.log.debug({ err: e.message }, 'client went away before its reply'));
    // A session whose initialize failed can never be used (the client must start a new one):
    // end it now rather than hold an upstream and a place under limits.maxSessions until idle.
    if (x.msg?.type === 'request' && x.msg.method === 'initialize' && reply && 'error' in reply) this.end(`initialize failed: ${reply.error.message}`);
  }

  private fromUpstream(message: JSONRPCMessage): void {
    this.touch();
    const m = message as { id?: RequestId; method?: unknown };
    if (m.method === undefined && m.id !== undefined) {
      const waiting = this.inFlight.get(m.id);
      if (!waiting) return this.log.debug({ id: m.id }, 'dropped a reply nobody waits for (timed out or cancelled)');
      const size = Buffer.byteLength(JSON.stringify(message));
      const reply = size > this.host.limits.maxResultBytes ? errorResponse(m.id, UPSTREAM_ERROR, `the upstream's answer is ${size} bytes, over the gateway's limit of ${this.host.limits.maxResultBytes} (limits.maxResultBytes)`) : message;
      // After the server messages that came before it: a request's last progress notification
      // must not be overtaken by its result (the client stops listening for progress then).
      this.outbound = this.outbound.then(() => waiting.settle(reply));
      return;
    }
    this.toClient(message);
  }

  /** A message for the client that answers no request: through the toClient stages, one at a time, in order. */
  toClient(message: JSONRPCMessage): void {
    const x: Exchange = { session: this, direction: 'toClient', raw: message, startedAt: performance.now(), turnReady: Promise.resolve(), releaseTurn: () => {} };
    this.outbound = this.outbound.then(() => this.host.toClient(x)).catch((e) => this.log.warn({ err: (e as Error).message }, 'could not deliver a server message'));
  }

  /**
   * The policy changed: what the client may see in its lists may have changed too. Tell it, for
   * each list whose changes the upstream said it announces (so the client expects the message).
   */
  policyChanged(): void {
    for (const list of ['tools', 'resources', 'prompts'] as const) {
      if ((this.serverCapabilities?.[list] as { listChanged?: unknown } | undefined)?.listChanged === true) {
        this.toClient({ jsonrpc: '2.0', method: `notifications/${list}/list_changed` } as JSONRPCMessage);
      }
    }
  }

  /** Registers a client request as in flight; its reply arrives through fromUpstream. */
  expect(id: RequestId, progressToken: unknown): Promise<Reply> {
    if (this.inFlight.has(id)) return Promise.resolve(errorResponse(id, -32600, `request id ${JSON.stringify(id)} is already in flight in this session`));
    return new Promise<Reply>((resolve) => {
      const timer = setTimeout(() => settle(errorResponse(id, UPSTREAM_ERROR, `the upstream did not answer within ${this.host.limits.upstreamTimeoutMs} ms (limits.upstreamTimeout)`)), this.host.limits.upstreamTimeoutMs);
      const settle = (reply: Reply) => {
        if (this.inFlight.get(id) !== entry) return;
        clearTimeout(timer);
        this.inFlight.delete(id);
        resolve(reply);
        this.wakeIfIdle();
      };
      const entry: InFlight = { settle, progressToken };
      this.inFlight.set(id, entry);
    });
  }

  /** The client cancelled a request: it gets no reply (MCP cancellation semantics). */
  cancelled(id: RequestId): void {
    if (!this.inFlight.has(id)) return;
    this.inFlight.get(id)!.settle(undefined);
    this.channel.cancelled?.(id);
  }

  /** Settles an in-flight request with an error (the upstream could not be sent to). */
  failed(id: RequestId, message: string): void {
    this.inFlight.get(id)?.settle(errorResponse(id, UPSTREAM_ERROR, message));
  }

  /** The client request a server-to-client message belongs to: by progress token, else the latest in flight. */
  relatedRequest(message: JSONRPCMessage): RequestId | undefined {
    const token = (message as { params?: { progressToken?: unknown } }).params?.progressToken;
    let latest: RequestId | undefined;
    for (const [id, f] of this.inFlight) {
      if (token !== undefined && f.progressToken === token) return id;
      latest = id;
    }
    return latest;
  }

  rememberServerRequest(id: RequestId): void {
    this.serverRequests.add(id);
  }

  takeServerRequest(id: RequestId): boolean {
    return this.serverRequests.delete(id);
  }

  sendToClient(message: JSONRPCMessage, relatedRequestId?: RequestId): Promise<void> {
    return this.channel.send(message, relatedRequestId);
  }

  /** Ends the session: in-flight requests fail with the reason, both sides are closed. Idempotent. */
  end(reason: string): void {
    if (this.endedWith !== undefined) return;
    this.endedWith = reason;
    clearTimeout(this.idle);
    this.resolveEnded(reason);
    // Requests in flight get their error before the client channel closes: once it is closed,
    // nothing can reach the client, and it would wait for its own timeout instead.
    const errors: Promise<void>[] = [];
    for (const [id, f] of this.inFlight) {
      f.settle(undefined);
      errors.push(this.channel.send(errorResponse(id, UPSTREAM_ERROR, `session ended: ${reason}`), id).catch(() => undefined));
    }
    this.host.ended(this, reason);
    this.resolveClosed(this.upstream ? this.upstream.close().catch(() => undefined) : Promise.resolve());
    void Promise.all(errors).then(() => this.channel.close()).catch(() => undefined);
  }
}
