// One downstream session paired with exactly one upstream session. JSON-RPC ids pass through
// unchanged in both directions; the session tracks what is in flight so replies find their
// request, server-to-client messages find the request stream they belong to, and an upstream
// that dies ends the session with a clear error instead of leaving requests hanging.
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { recordedText } from '../audit/chain.js';
import { identityKey, identityLabel, type Identity } from '../auth/identity.js';
import type { Upstream } from '../upstreams/upstream.js';
import { classify, errorResponse, INVALID_REQUEST, ShapeError, UPSTREAM_ERROR } from './classify.js';
import { wireSize } from '../upstreams/wire-size.js';
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

/** A client request id taken from when a front accepts the request until its answer is sent. */
export interface Admission {
  /** Set once the request has entered the session (fromClient). */
  delivered: boolean;
  /** Frees the id; only the admission that holds it can free it. */
  release(): void;
}

interface InFlight {
  settle(reply: Reply): void;
  /** Held for approval: not sent upstream yet. */
  held?: boolean;
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
  /** Client request ids from acceptance until their answer is sent (see admit). */
  private readonly admitted = new Map<RequestId, Admission>();
  /** Ids the upstream still owes an answer the client no longer waits for (timed out, cancelled):
   *  not free yet, or that late answer would settle a new request with the same id. */
  private readonly abandoned = new Set<RequestId>();
  /** The credential this session is bound to (identityKey of the identity that opened it). */
  readonly principal: string;
  /** The identity of the latest client message, for messages the upstream sends on its own (see toClient). */
  private latest: Identity;
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
    /** The identity that opened the session. Each request carries its own (Exchange.identity), of
     *  the same credential: fronts find a session only for its principal (identityKey). */
    readonly openedBy: Identity,
    /** The downstream side (the front's transport for this session). */
    readonly channel: ClientChannel,
    private readonly host: SessionHost,
  ) {
    this.principal = identityKey(openedBy);
    this.latest = openedBy;
    this.log = host.log.child({ session: id, server, ...identityLabel(openedBy) });
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

  /**
   * Takes a client request id until its answer is sent, or undefined when a request with that id
   * is already in flight here: a second one would cross the answers (the first's reply routed to
   * the second, the upstream seeing one id twice). Fronts that hand requests on asynchronously
   * (the SDK's HTTP transport) admit before doing so; fromClient admits the rest.
   */
  admit(id: RequestId): Admission | undefined {
    if (this.admitted.has(id) || this.abandoned.has(id)) return undefined;
    const admission: Admission = {
      delivered: false,
      release: () => {
        if (this.admitted.get(id) === admission) this.admitted.delete(id);
      },
    };
    this.admitted.set(id, admission);
    return admission;
  }

  /** A message from the client, with the verified identity of the request that carried it: through the pipeline, and its reply back to the client. */
  async fromClient(raw: unknown, identity: Identity): Promise<void> {
    this.handling++;
    try {
      await this.pass(raw, identity);
    } finally {
      this.handling--;
      this.wakeIfIdle();
    }
  }

  private async pass(raw: unknown, identity: Identity): Promise<void> {
    this.touch();
    const id = requestId(raw);
    let admission: Admission | undefined;
    if (id !== undefined) {
      const held = this.admitted.get(id);
      admission = held && !held.delivered ? held : held ? undefined : this.admit(id);
      if (!admission) {
        // Refused before classify and decide: nothing decided, nothing forwarded, the first request's answer untouched.
        this.log.warn({ id: recordedText(id) }, 'request id already in flight; refused');
        await this.channel.send(duplicateId(id)).catch(() => undefined);
        return;
      }
      admission.delivered = true;
    }
    this.latest = identity;
    try {
      await this.run(raw, identity);
    } finally {
      admission?.release();
    }
  }

  private async run(raw: unknown, identity: Identity): Promise<void> {
    const turn = this.turns.take();
    let released = false;
    const x: Exchange = {
      session: this,
      direction: 'toUpstream',
      raw,
      identity,
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
      if (!waiting) {
        this.abandoned.delete(m.id);
        return this.log.debug({ id: m.id }, 'dropped a reply nobody waits for (timed out or cancelled)');
      }
      const size = wireSize(message);
      const reply =
        size > this.host.limits.maxResultBytes
          ? errorResponse(m.id, UPSTREAM_ERROR, `the upstream's answer is ${size} bytes, over the gateway's limit of ${this.host.limits.maxResultBytes} (limits.maxResultBytes)`)
          : (malformed(message) ?? message);
      // After the server messages that came before it: a request's last progress notification
      // must not be overtaken by its result (the client stops listening for progress then).
      this.outbound = this.outbound.then(() => waiting.settle(reply));
      return;
    }
    this.toClient(message);
  }

  /**
   * A message for the client that answers no request: through the toClient stages, one at a time,
   * in order. It is decided and recorded with the identity of the client's latest message: always
   * this session's credential (sessions are bound to it), and its freshest verified token, so a
   * group removed at the provider stops counting here too once the client presents its next token.
   */
  toClient(message: JSONRPCMessage): void {
    const x: Exchange = { session: this, direction: 'toClient', raw: message, identity: this.latest, startedAt: performance.now(), turnReady: Promise.resolve(), releaseTurn: () => {} };
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

  /** Registers a client request as in flight; its reply arrives through fromUpstream (admit keeps its id unique). */
  expect(id: RequestId, progressToken: unknown): Promise<Reply> {
    // admit() keeps ids unique; reaching this would be a bug, and the throw fails closed before sending.
    if (this.inFlight.has(id)) throw new Error(`request id ${JSON.stringify(id)} is already in flight in this session`);
    return new Promise<Reply>((resolve) => {
      const timer = setTimeout(() => {
        this.abandon(id);
        settle(errorResponse(id, UPSTREAM_ERROR, `the upstream did not answer within ${this.host.limits.upstreamTimeoutMs} ms (limits.upstreamTimeout)`));
      }, this.host.limits.upstreamTimeoutMs);
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

  /**
   * A call held for approval: in flight for idleness, shutdown and the client's cancellation, but
   * with no upstream timer (its approval expires on its own). `withdraw` runs when the client
   * cancels it or the session ends; the function returned ends the hold (decided, or forwarded).
   */
  hold(id: RequestId, withdraw: (reason: string) => void): () => void {
    const entry: InFlight = {
      held: true,
      settle: () => {
        if (this.inFlight.get(id) !== entry) return;
        this.inFlight.delete(id);
        withdraw(this.endedWith !== undefined ? `session ended: ${this.endedWith}` : 'cancelled by the client');
      },
    };
    this.inFlight.set(id, entry);
    return () => {
      if (this.inFlight.get(id) === entry) this.inFlight.delete(id);
    };
  }

  /** The client went away before its answer: a held call is withdrawn; a forwarded one runs its course. */
  disconnected(id: RequestId): void {
    const f = this.inFlight.get(id);
    if (f?.held) f.settle(undefined);
  }

  /** The client cancelled a request: it gets no reply (MCP cancellation semantics). */
  cancelled(id: RequestId): void {
    const f = this.inFlight.get(id);
    if (!f) return;
    // A held call never reached the upstream: no late answer is owed, its id is free again.
    if (!f.held) this.abandon(id);
    f.settle(undefined);
    this.channel.cancelled?.(id);
  }

  private abandon(id: RequestId): void {
    // Bounded: an upstream that never answers must not grow this without end.
    if (this.abandoned.size >= MAX_ABANDONED) this.abandoned.delete(this.abandoned.values().next().value!);
    this.abandoned.add(id);
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

const MAX_ABANDONED = 10_000;

/** An upstream's answer that is no JSON-RPC response (a result that is not an object…), as the error the client gets instead. */
function malformed(message: JSONRPCMessage): JSONRPCMessage | undefined {
  try {
    classify(message, false);
    return undefined;
  } catch (e) {
    if (!(e instanceof ShapeError)) throw e;
    const id = (message as { id: RequestId }).id;
    return errorResponse(id, UPSTREAM_ERROR, `the upstream's answer is not a valid JSON-RPC response: ${e.message}`);
  }
}

/** The id of a client request (a message with a method and an id), else undefined. */
export function requestId(raw: unknown): RequestId | undefined {
  const m = raw as { method?: unknown; id?: unknown } | null;
  if (typeof m !== 'object' || m === null || typeof m.method !== 'string') return undefined;
  return typeof m.id === 'string' || typeof m.id === 'number' ? m.id : undefined;
}

/** The refusal of a request whose id is already in flight in its session. */
export function duplicateId(id: RequestId): JSONRPCMessage {
  return errorResponse(id, INVALID_REQUEST, `request id ${JSON.stringify(id)} is already in flight in this session (or the upstream still owes its answer after a timeout or cancellation): use another id`);
}
