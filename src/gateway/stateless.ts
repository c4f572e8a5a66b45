// MCP 2026-07-28 clients need no session (SEP-2567, SEP-2575): each request stands alone and
// carries its protocol version and capabilities in `_meta`. The gateway serves them on upstream
// sessions of its own: one per server and credential, opened on that credential's first request
// (initialize on its behalf), shared by its later requests. Every request still runs the whole
// pipeline with its own verified identity; only its JSON-RPC id is replaced on the way up (two
// clients' id 1 must not meet on one upstream session) and restored on the way back. What a
// 2025-era upstream answers is given the 2026 shape: resultType, cache hints, serverInfo, the
// 2026 resource-not-found code. A 2025 upstream's own request during a call (elicitation,
// sampling, roots), once policy allowed it, becomes an input-required result (SEP-2322); the
// client's retry carries the answers back and continues the call, which waits meanwhile. Its
// requestState is sealed by this gateway (HMAC): bound to the caller's credential, the method
// and the call's parameters, and short-lived.
import { classifyInboundRequest } from '@modelcontextprotocol/server';
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { digestArgs } from '../audit/chain.js';
import { identityKey, type Identity } from '../auth/identity.js';
import { packageVersion } from '../version.js';
import { paramHeadersOf, type ParamHeaders } from '../fronts/request-headers.js';
import { CAPABILITY_FOR, CLIENT_CAPABILITIES_KEY, CLIENT_INFO_KEY, gatewayEnvelope, LOG_LEVEL_KEY, MODERN_PROTOCOL_VERSION, PROTOCOL_VERSION_KEY, SERVER_INFO_KEY as SERVER_INFO_META_KEY } from '../upstreams/era.js';
import { forwardHeaders } from '../upstreams/forwarded-headers.js';
import { errorResponse, INVALID_PARAMS, UPSTREAM_ERROR } from './classify.js';
import type { Session, ClientChannel } from './session.js';

export const MODERN_VERSIONS: readonly string[] = [MODERN_PROTOCOL_VERSION];
export const UNSUPPORTED_PROTOCOL_VERSION = -32022;

/** 2025-era methods that 2026-07-28 removed, and what this gateway does not carry for 2026 clients yet. */
const NOT_2026_METHODS: Record<string, string> = {
  initialize: 'initialize is the 2025-era handshake: a 2026-07-28 request carries its version in _meta instead',
  ping: 'ping was removed in 2026-07-28',
  'logging/setLevel': 'logging/setLevel was removed in 2026-07-28: set io.modelcontextprotocol/logLevel in _meta',
  'resources/subscribe': 'resources/subscribe was removed in 2026-07-28 (subscriptions/listen replaces it)',
  'resources/unsubscribe': 'resources/unsubscribe was removed in 2026-07-28 (subscriptions/listen replaces it)',
};

/** Why a 2026 client cannot call this method here, or undefined when it can. */
export function notA2026Method(method: string): string | undefined {
  return Object.hasOwn(NOT_2026_METHODS, method) ? NOT_2026_METHODS[method] : undefined;
}

/** Whether a message may be a 2026-era request: a cheap look at `_meta` first, so 2025 traffic pays nothing. */
export function claimsModern(body: unknown, versionHeader?: string): boolean {
  const meta = (body as { params?: { _meta?: unknown } } | null)?.params?._meta;
  if (typeof meta === 'object' && meta !== null && PROTOCOL_VERSION_KEY in meta) return true;
  return versionHeader !== undefined && versionHeader >= MODERN_VERSIONS[0];
}

export type Era = { kind: 'modern'; version: string } | { kind: 'legacy' } | { kind: 'refused'; status: number; code: number; message: string; data?: unknown };

/**
 * A message's era by the SDK's rules (classifyInboundRequest: the body decides; HTTP adds its
 * headers): modern with the version it names, legacy after all (an initialize), or refused (a
 * 2026 header on a body without the envelope, a malformed envelope, header and body naming
 * different versions, a version this gateway does not serve).
 */
export function eraOf(body: unknown, headers: EraHeaders = {}): Era {
  const key = modernKey(body, headers);
  const known = key === undefined ? undefined : modernEras.get(key);
  if (known) return known;
  const era = eraBySdk(body, headers);
  if (key !== undefined && era.kind === 'modern') {
    if (modernEras.size >= MODERN_ERAS_KEPT) modernEras.clear();
    modernEras.set(key, Object.freeze(era));
  }
  return era;
}

