// MCP 2026-07-28 clients need no session (SEP-2567, SEP-2575): each request stands alone and
// carries its protocol version and capabilities in `_meta`. The gateway serves them on upstream
// sessions of its own: one per server and credential, opened on that credential's first request
// (initialize on its behalf), shared by its later requests. Every request still runs the whole
// pipeline with its own verified identity; only its JSON-RPC id is replaced on the way up (two
// clients' id 1 must not meet on one upstream session) and restored on the way back. What a
// 2025-era upstream answers is given the 2026 shape: resultType, cache hints, serverInfo, the
// 2026 resource-not-found code.
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';
import { randomUUID } from 'node:crypto';
import { identityKey, type Identity } from '../auth/identity.js';
import { packageVersion } from '../version.js';
import { paramHeadersOf, type ParamHeaders } from '../fronts/request-headers.js';
import { errorResponse, UPSTREAM_ERROR } from './classify.js';
import type { Session, ClientChannel } from './session.js';

export const MODERN_PROTOCOL_VERSION = '2026-07-28';
export const MODERN_VERSIONS: readonly string[] = [MODERN_PROTOCOL_VERSION];
export const SERVER_INFO_META_KEY = 'io.modelcontextprotocol/serverInfo';

/** Results 2026-07-28 makes cacheable (SEP-2549): they carry ttlMs and cacheScope. */
const CACHEABLE = new Set(['tools/list', 'prompts/list', 'resources/list', 'resources/templates/list', 'resources/read', 'server/discover']);

/** 2025's "resource not found"; 2026-07-28 answers it with Invalid Params. */
const LEGACY_RESOURCE_NOT_FOUND = -32002;
const INVALID_PARAMS = -32602;

/** Where one stateless request's messages go: its HTTP response. */
export interface ReplySink {
  /** A notification about this request (progress, a log message it asked for). */
  notify(message: JSONRPCMessage): void;
  /** Its answer, in the 2026 shape, with the client's own id. */
  reply(message: JSONRPCMessage): void;
}

interface Waiting {
  clientId: RequestId;
  method: string;
  progressToken?: unknown;
  /** Whether the request asked for log messages (`_meta` io.modelcontextprotocol/logLevel). */
  wantsLog: boolean;
  sink: ReplySink;
}

/** What a pooled upstream session learned when it opened: what server/discover answers. */
export interface UpstreamProfile {
  capabilities: Record<string, unknown>;
  serverInfo?: unknown;
  instructions?: unknown;
}

/**
 * The client side of a pooled upstream session: routes each message the session sends "to the
 * client" to the stateless request it belongs to. Messages that belong to none (list_changed and
 * the like) have nowhere to go: a 2026 client asks for them with subscriptions/listen.
 */
class PoolChannel implements ClientChannel {
  readonly waiting = new Map<RequestId, Waiting>();
  onUnrelated?: (message: JSONRPCMessage) => void;

  async send(message: JSONRPCMessage, relatedRequestId?: RequestId): Promise<void> {
    const m = message as { id?: RequestId; method?: string; params?: { progressToken?: unknown } };
    if (m.method === undefined && m.id !== undefined) {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      w.sink.reply(toModernReply(message, w));
      return;
    }
    const w = this.relatedTo(m.params?.progressToken, relatedRequestId);
    if (m.id !== undefined) {
      // A 2025 upstream's own request (sampling, elicitation, roots): the pooled session declared
      // none of these capabilities, and a 2026 client is not reachable by a request. Refusing it
      // here makes the pipeline answer the upstream with an error (see stages.ts deliver).
      throw new Error(`${m.method} cannot be asked of a 2026-07-28 client through a 2025-era upstream`);
    }
    if (!w) return this.onUnrelated?.(message);
    if (m.method === 'notifications/message' && !w.wantsLog) return;
    w.sink.notify(message);
  }

  /** By progress token; otherwise only when exactly one request waits (never a guess among several). */
  private relatedTo(token: unknown, related: RequestId | undefined): Waiting | undefined {
    if (token !== undefined) {
      for (const w of this.waiting.values()) if (w.progressToken === token) return w;
      return undefined;
    }
    if (this.waiting.size !== 1) return undefined;
    const only = this.waiting.values().next().value!;
    return related === undefined || this.waiting.has(related) ? only : undefined;
  }

  async close(): Promise<void> {
    for (const [id, w] of this.waiting) w.sink.reply(toModernReply(errorResponse(id, UPSTREAM_ERROR, 'the upstream session ended'), w));
    this.waiting.clear();
  }
}

