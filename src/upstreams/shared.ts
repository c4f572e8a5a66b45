// One upstream process shared by the sessions of one credential (a stdio server with
// `share: credential`: its 2025-era sessions, and the one its 2026-07-28 requests are served on),
// as a plain relay shares one child among all its sessions, but per credential, and with every
// session still decided, audited, masked and recorded on its own:
// each session talks to a Lease, which carries its decided messages onto the shared connection
// under ids of the connection's own and routes what the upstream sends back to the session it
// belongs to. Nothing a session sends can name another session's request: a cancellation or an
// answer is forwarded only for ids this session's own lease handed out or was asked.
//
// What the sessions share: one initialize, the gateway's own (decided and audited like any
// request; it declares every client capability the gateway can route, so that what the server
// offers does not depend on which client came first), from whose result every session's own
// initialize is answered; the server's state; the log level (the lowest any session set; each
// session gets only the messages its own level lets through); resource subscriptions (counted:
// the first subscribes upstream, the last unsubscribes).
// What is routed: an answer to the session whose request it answers; progress by its token;
// resources/updated to the sessions subscribed; list_changed to all. A request of the server
// (sampling, elicitation, roots) reaches a session only while exactly one request is in flight
// on the connection, the one case where it cannot belong to another session's call, and only
// when that session's client declared the capability; otherwise the gateway refuses it to the
// server, as it answers the server's ping itself. The process outlives its last session by
// shareIdle, for the credential's next one.
import { LATEST_PROTOCOL_VERSION, LoggingLevelSchema, type JSONRPCMessage, type RequestId } from '@modelcontextprotocol/sdk/types.js';
import { Authorized, gatewayAnswer, translated } from '../gateway/decide.js';
import { packageVersion } from '../version.js';
import { CAPABILITY_FOR } from './era.js';
import type { Upstream } from './upstream.js';

type Obj = Record<string, unknown>;
type Request = { jsonrpc: '2.0'; id: RequestId; method: string; params?: Obj & { _meta?: Obj } };

/** MCP's log levels (RFC 5424 severities), lowest first. */
const LEVELS: readonly string[] = LoggingLevelSchema.options;
const REFUSED = -32603;

interface Call {
  lease: Lease;
  clientId: RequestId;
  upToken?: string;
  /** A subscribe: a refusal takes the session off the URI's subscribers. */
  subscribe?: string;
}

const OPEN_ID = 'pcl-open';

export class SharedUpstream {
  private readonly leases = new Set<Lease>();
  /** Requests in flight upstream, by the id they carry there. */
  private readonly calls = new Map<RequestId, Call>();
  /** Progress tokens handed out upstream: whose, and the client's own token. */
  private readonly tokens = new Map<string, { lease: Lease; clientToken: string | number }>();
  /** Requests of the server sent to a session: only that session's answer goes up. */
  private readonly asked = new Map<RequestId, Lease>();
  private readonly subscribers = new Map<string, Set<Lease>>();
  /** The result of the gateway's initialize, which every session's initialize is answered with. */
  private profile?: Obj;
  private opening?: { resolve(m: JSONRPCMessage): void; reject(e: Error): void };
  /** The level set upstream (index into LEVELS): the lowest any session asked for. */
  private level?: number;
  private seq = 0;
  private unusable = false;
  /** While no session is left: the timer that ends the process unless another session comes. */
  private idle?: NodeJS.Timeout;
  closedWith?: string;

  constructor(
    readonly inner: Upstream,
    /** Called once when the connection can take no more sessions (closed, or its initialize failed). */
    private readonly retired: () => void,
    /** How long the process is kept once its last session has ended (shareIdle), for the next one. */
    private readonly idleMs = 0,
  ) {
    inner.onmessage = (m) => this.fromUpstream(m);
    inner.onclose = (reason) => {
      this.closedWith = reason;
      this.retire();
      this.opening?.reject(new Error(reason));
      for (const lease of [...this.leases]) lease.onclose?.(reason);
    };
  }