type EraHeaders = { protocolVersionHeader?: string; mcpMethodHeader?: string; mcpNameHeader?: string };

/**
 * The SDK's era rules are a schema pass over every request (~10 µs), though a client sends the
 * same envelope each time. For a well-formed request they read only its method, its `_meta` and
 * the two headers (the top-level members are checked strictly, params loosely, Mcp-Name not at
 * all), so a modern verdict is kept under those; anything else goes to the SDK every time. A
 * property test holds this equal to the SDK's own answer.
 */
const modernEras = new Map<string, Era>();
const MODERN_ERAS_KEPT = 1024;
const REQUEST_MEMBERS = new Set(['jsonrpc', 'id', 'method', 'params']);

function modernKey(body: unknown, headers: EraHeaders): string | undefined {
  if (!isPlain(body)) return undefined;
  const { jsonrpc, id, method, params } = body as { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: unknown };
  if (jsonrpc !== '2.0' || typeof method !== 'string' || method === 'initialize' || method.length > 64) return undefined;
  if (!(typeof id === 'string' || Number.isSafeInteger(id))) return undefined;
  for (const k in body as object) if (!REQUEST_MEMBERS.has(k)) return undefined;
  const meta = isPlain(params) ? (params as { _meta?: unknown })._meta : undefined;
  if (!isPlain(meta) || !(PROTOCOL_VERSION_KEY in (meta as object))) return undefined;
  return `${method}\n${headers.protocolVersionHeader ?? '\0'}\n${headers.mcpMethodHeader ?? '\0'}\n${JSON.stringify(meta)}`;
}

function isPlain(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** eraOf without the kept verdicts: the SDK's answer every time. */
export function eraBySdk(body: unknown, headers: EraHeaders = {}): Era {
  const route = classifyInboundRequest({ httpMethod: 'POST', ...headers, body });
  if (route.kind === 'reject') return { kind: 'refused', status: route.httpStatus, code: route.code, message: route.message, data: route.data };
  if (route.kind === 'legacy') return { kind: 'legacy' };
  const requested = route.classification.revision;
  if (requested !== undefined && MODERN_VERSIONS.includes(requested)) return { kind: 'modern', version: requested };
  const why = requested === undefined ? ': the request did not name a protocol version' : requested < MODERN_VERSIONS[0] ? `: ${requested} (served through initialize, in a session)` : `: ${requested}`;
  // The versions a request may name in _meta, as server/discover lists them (2025 ones go through initialize).
  return { kind: 'refused', status: 400, code: UNSUPPORTED_PROTOCOL_VERSION, message: `Unsupported protocol version${why}`, data: { supported: [...MODERN_VERSIONS], ...(requested !== undefined && { requested }) } };
}

/** Results 2026-07-28 makes cacheable (SEP-2549): they carry ttlMs and cacheScope. */
const CACHEABLE = new Set(['tools/list', 'prompts/list', 'resources/list', 'resources/templates/list', 'resources/read', 'server/discover']);

/** 2025's "resource not found"; 2026-07-28 answers it with Invalid Params. */
const LEGACY_RESOURCE_NOT_FOUND = -32002;

/** How long a sealed requestState is good for; the suspended call itself ends earlier if the upstream times out. */
const STATE_TTL_MS = 10 * 60_000;

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
  /** The client capabilities this request declared (`_meta` io.modelcontextprotocol/clientCapabilities). */
  capabilities: Record<string, unknown>;
  /** What a retry must repeat: the credential, and the digest of the call's own parameters. */
  principal: string;
  readonly digest: string;
  sink: ReplySink;
}