/** A 2025-era answer in the 2026 shape, with the client's id. */
function toModernReply(message: JSONRPCMessage, w: Waiting): JSONRPCMessage {
  const m = message as { result?: Record<string, unknown>; error?: { code: number; message: string; data?: unknown } };
  if (m.error) {
    const error = m.error.code === LEGACY_RESOURCE_NOT_FOUND && w.method === 'resources/read' ? { ...m.error, code: INVALID_PARAMS } : m.error;
    return { jsonrpc: '2.0', id: w.clientId, error } as JSONRPCMessage;
  }
  const result: Record<string, unknown> = { ...m.result };
  result.resultType ??= 'complete';
  if (CACHEABLE.has(w.method)) {
    // What the gateway answers depends on who asks (lists are filtered, results masked, calls
    // decided per identity): no shared cache may hand one caller's answer to another.
    result.ttlMs = typeof result.ttlMs === 'number' && result.ttlMs >= 0 ? result.ttlMs : 0;
    result.cacheScope = 'private';
  }
  return { jsonrpc: '2.0', id: w.clientId, result } as JSONRPCMessage;
}

export interface PoolHost {
  openSession(id: string, server: string, identity: Identity, channel: ClientChannel): Promise<Session>;
}

interface Pooled {
  session: Session;
  channel: PoolChannel;
  profile: UpstreamProfile;
  /** Each tool's x-mcp-header annotations, from the upstream's tools/list (refreshed on list_changed). */
  tools: Map<string, ParamHeaders | undefined>;
}

let nextId = 0;
/** Gateway-made request ids: unique on every pooled session, never a client's. */
const gatewayId = (): string => `pcl-${(nextId = (nextId + 1) % Number.MAX_SAFE_INTEGER)}`;

export class StatelessPool {
  private readonly pools = new Map<string, Promise<Pooled>>();

  constructor(private readonly host: PoolHost) {}

  /** The pooled session for this server and credential, opened (and initialized) on first use. */
  private get(server: string, identity: Identity): Promise<Pooled> {
    const key = `${server}\0${identityKey(identity)}`;
    let p = this.pools.get(key);
    if (!p) {
      p = this.open(server, identity);
      this.pools.set(key, p);
      const forget = () => this.pools.get(key) === p && this.pools.delete(key);
      p.then((pooled) => pooled.session.whenEnded.then(forget), forget);
    }
    return p;
  }

  private async open(server: string, identity: Identity): Promise<Pooled> {
    const channel = new PoolChannel();
    const session = await this.host.openSession(randomUUID(), server, identity, channel);
    const pooled: Pooled = { session, channel, profile: { capabilities: {} }, tools: new Map() };
    const init = await this.call(pooled, identity, 'initialize', {
      protocolVersion: LATEST_PROTOCOL_VERSION,
      // None of sampling, elicitation, roots: a 2026 client cannot be asked by request.
      capabilities: {},
      clientInfo: { name: 'portcullis', version: packageVersion() },
    });
    if ('error' in init) {
      session.end(`initialize failed: ${init.error.message}`);
      throw new Error(`the upstream refused initialize: ${init.error.message}`);
    }
    const r = init.result as { capabilities?: Record<string, unknown>; serverInfo?: unknown; instructions?: unknown };
    pooled.profile = { capabilities: r.capabilities ?? {}, serverInfo: r.serverInfo, instructions: r.instructions };
    await session.fromClient({ jsonrpc: '2.0', method: 'notifications/initialized' }, identity);
    channel.onUnrelated = (m) => {
      if ((m as { method?: string }).method === 'notifications/tools/list_changed') void this.learnTools(pooled, identity).catch(() => undefined);
    };
    if (pooled.profile.capabilities.tools) await this.learnTools(pooled, identity);
    return pooled;
  }

  /** Reads the upstream's tool list (every page) for the Mcp-Param header annotations. */
  private async learnTools(pooled: Pooled, identity: Identity): Promise<void> {
    const tools = new Map<string, ParamHeaders | undefined>();
    let cursor: string | undefined;
    for (let page = 0; page < 100; page++) {
      const reply = await this.call(pooled, identity, 'tools/list', cursor === undefined ? {} : { cursor });
      if (!('result' in reply)) return;
      const r = reply.result as { tools?: Array<{ name?: unknown; inputSchema?: unknown }>; nextCursor?: unknown };
      for (const t of r.tools ?? []) if (typeof t?.name === 'string') tools.set(t.name, paramHeadersOf(t.inputSchema));
      if (typeof r.nextCursor !== 'string') break;
      cursor = r.nextCursor;
    }
    pooled.tools = tools;
  }

