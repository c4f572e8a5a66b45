// A 2026-07-28 upstream behind a 2025-era session (a client that opened with initialize). A
// dual-era upstream answers the client's own initialize: the session then passes through as any
// 2025 session does. A 2026-only upstream refuses it, and the gateway is the 2026 client for it: initialize, ping and logging/setLevel are answered here from
// what the upstream's server/discover said; every other request goes up with the 2026 envelope in
// `_meta` (the version, and the capabilities and name the client gave in initialize, its log
// level). An input-required result becomes the requests a 2025 client expects
// (elicitation/create, sampling/createMessage, roots/list), which reach it through the pipeline
// like any server request (decided, audited); its answers go up on the retry the spec
// prescribes, with the server's requestState passed back untouched.
import { LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS, type JSONRPCMessage, type RequestId } from '@modelcontextprotocol/sdk/types.js';
import { Authorized, translated } from '../gateway/decide.js';
import { CLIENT_CAPABILITIES_KEY, CLIENT_INFO_KEY, LOG_LEVEL_KEY, MODERN_PROTOCOL_VERSION, PROTOCOL_VERSION_KEY, SERVER_INFO_KEY } from './era.js';
import type { Upstream } from './upstream.js';

type Obj = Record<string, unknown>;
type Request = { jsonrpc: '2.0'; id: RequestId; method: string; params?: Obj };

/** Input-required rounds one call may take before the gateway gives up on it (a server that never stops asking). */
const MAX_ROUNDS = 16;

interface Call {
  /** The request as decided (what every retry repeats). */
  authorized: Authorized;
  /** The id the client gave it, which its answer carries. */
  clientId: RequestId;
  /** The id of its latest attempt upstream: a retry is a new request, with a new id (2026-07-28, SEP-2322). */
  upId: RequestId;
  rounds: number;
  requestState?: string;
  /** Keys of the round's inputRequests still unanswered, and the answers so far. */
  waiting: Set<string>;
  answers: Obj;
}

export class LegacyOverModern implements Upstream {
  onmessage?: (message: JSONRPCMessage) => void;
  onclose?: (reason: string) => void;
  private capabilities: Obj = {};
  private clientInfo: unknown = { name: 'unknown', version: '0' };
  private logLevel?: string;
  /** Calls in flight, by the id of their latest attempt upstream. */
  private readonly calls = new Map<RequestId, Call>();
  /** Requests sent down to the client for a round, by the id they were given. */
  private readonly asked = new Map<RequestId, { call: RequestId; key: string }>();
  private seq = 0;
  /** Until initialize is answered: whether the upstream serves the 2025 era itself (native) or not (translate). */
  private mode: 'opening' | 'native' | 'translate' = 'opening';
  private opening?: Request;

  /** Where translated requests go: the twin when the upstream has one (HTTP), else the same connection. */
  private readonly modern: Upstream;

  constructor(
    /** The connection the client's own initialize is tried on. */
    private inner: Upstream,
    /** The upstream's server/discover result. */
    private readonly discover: Obj,
    twin?: Upstream,
  ) {
    this.modern = twin ?? inner;
    for (const u of new Set([inner, this.modern])) {
      u.onmessage = (m) => this.fromUpstream(m);
      u.onclose = (reason) => this.onclose?.(reason);
    }
  }

  /** The session's way is settled: the connection it does not use is closed. */
  private settle(mode: 'native' | 'translate'): void {
    this.mode = mode;
    if (this.modern === this.inner) return;
    const unused = mode === 'native' ? this.modern : this.inner;
    unused.onclose = undefined;
    void unused.close().catch(() => undefined);
    if (mode === 'translate') this.inner = this.modern;
  }