/** A call waiting for its client's answers: the upstream's requests it was given, by inputRequests key. */
interface Suspended {
  gatewayId: RequestId;
  waiting: Waiting;
  asked: Map<string, RequestId>;
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
const SUBSCRIPTION_ID_KEY = 'io.modelcontextprotocol/subscriptionId';
/** subscriptions/listen filter flags, by the notification each one asks for. */
const LIST_CHANGED: Record<string, string> = {
  'notifications/tools/list_changed': 'toolsListChanged',
  'notifications/prompts/list_changed': 'promptsListChanged',
  'notifications/resources/list_changed': 'resourcesListChanged',
};

/** A notification as one subscription receives it: tagged with the id of the client's listen request. */
function tagged(message: JSONRPCMessage, subscriptionId: RequestId): JSONRPCMessage {
  const m = message as { params?: Record<string, unknown> };
  const meta = (m.params?._meta ?? {}) as Record<string, unknown>;
  return { ...message, params: { ...m.params, _meta: { ...meta, [SUBSCRIPTION_ID_KEY]: subscriptionId } } } as JSONRPCMessage;
}

class PoolChannel implements ClientChannel {
  readonly waiting = new Map<RequestId, Waiting>();
  /** subscriptions/listen streams the gateway serves itself (2025 upstreams), by gateway id, with the flags honoured. */
  readonly listeners = new Map<RequestId, { w: Waiting; flags: Set<string> }>();
  /** Calls suspended on an input-required result, by the state id their requestState names. */
  readonly suspended = new Map<string, Suspended>();
  onUnrelated?: (message: JSONRPCMessage) => void;

  constructor(private readonly seal: (stateId: string, w: Waiting) => string) {}

  async send(message: JSONRPCMessage, relatedRequestId?: RequestId): Promise<void> {
    const m = message as { id?: RequestId; method?: string; params?: Record<string, unknown> & { progressToken?: unknown } };
    if (m.method === undefined && m.id !== undefined) {
      const w = this.waiting.get(m.id);
      // The upstream ended a suspended call (timed out, failed): its requestState leads nowhere now.
      for (const [stateId, s] of this.suspended) if (s.gatewayId === m.id) this.suspended.delete(stateId);
      if (!w) return;
      this.waiting.delete(m.id);
      w.sink.reply(toModernReply(message, w));
      return;
    }
    // A 2026 upstream tags what belongs to a subscription with the listen request's id (ours).
    const subscription = (m.params?._meta as Record<string, unknown> | undefined)?.[SUBSCRIPTION_ID_KEY];
    if (m.id === undefined && subscription !== undefined) {
      const w = this.waiting.get(subscription as RequestId);
      if (w) w.sink.notify(tagged(message, w.clientId));
      return;
    }
    // A 2025 upstream's change notifications go to the listen streams that asked for them, never to a request's.
    const flag = m.method === undefined ? undefined : LIST_CHANGED[m.method];
    if (flag) {
      for (const { w, flags } of this.listeners.values()) if (flags.has(flag)) w.sink.notify(tagged(message, w.clientId));
      return this.onUnrelated?.(message);
    }
    if (m.method === 'notifications/resources/updated') return;
    const related = this.relatedTo(m.params?.progressToken, relatedRequestId);
    if (m.id !== undefined) return this.inputRequired(m as { id: RequestId; method: string; params?: Record<string, unknown> }, related);
    if (!related) return this.onUnrelated?.(message);
    const w = related[1];
    if (m.method === 'notifications/message' && !w.wantsLog) return;
    w.sink.notify(message);
  }

  /**
   * A 2025 upstream asks the client something during a call (policy has allowed it): the call is
   * suspended and its client gets an input-required result naming the request. Throwing refuses
   * it: the pipeline then answers the upstream with the error (stages.ts deliver, answerUpstream).
   */
  private inputRequired(m: { id: RequestId; method: string; params?: Record<string, unknown> }, related: [RequestId, Waiting] | undefined): void {
    if (!related) throw new Error(`${m.method} belongs to no single call of a 2026-07-28 client here: refused`);
    const [gatewayId, w] = related;
    const capability = CAPABILITY_FOR[m.method];
    if (!capability || !(capability in w.capabilities)) throw new Error(`the 2026-07-28 client of this call did not declare the ${capability ?? m.method} capability`);
    this.waiting.delete(gatewayId);
    const stateId = randomUUID();
    const key = `${capability}-${randomUUID().slice(0, 8)}`;
    this.suspended.set(stateId, { gatewayId, waiting: w, asked: new Map([[key, m.id]]) });
    w.sink.reply({
      jsonrpc: '2.0',
      id: w.clientId,
      result: { resultType: 'input_required', inputRequests: { [key]: { method: m.method, ...(m.params !== undefined && { params: m.params }) } }, requestState: this.seal(stateId, w) },
    } as JSONRPCMessage);
  }