  /** A request of the gateway's own on a pooled session, through the pipeline like any other. */
  private call(pooled: Pooled, identity: Identity, method: string, params: Record<string, unknown>): Promise<{ result: unknown } | { error: { code: number; message: string } }> {
    return new Promise((resolve) => {
      const id = gatewayId();
      pooled.channel.waiting.set(id, { clientId: id, method: '', wantsLog: false, sink: { notify: () => {}, reply: (m) => resolve(m as never) } });
      void pooled.session.fromClient({ jsonrpc: '2.0', id, method, params }, identity);
    });
  }

  /** What server/discover answers: the upstream's identity and capabilities, as far as a 2026 client can use them. */
  async discover(server: string, identity: Identity): Promise<Record<string, unknown>> {
    const { profile } = await this.get(server, identity);
    const capabilities = { ...profile.capabilities };
    // Change notifications reach a 2026 client only through subscriptions/listen, which this
    // gateway does not carry yet: advertise neither listChanged nor subscribe.
    for (const k of ['tools', 'resources', 'prompts'] as const) {
      const c = capabilities[k] as Record<string, unknown> | undefined;
      if (c) capabilities[k] = Object.fromEntries(Object.entries(c).filter(([key]) => key !== 'listChanged' && key !== 'subscribe'));
    }
    delete capabilities.logging; // removed as a method in 2026-07-28 (logLevel rides in _meta)
    return {
      resultType: 'complete',
      supportedVersions: [...MODERN_VERSIONS],
      capabilities,
      ...(profile.instructions !== undefined && { instructions: profile.instructions }),
      ...(profile.serverInfo !== undefined && { _meta: { [SERVER_INFO_META_KEY]: profile.serverInfo } }),
      ttlMs: 0,
      cacheScope: 'private',
    };
  }

  /** The x-mcp-header annotations of a tool, once the pooled session has read the tool list. */
  async paramHeaders(server: string, identity: Identity): Promise<(tool: string) => ParamHeaders | undefined> {
    const pooled = await this.get(server, identity);
    return (tool) => pooled.tools.get(tool);
  }

  /**
   * One stateless request: through the pipeline on the pooled session, its answer to `sink`.
   * Returns a function to call when the client goes away first (closing the response stream is a
   * 2026 client's cancellation).
   */
  async request(server: string, identity: Identity, message: Record<string, unknown>, sink: ReplySink): Promise<() => void> {
    const pooled = await this.get(server, identity);
    const id = gatewayId();
    const params = message.params as { _meta?: Record<string, unknown> } | undefined;
    const meta = params?._meta;
    const profile = pooled.profile;
    pooled.channel.waiting.set(id, {
      clientId: message.id as RequestId,
      method: message.method as string,
      progressToken: meta?.progressToken,
      wantsLog: meta !== undefined && 'io.modelcontextprotocol/logLevel' in meta,
      // servers SHOULD identify themselves in each result's _meta (SEP-2575)
      sink: { notify: (m) => sink.notify(m), reply: (m) => sink.reply(withServerInfo(m, profile)) },
    });
    void pooled.session.fromClient({ ...message, id }, identity);
    return () => {
      if (!pooled.channel.waiting.delete(id)) return;
      pooled.session.disconnected(id);
      void pooled.session.fromClient({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason: 'the client closed its request' } }, identity);
    };
  }

  /** Ends every pooled session (the gateway is shutting down). */
  async close(): Promise<void> {
    const all = await Promise.allSettled(this.pools.values());
    for (const p of all) if (p.status === 'fulfilled') p.value.session.end('the gateway is shutting down');
  }
}

function withServerInfo(message: JSONRPCMessage, profile: UpstreamProfile): JSONRPCMessage {
  const m = message as { result?: Record<string, unknown> };
  if (!m.result || profile.serverInfo === undefined) return message;
  const meta = (m.result._meta && typeof m.result._meta === 'object' ? m.result._meta : {}) as Record<string, unknown>;
  if (SERVER_INFO_META_KEY in meta) return message;
  return { ...message, result: { ...m.result, _meta: { ...meta, [SERVER_INFO_META_KEY]: profile.serverInfo } } } as JSONRPCMessage;
}