  async send(a: Authorized): Promise<void> {
    if (!Authorized.is(a)) throw new Error('refused a message that carries no decision');
    if (this.mode === 'native') return this.inner.send(a);
    const m = a.message as { id?: RequestId; method?: string; params?: Obj };
    if (this.mode === 'opening' && m.method === 'initialize' && m.id !== undefined) {
      const opening = (this.opening = m as Request);
      // A 2026-only HTTP server may refuse it with an HTTP error (400 and a JSON-RPC error, 404),
      // which fails the send rather than answering: a refusal all the same.
      return this.inner.send(a).catch(() => {
        if (this.opening !== opening) return;
        this.opening = undefined;
        this.settle('translate');
        this.initialize(opening);
      });
    }
    if (m.method === undefined) return this.answered(m as { id: RequestId; result?: Obj; error?: { code: number; message: string } });
    if (m.id === undefined) {
      // initialized and roots/list_changed have no 2026-07-28 counterpart; cancellation does, of the attempt in flight.
      if (m.method === 'notifications/cancelled') {
        const named = (m.params as { requestId?: RequestId } | undefined)?.requestId;
        const call = [...this.calls.values()].find((c) => c.clientId === named);
        await this.inner.send(call && call.upId !== named ? translated(a, { ...a.message, params: { ...m.params, requestId: call.upId } } as JSONRPCMessage) : a);
      }
      return;
    }
    const request = m as Request;
    switch (request.method) {
      case 'initialize':
        return this.initialize(request);
      case 'ping':
        return this.local(request.id, {});
      case 'logging/setLevel':
        this.logLevel = typeof request.params?.level === 'string' ? request.params.level : undefined;
        return this.local(request.id, {});
      case 'resources/subscribe':
      case 'resources/unsubscribe':
        return this.local(request.id, undefined, { code: -32601, message: `${request.method}: the upstream speaks MCP 2026-07-28, which replaced it with subscriptions/listen; this gateway does not carry that to a 2025-era session` });
    }
    this.calls.set(request.id, { authorized: a, clientId: request.id, upId: request.id, rounds: 0, waiting: new Set(), answers: {} });
    await this.up(a, request, {});
  }

  /** Sends a decided request (or its retry) with the 2026 envelope. */
  private up(a: Authorized, request: Request, extra: Obj): Promise<void> {
    const meta = (request.params?._meta ?? {}) as Obj;
    const envelope = { ...meta, [PROTOCOL_VERSION_KEY]: MODERN_PROTOCOL_VERSION, [CLIENT_CAPABILITIES_KEY]: this.capabilities, [CLIENT_INFO_KEY]: this.clientInfo, ...(this.logLevel !== undefined && { [LOG_LEVEL_KEY]: this.logLevel }) };
    return this.inner.send(translated(a, { ...request, params: { ...request.params, ...extra, _meta: envelope } } as JSONRPCMessage));
  }

  private initialize(request: Request): void {
    const p = request.params ?? {};
    this.capabilities = (p.capabilities as Obj | undefined) ?? {};
    this.clientInfo = p.clientInfo ?? this.clientInfo;
    const asked = typeof p.protocolVersion === 'string' ? p.protocolVersion : LATEST_PROTOCOL_VERSION;
    const d = this.discover;
    this.local(request.id, {
      protocolVersion: SUPPORTED_PROTOCOL_VERSIONS.includes(asked) ? asked : LATEST_PROTOCOL_VERSION,
      capabilities: d.capabilities ?? {},
      serverInfo: ((d._meta as Obj | undefined)?.[SERVER_INFO_KEY] as Obj | undefined) ?? { name: 'unknown', version: '0' },
      ...(d.instructions !== undefined && { instructions: d.instructions }),
    });
  }

  /** An answer the gateway gives for the upstream, after the send that asked for it has returned. */
  private local(id: RequestId, result: Obj | undefined, error?: { code: number; message: string }): void {
    const reply = (error ? { jsonrpc: '2.0', id, error } : { jsonrpc: '2.0', id, result }) as JSONRPCMessage;
    queueMicrotask(() => this.onmessage?.(reply));
  }