  /** By progress token; otherwise only when exactly one request waits (never a guess among several). */
  private relatedTo(token: unknown, related: RequestId | undefined): [RequestId, Waiting] | undefined {
    if (token !== undefined) {
      for (const entry of this.waiting) if (entry[1].progressToken === token) return entry;
      return undefined;
    }
    if (this.waiting.size !== 1) return undefined;
    const only = this.waiting.entries().next().value!;
    return related === undefined || this.waiting.has(related) ? only : undefined;
  }

  async close(): Promise<void> {
    for (const [id, w] of this.waiting) w.sink.reply(toModernReply(errorResponse(id, UPSTREAM_ERROR, 'the upstream session ended'), w));
    // A subscription the server ends gets a result: a graceful end, not a dropped stream.
    for (const { w } of this.listeners.values()) w.sink.reply({ jsonrpc: '2.0', id: w.clientId, result: { resultType: 'complete' } } as JSONRPCMessage);
    this.waiting.clear();
    this.suspended.clear();
    this.listeners.clear();
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
  openSession(id: string, server: string, identity: Identity, channel: ClientChannel, opts: { stateless: true }): Promise<Session>;
}

interface Pooled {
  session: Session;
  channel: PoolChannel;
  profile: UpstreamProfile;
  /** Each tool's x-mcp-header annotations, from the upstream's tools/list (refreshed on list_changed). */
  tools: Map<string, ParamHeaders | undefined>;
  /** Whether the upstream speaks 2026-07-28 itself (requests then carry the 2026 envelope up). */
  modern: boolean;
}

let nextId = 0;
/** Gateway-made request ids: unique on every pooled session, never a client's. */
const gatewayId = (): string => `pcl-${(nextId = (nextId + 1) % Number.MAX_SAFE_INTEGER)}`;

export class StatelessPool {
  private readonly pools = new Map<string, Promise<Pooled>>();
  /** Seals requestState: per process, since a suspended call lives in this process only. */
  private readonly stateKey = randomBytes(32);

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
    const channel = new PoolChannel((stateId, w) => this.seal(stateId, w));
    const session = await this.host.openSession(randomUUID(), server, identity, channel, { stateless: true });
    const verdict = session.upstream?.verdict;
    const modern = verdict?.era === 'modern';
    const pooled: Pooled = { session, channel, profile: { capabilities: {} }, tools: new Map(), modern };
    if (verdict?.era === 'modern') {
      // A 2026 upstream: nothing to open; requests reach it as they are. What it said of itself
      // when asked is what server/discover answers.
      const d = verdict.discover as { capabilities?: Record<string, unknown>; instructions?: unknown; _meta?: Record<string, unknown> };
      pooled.profile = { capabilities: d.capabilities ?? {}, serverInfo: d._meta?.[SERVER_INFO_META_KEY], instructions: d.instructions };
      channel.onUnrelated = () => {};
      if (pooled.profile.capabilities.tools) await this.learnTools(pooled, identity);
      return pooled;
    }
    const init = await this.call(pooled, identity, 'initialize', {
      protocolVersion: LATEST_PROTOCOL_VERSION,
      // The gateway can carry these to a 2026 client as input-required results; a request whose
      // client did not declare the capability is refused to the upstream.
      capabilities: { elicitation: { form: {}, url: {} }, sampling: {}, roots: {} },
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
      pooled.channel.waiting.set(id, { clientId: id, method: '', wantsLog: false, capabilities: {}, principal: '', digest: '', sink: { notify: () => {}, reply: (m) => resolve(m as never) } });
      const envelope = pooled.modern ? { _meta: gatewayEnvelope() } : {};
      void pooled.session.fromClient({ jsonrpc: '2.0', id, method, params: { ...params, ...envelope } }, identity);
    });
  }