  /**
   * Opens the connection: the gateway's initialize, then initialized, each Authorized by
   * `authorize` (recorded as the gateway's own decision). Rejects when the upstream refuses,
   * goes away or does not answer within timeoutMs.
   */
  async open(authorize: (m: JSONRPCMessage) => Promise<Authorized>, timeoutMs: number): Promise<void> {
    const answered = new Promise<JSONRPCMessage>((resolve, reject) => (this.opening = { resolve, reject }));
    let timer: NodeJS.Timeout | undefined;
    try {
      const params = {
        protocolVersion: LATEST_PROTOCOL_VERSION,
        capabilities: { sampling: {}, elicitation: { form: {}, url: {} }, roots: { listChanged: true } },
        clientInfo: { name: 'portcullis', version: packageVersion() },
      };
      await this.inner.send(await authorize({ jsonrpc: '2.0', id: OPEN_ID, method: 'initialize', params } as JSONRPCMessage));
      const reply = (await Promise.race([answered, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer to initialize within ${timeoutMs} ms`)), timeoutMs)))])) as { result?: Obj; error?: { message: string } };
      if (!reply.result) throw new Error(`the upstream refused initialize: ${reply.error?.message ?? 'no result'}`);
      this.profile = reply.result;
      await this.inner.send(await authorize({ jsonrpc: '2.0', method: 'notifications/initialized' } as JSONRPCMessage));
    } catch (e) {
      await this.close().catch(() => undefined);
      throw e;
    } finally {
      clearTimeout(timer);
      this.opening = undefined;
    }
  }

  /** A new session's way onto the connection, or undefined when it takes no more. */
  lease(): Lease | undefined {
    if (this.unusable) return undefined;
    clearTimeout(this.idle);
    const lease = new Lease(this);
    this.leases.add(lease);
    return lease;
  }

  private retire(): void {
    if (this.unusable) return;
    this.unusable = true;
    this.retired();
  }

  /** A session ended: what it had in flight is forgotten, the server's questions to it refused; after the last one the process is kept for idleMs, then ended. */
  release(lease: Lease): Promise<void> {
    if (!this.leases.delete(lease)) return Promise.resolve();
    for (const [upId, call] of this.calls) if (call.lease === lease) this.forget(upId);
    for (const [id, asked] of this.asked) if (asked === lease) this.refuse(id, 'the session it was sent to ended');
    for (const [uri, set] of this.subscribers) if (set.delete(lease) && set.size === 0) this.subscribers.delete(uri);
    if (this.leases.size > 0) return Promise.resolve();
    if (this.idleMs > 0 && this.closedWith === undefined) {
      this.idle = setTimeout(() => void this.close(), this.idleMs).unref();
      return Promise.resolve();
    }
    return this.close();
  }

  /** Ends the process now (the last session left, or the gateway is shutting down). */
  close(): Promise<void> {
    clearTimeout(this.idle);
    this.retire();
    return this.inner.close();
  }

  send(lease: Lease, a: Authorized): Promise<void> {
    if (!Authorized.is(a)) return Promise.reject(new Error('refused a message that carries no decision'));
    const m = a.message as { id?: RequestId; method?: string; params?: Obj };
    if (m.method === undefined) {
      // The client's answer to a request of the server: only to one this session was sent.
      if (m.id === undefined || this.asked.get(m.id) !== lease) return Promise.resolve();
      this.asked.delete(m.id);
      return this.inner.send(a);
    }
    if (m.id === undefined) return this.notification(lease, a, m as { method: string; params?: Obj });
    const request = m as Request;
    switch (request.method) {
      case 'initialize':
        // Answered as the server answered the gateway: its version, capabilities and identity.
        lease.capabilities = (request.params?.capabilities as Obj | undefined) ?? {};
        return lease.local(request.id, { result: this.profile ?? {} });
      case 'ping':
        return lease.local(request.id, { result: {} });
      case 'logging/setLevel': {
        const level = LEVELS.indexOf(request.params?.level as string);
        if (level < 0) break; // the upstream says what is wrong with it
        lease.level = level;
        if (this.level !== undefined && this.level <= level) return lease.local(request.id, { result: {} });
        this.level = level;
        break;
      }
      case 'resources/subscribe':
      case 'resources/unsubscribe': {
        const uri = request.params?.uri;
        if (typeof uri !== 'string') break;
        const set = this.subscribers.get(uri) ?? new Set<Lease>();
        this.subscribers.set(uri, set);
        const before = set.size;
        if (request.method === 'resources/subscribe') set.add(lease);
        else set.delete(lease);
        if (set.size === 0) this.subscribers.delete(uri);
        // Upstream only when the first session subscribes or the last one leaves.
        if ((before === 0) === (set.size === 0)) return lease.local(request.id, { result: {} });
        return this.up(lease, a, request, request.method === 'resources/subscribe' ? uri : undefined);
      }
    }
    return this.up(lease, a, request);
  }

  private notification(lease: Lease, a: Authorized, m: { method: string; params?: Obj }): Promise<void> {
    if (m.method === 'notifications/initialized') return Promise.resolve(); // the gateway's own went up when it opened
    if (m.method === 'notifications/cancelled') {
      const upId = lease.upIds.get(m.params?.requestId as RequestId);
      if (upId === undefined) return Promise.resolve(); // not a request of this session's in flight
      // Over for the session, and the server is told to stop: it no longer counts as in flight (a
      // request that timed out still does, since the server was not told). A late answer is dropped.
      this.forget(upId);
      return this.inner.send(translated(a, { ...a.message, params: { ...m.params, requestId: upId } } as JSONRPCMessage));
    }
    return this.inner.send(a);
  }

  /** A request carried up under an id (and progress token) of the connection's own. */
  private up(lease: Lease, a: Authorized, request: Request, subscribe?: string): Promise<void> {
    const upId = `pcl-${++this.seq}`;
    const meta = request.params?._meta;
    const token = meta?.progressToken;
    let upToken: string | undefined;
    if (typeof token === 'string' || typeof token === 'number') {
      upToken = `pcl-p-${this.seq}`;
      this.tokens.set(upToken, { lease, clientToken: token });
    }
    this.calls.set(upId, { lease, clientId: request.id, upToken, subscribe });
    lease.upIds.set(request.id, upId);
    const message = { ...request, id: upId, ...(upToken !== undefined && { params: { ...request.params, _meta: { ...meta, progressToken: upToken } } }) };
    return this.inner.send(translated(a, message as JSONRPCMessage)).catch((e: Error) => {
      this.forget(upId);
      throw e;
    });
  }

  private forget(upId: RequestId): Call | undefined {
    const call = this.calls.get(upId);
    if (!call) return undefined;
    this.calls.delete(upId);
    if (call.lease.upIds.get(call.clientId) === upId) call.lease.upIds.delete(call.clientId);
    if (call.upToken !== undefined) this.tokens.delete(call.upToken);
    return call;
  }

  private refuse(id: RequestId, why: string): void {
    this.asked.delete(id);
    void this.inner.send(gatewayAnswer(id, { error: { code: REFUSED, message: `${why} (the upstream is shared by the sessions of one credential: share: credential)` } })).catch(() => undefined);
  }

  private fromUpstream(message: JSONRPCMessage): void {
    const m = message as { id?: RequestId; method?: string; params?: Obj; result?: Obj; error?: { code: number; message: string } };
    if (m.method === undefined) {
      if (m.id === undefined) return;
      if (m.id === OPEN_ID) return this.opening?.resolve(message);
      const call = this.forget(m.id);
      if (!call) return; // its session ended, or no request of ours: nobody waits for it
      if (call.subscribe !== undefined && m.error) this.subscribers.get(call.subscribe)?.delete(call.lease);
      return call.lease.deliver({ ...message, id: call.clientId } as JSONRPCMessage);
    }
    if (m.id !== undefined) return this.serverRequest(m as Request);
    const p = m.params ?? {};
    switch (m.method) {
      case 'notifications/progress': {
        const t = this.tokens.get(p.progressToken as string);
        return t?.lease.deliver({ ...message, params: { ...p, progressToken: t.clientToken } } as JSONRPCMessage);
      }
      case 'notifications/message': {
        const level = LEVELS.indexOf(p.level as string);
        for (const lease of this.leases) if (lease.level === undefined || level >= lease.level) lease.deliver(message);
        return;
      }
      case 'notifications/resources/updated':
        for (const lease of this.subscribers.get(p.uri as string) ?? []) lease.deliver(message);
        return;
      case 'notifications/cancelled': {
        // The server withdrew a request it sent a session.
        const lease = this.asked.get(p.requestId as RequestId);
        this.asked.delete(p.requestId as RequestId);
        return lease?.deliver(message);
      }
    }
    if (m.method.endsWith('/list_changed')) {
      for (const lease of this.leases) lease.deliver(message);
      return;
    }
    this.soleLease()?.deliver(message);
  }

  /** The session a message of the server can only belong to: the one with the sole request in flight, or the sole session when nothing is in flight. */
  private soleLease(): Lease | undefined {
    if (this.calls.size === 1) return this.calls.values().next().value!.lease;
    return this.calls.size === 0 && this.leases.size === 1 ? this.leases.values().next().value : undefined;
  }

  private serverRequest(r: Request): void {
    if (r.method === 'ping') return void this.inner.send(gatewayAnswer(r.id, { result: {} })).catch(() => undefined);
    const lease = this.soleLease();
    if (!lease) return this.refuse(r.id, `${r.method} belongs to no single session: ${this.calls.size} requests of ${this.leases.size} sessions are in flight on the connection`);
    const capability = CAPABILITY_FOR[r.method];
    if (capability && !(capability in lease.capabilities)) return this.refuse(r.id, `the client of this session did not declare the ${capability} capability`);
    this.asked.set(r.id, lease);
    lease.deliver(r as JSONRPCMessage);
  }
}

/** One session's side of a shared connection: an Upstream to the session. */
export class Lease implements Upstream {
  onmessage?: (message: JSONRPCMessage) => void;
  onclose?: (reason: string) => void;
  /** The client's capabilities, from its initialize. */
  capabilities: Obj = {};
  /** The level this session asked for (index into LEVELS); undefined: every message the server sends. */
  level?: number;
  /** This session's requests in flight: the client's id, and the id it carries upstream. */
  readonly upIds = new Map<RequestId, RequestId>();
  private released = false;

  constructor(private readonly shared: SharedUpstream) {}

  get verdict() {
    return this.shared.inner.verdict;
  }

  get closedWith() {
    return this.shared.closedWith;
  }

  send(message: Authorized): Promise<void> {
    if (this.released) return Promise.reject(new Error('the session has left its shared upstream'));
    return this.shared.send(this, message);
  }

  deliver(message: JSONRPCMessage): void {
    if (!this.released) this.onmessage?.(message);
  }

  /** An answer the gateway gives for the upstream, after the send that asked for it has returned. */
  local(id: RequestId, outcome: { result: Obj }): Promise<void> {
    queueMicrotask(() => this.deliver({ jsonrpc: '2.0', id, ...outcome } as JSONRPCMessage));
    return Promise.resolve();
  }

  setProtocolVersion(): void {}

  close(): Promise<void> {
    this.released = true;
    return this.shared.release(this);
  }
}