  private fromUpstream(message: JSONRPCMessage): void {
    const m = message as { id?: RequestId; method?: string; result?: Obj; error?: unknown };
    if (this.opening && m.method === undefined && m.id === this.opening.id) {
      const opening = this.opening;
      this.opening = undefined;
      // Only a 2025 InitializeResult opens a 2025 session: an answer naming another version (or
      // none) comes from a server that does not serve one, whatever it put in `result`.
      const version = (m.result as { protocolVersion?: unknown } | undefined)?.protocolVersion;
      if (typeof version === 'string' && SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
        this.settle('native');
        return this.onmessage?.(message);
      }
      this.settle('translate');
      return this.initialize(opening);
    }
    if (this.mode === 'native') return this.onmessage?.(message);
    const call = m.method === undefined && m.id !== undefined ? this.calls.get(m.id) : undefined;
    if (!call) return this.onmessage?.(message);
    const id = m.id!;
    if (m.result?.resultType !== 'input_required') {
      this.calls.delete(id);
      return this.onmessage?.({ ...message, id: call.clientId, ...(m.result && { result: legacyResult(m.result) }) } as JSONRPCMessage);
    }
    if (++call.rounds > MAX_ROUNDS) {
      this.calls.delete(id);
      return this.onmessage?.({ jsonrpc: '2.0', id: call.clientId, error: { code: -32603, message: `the upstream asked for input ${MAX_ROUNDS} times on one call; the gateway gave up` } } as JSONRPCMessage);
    }
    const requests = (m.result.inputRequests ?? {}) as Record<string, { method?: unknown; params?: unknown }>;
    call.requestState = typeof m.result.requestState === 'string' ? m.result.requestState : undefined;
    call.waiting = new Set(Object.keys(requests));
    call.answers = {};
    if (call.waiting.size === 0) return void this.retry(id, call);
    for (const [key, r] of Object.entries(requests)) {
      const asked = `portcullis-input-${++this.seq}`;
      this.asked.set(asked, { call: id, key });
      this.onmessage?.({ jsonrpc: '2.0', id: asked, method: r.method, ...(r.params !== undefined && { params: r.params }) } as JSONRPCMessage);
    }
  }

  /** The client's answer to one input request (or the gateway's refusal of it, which fails the call). */
  private async answered(m: { id: RequestId; result?: Obj; error?: { code: number; message: string } }): Promise<void> {
    const q = this.asked.get(m.id);
    if (!q) return;
    this.asked.delete(m.id);
    const call = this.calls.get(q.call);
    if (!call) return;
    if (m.error || !m.result) {
      this.calls.delete(q.call);
      for (const [asked, other] of this.asked) if (other.call === q.call) this.asked.delete(asked);
      this.local(call.clientId, undefined, { code: m.error?.code ?? -32603, message: `the upstream's ${q.key} could not be answered: ${m.error?.message ?? 'no answer'}` });
      return;
    }
    call.answers[q.key] = m.result;
    call.waiting.delete(q.key);
    if (call.waiting.size === 0) await this.retry(q.call, call);
  }

  /** The retry 2026-07-28 prescribes: the same request on a new id, the answers, the server's state untouched. */
  private retry(id: RequestId, call: Call): Promise<void> {
    this.calls.delete(id);
    call.upId = `portcullis-retry-${++this.seq}`;
    this.calls.set(call.upId, call);
    const request = { ...(call.authorized.message as Request), id: call.upId };
    return this.up(call.authorized, request, { inputResponses: call.answers, ...(call.requestState !== undefined && { requestState: call.requestState }) }).catch((e: Error) => {
      this.calls.delete(call.upId);
      this.local(call.clientId, undefined, { code: -32010, message: e.message });
    });
  }

  setProtocolVersion(version: string): void {
    // Translated, the 2026 envelope names the version per request.
    if (this.mode === 'native') this.inner.setProtocolVersion(version);
  }

  async close(): Promise<void> {
    // Before the session's way is settled both connections are open.
    await Promise.all([...new Set([this.inner, this.modern])].map((u) => (u === this.inner || this.mode === 'opening' ? u.close() : undefined)));
  }
}

/** A 2026 result as a 2025 client knows it: without the fields that revision added. */
function legacyResult(result: Obj): Obj {
  const { resultType, ttlMs: _ttl, cacheScope: _scope, ...rest } = result;
  return resultType === 'complete' ? rest : result;
}