  /** What server/discover answers: the upstream's identity and capabilities, as far as a 2026 client can use them. */
  async discover(server: string, identity: Identity): Promise<Record<string, unknown>> {
    const { profile, modern } = await this.get(server, identity);
    const capabilities = { ...profile.capabilities };
    // A 2026 upstream serves subscriptions/listen itself; for a 2025 one the gateway does, without
    // resource subscriptions.
    const resources = capabilities.resources as Record<string, unknown> | undefined;
    if (!modern && resources) capabilities.resources = Object.fromEntries(Object.entries(resources).filter(([key]) => key !== 'subscribe'));
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
  async request(server: string, identity: Identity, message: Record<string, unknown>, sink: ReplySink, unknownHeaders: Record<string, string> = {}): Promise<() => void> {
    const pooled = await this.get(server, identity);
    const params = (message.params ?? {}) as Record<string, unknown> & { _meta?: Record<string, unknown> };
    const meta = params._meta;
    const profile = pooled.profile;
    const capabilities = meta?.[CLIENT_CAPABILITIES_KEY];
    let digest: string | undefined;
    const waiting: Waiting = {
      clientId: message.id as RequestId,
      method: message.method as string,
      progressToken: meta?.progressToken,
      wantsLog: meta !== undefined && LOG_LEVEL_KEY in meta,
      capabilities: typeof capabilities === 'object' && capabilities !== null ? (capabilities as Record<string, unknown>) : {},
      principal: identityKey(identity),
      // Needed only when a call is suspended or resumed: not computed for every request.
      get digest() {
        return (digest ??= callDigest(params));
      },
      // servers SHOULD identify themselves in each result's _meta (SEP-2575)
      sink: { notify: (m) => sink.notify(m), reply: (m) => sink.reply(withServerInfo(m, profile)) },
    };
    if (!pooled.modern && waiting.method === 'subscriptions/listen') return this.listen(pooled, waiting, params);
    const state = params.requestState;
    // Ours continues a suspended call (bridged from a 2025 upstream, which mints none); a 2026
    // upstream's requestState is its own, passed untouched.
    const id = !pooled.modern && typeof state === 'string' && state.startsWith(STATE_PREFIX) ? this.resume(pooled, identity, waiting, state, params.inputResponses) : gatewayId();
    if (id === undefined) return () => {};
    if (!pooled.channel.waiting.has(id)) {
      pooled.channel.waiting.set(id, waiting);
      // A 2025 upstream gets a 2025 request: the 2026 envelope is this hop's (read above), and a
      // dual-era server would take a request carrying it for a 2026 one outside its session.
      const up = { ...message, id, ...(!pooled.modern && meta && { params: { ...params, _meta: withoutEnvelope(meta) } }) };
      // Only a 2026 upstream sees HTTP headers of the request; a 2025 session has none to forward.
      if (pooled.modern) forwardHeaders(up, unknownHeaders);
      void pooled.session.fromClient(up, identity);
    }
    return () => {
      if (!pooled.channel.waiting.delete(id)) return;
      pooled.session.disconnected(id);
      void pooled.session.fromClient({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason: 'the client closed its request' } }, identity);
    };
  }

  /**
   * subscriptions/listen on a 2025 upstream, served by the gateway: acknowledged at once with the
   * list-change flags the upstream can honour (it announces list_changed), then fed the upstream
   * session's change notifications. Resource subscriptions are not honoured here (omitted from
   * the acknowledgement, as the spec has servers do with what they do not support).
   */
  private listen(pooled: Pooled, w: Waiting, params: Record<string, unknown>): () => void {
    const asked = (params.notifications ?? {}) as Record<string, unknown>;
    const caps = pooled.profile.capabilities;
    const announces = (list: string) => (caps[list] as { listChanged?: unknown } | undefined)?.listChanged === true;
    const honoured = ['toolsListChanged', 'promptsListChanged', 'resourcesListChanged'].filter((flag) => asked[flag] === true && announces(flag.replace('ListChanged', '')));
    const id = gatewayId();
    pooled.channel.listeners.set(id, { w, flags: new Set(honoured) });
    w.sink.notify({ jsonrpc: '2.0', method: 'notifications/subscriptions/acknowledged', params: { _meta: { [SUBSCRIPTION_ID_KEY]: w.clientId }, notifications: Object.fromEntries(honoured.map((f) => [f, true])) } } as JSONRPCMessage);
    return () => void pooled.channel.listeners.delete(id);
  }

  private seal(stateId: string, w: Waiting): string {
    const payload = Buffer.from(JSON.stringify({ s: stateId, p: w.principal, m: w.method, d: w.digest, e: Date.now() + STATE_TTL_MS })).toString('base64url');
    return `${STATE_PREFIX}${payload}.${createHmac('sha256', this.stateKey).update(payload).digest('base64url')}`;
  }

  /**
   * A retry that carries a requestState this gateway sealed: checked (seal, expiry, credential,
   * method, the call's parameters), then the client's answers go to the upstream's waiting
   * requests and the retry takes the suspended call's place. Returns the call's gateway id, or
   * undefined after answering the retry with why it cannot continue.
   */
  private resume(pooled: Pooled, identity: Identity, w: Waiting, state: string, responses: unknown): RequestId | undefined {
    const refuse = (why: string) => void w.sink.reply({ jsonrpc: '2.0', id: w.clientId, error: { code: INVALID_PARAMS, message: `requestState: ${why}` } } as JSONRPCMessage);
    const [payload, mac] = state.slice(STATE_PREFIX.length).split('.');
    const expected = createHmac('sha256', this.stateKey).update(payload ?? '').digest();
    const given = Buffer.from(mac ?? '', 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return refuse('not sealed by this gateway (or by another replica, or before a restart): call again without it');
    const s = JSON.parse(Buffer.from(payload, 'base64url').toString()) as { s: string; p: string; m: string; d: string; e: number };
    if (s.e < Date.now()) return refuse('expired: call again without it');
    if (s.p !== w.principal) return refuse('it was issued to another credential');
    if (s.m !== w.method || s.d !== w.digest) return refuse('the retry must repeat the original request (method and parameters)');
    const suspended = pooled.channel.suspended.get(s.s);
    if (!suspended) return refuse('the call it continues has ended (answered, timed out or cancelled): call again without it');
    pooled.channel.suspended.delete(s.s);
    pooled.channel.waiting.set(suspended.gatewayId, w);
    const answers = typeof responses === 'object' && responses !== null ? (responses as Record<string, unknown>) : {};
    for (const [key, serverRequestId] of suspended.asked) {
      const answer = answers[key];
      const reply = answer !== undefined && typeof answer === 'object' ? { jsonrpc: '2.0', id: serverRequestId, result: answer } : { jsonrpc: '2.0', id: serverRequestId, error: { code: INVALID_PARAMS, message: `the client did not answer ${key}` } };
      void pooled.session.fromClient(reply, identity);
    }
    return suspended.gatewayId;
  }

  /** Ends every pooled session (the gateway is shutting down). */
  async close(): Promise<void> {
    const all = await Promise.allSettled(this.pools.values());
    for (const p of all) if (p.status === 'fulfilled') p.value.session.end('the gateway is shutting down');
  }
}

const STATE_PREFIX = 'pcl1.';

/** The per-request envelope keys of 2026-07-28, which a 2025 session carries in initialize instead. */
const ENVELOPE_KEYS = new Set([PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY, CLIENT_INFO_KEY, LOG_LEVEL_KEY]);

function withoutEnvelope(meta: Record<string, unknown>): Record<string, unknown> | undefined {
  const rest = Object.fromEntries(Object.entries(meta).filter(([k]) => !ENVELOPE_KEYS.has(k)));
  return Object.keys(rest).length ? rest : undefined;
}

/** What a retry must repeat of the original request: its parameters, without the envelope and the round trip's own fields. */
function callDigest(params: Record<string, unknown>): string {
  const { _meta: _envelope, inputResponses: _answers, requestState: _state, ...call } = params;
  return digestArgs(call);
}

function withServerInfo(message: JSONRPCMessage, profile: UpstreamProfile): JSONRPCMessage {
  const m = message as { result?: Record<string, unknown> };
  if (!m.result || profile.serverInfo === undefined) return message;
  const meta = (m.result._meta && typeof m.result._meta === 'object' ? m.result._meta : {}) as Record<string, unknown>;
  if (SERVER_INFO_META_KEY in meta) return message;
  return { ...message, result: { ...m.result, _meta: { ...meta, [SERVER_INFO_META_KEY]: profile.serverInfo } } } as JSONRPCMessage;
}
