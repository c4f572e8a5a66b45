// The 2026-07-28 side of Streamable HTTP: one stateless request whose metadata headers are
// regenerated from its body (exchangeModern, behind the connector's sendModern), and the probe
// that tells a modern server from a legacy one (probeHttpEra); ModernHttpTransport carries a
// session's messages to a 2026 server that way.
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import { headerProblem, modernRequestHeaders, type ToolDefinition } from '../protocol/mcp-headers.js';
import { asksAgain, discoverProbe, gatewayEnvelope, MODERN_ERRORS } from './era.js';
import { INVALID_PARAMS } from '../gateway/classify.js';
import { forwardedHeaders } from './forwarded-headers.js';
import { ACCEPT_BOTH, configuredHeaders, errorBody, isAnswerTo, isObj, mediaType, open, parseMessage, readEvents, readText, target, UpstreamAnswerError, type Target } from './http-wire.js';

/** Set-up bound of the probe's connection. */
const PROBE_CONNECT_TIMEOUT_MS = 10_000;
/** Bound on the tool definitions one connection keeps. */
const MAX_TOOLS = 10_000;

/** What a modern exchange may be given besides its message. */
export interface ModernOptions {
  /** For tools/call: the tool's definition, whose x-mcp-header annotations become Mcp-Param-* headers. */
  tool?: ToolDefinition;
  /** Messages the server sends before its answer (progress, logging), as they arrive. */
  onmessage?: (message: JSONRPCMessage) => void;
  /** Aborting closes the answer's stream, which a modern server takes as the request's cancellation. */
  signal?: AbortSignal;
  /** Headers to pass on as they came (a client's Mcp-Param-* the gateway does not know); the regenerated ones win. */
  forward?: Record<string, string>;
}

/**
 * POSTs one modern request (no session) with its metadata headers regenerated from its body, and
 * resolves with the server's answer, also when it came with an HTTP error status (400 with
 * -32022, 404 with -32601: a modern server's way to refuse). Anything that is not a JSON-RPC
 * answer to this request rejects with an UpstreamAnswerError; a network failure rejects as it is.
 * A notification resolves with undefined once accepted (202).
 */
export async function exchangeModern(t: Target, headers: Record<string, string>, message: JSONRPCMessage, limit: number, o: ModernOptions = {}): Promise<JSONRPCMessage | undefined> {
  const m = message as { id?: RequestId; method?: unknown };
  if (typeof m.method !== 'string') throw new TypeError('a modern exchange sends a request or a notification');
  const all = { ...o.forward, ...headers, accept: ACCEPT_BOTH, 'content-type': 'application/json', ...modernRequestHeaders(message as { method: string; params?: unknown }, o.tool) };
  const res = await open(t, 'POST', all, JSON.stringify(message), { signal: o.signal });
  const status = res.statusCode ?? 0;
  const ok = status >= 200 && status < 300;
  const type = mediaType(res);
  let invalid: string | undefined;
  const onInvalid = (why: string) => (invalid ??= why);
  if (m.id === undefined) {
    res.resume();
    if (ok) return undefined;
    throw new UpstreamAnswerError(`HTTP ${status} for a notification`, status);
  }
  if (ok && status !== 202 && type === 'text/event-stream') {
    let answer: JSONRPCMessage | undefined;
    const end = await readEvents(res, limit, m.id, (x) => (isAnswerTo(x, m.id!) ? (answer = x) : o.onmessage?.(x)), onInvalid);
    if (answer) return answer;
    throw new UpstreamAnswerError(end.broke ? `the answer's event stream broke: ${end.broke.message}` : `the event stream ended without an answer${invalid ? ` (${invalid})` : ''}`, status);
  }
  if (type === 'application/json') {
    const text = await readText(res, limit);
    const answer = parseMessage(text, onInvalid);
    const id = answer && (answer as { id?: unknown }).id;
    // An error about a request the server could not read names no id (null).
    if (answer && !('method' in answer) && (id === m.id || (id === null && 'error' in answer))) return answer;
    throw new UpstreamAnswerError(`HTTP ${status}: ${invalid ?? 'the body is not the answer to this request'}`, status);
  }
  const body = ok ? (res.resume(), '') : await errorBody(res);
  throw new UpstreamAnswerError(`HTTP ${status}${ok ? ` with content type "${type}"` : ''}${body ? `: ${body}` : ''}`, status);
}

/** What probeHttpEra found: a modern server and the versions it supports, or a legacy one and why it is taken for one. */
export type HttpEra = { era: 'modern'; supportedVersions: string[]; discover?: Record<string, unknown> } | { era: 'legacy'; reason: string };


/**
 * Which era an HTTP server speaks (2026-07-28, basic/versioning and the Streamable HTTP binding's
 * backward compatibility): POSTs server/discover with modern `_meta` and headers. A DiscoverResult,
 * or a recognised modern error (-32020, -32021, -32022; its `data.supported` when it has one),
 * means modern (a -32022 that lists 2026-07-28 as supported is asked again, once); any other answer means legacy (fall back to initialize). A network failure rejects:
 * a server that cannot be reached has no era.
 */
export async function probeHttpEra(url: string | URL, headers: Record<string, string> = {}, o: { connectTimeoutMs?: number; signal?: AbortSignal } = {}): Promise<HttpEra> {
  const t = target(new URL(url), o.connectTimeoutMs ?? PROBE_CONNECT_TIMEOUT_MS);
  const ask = () => exchangeModern(t, configuredHeaders(headers), discoverProbe(), 1024 * 1024, { signal: o.signal });
  const strings = (v: unknown) => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined);
  let answer: JSONRPCMessage | undefined;
  try {
    answer = await ask();
    // The DiscoverResult of the second asking carries the capabilities the gateway serves from.
    if (asksAgain(answer)) answer = await ask();
  } catch (e) {
    if (e instanceof UpstreamAnswerError) return { era: 'legacy', reason: e.message };
    throw e;
  }
  const a = answer as { result?: unknown; error?: { code?: unknown; message?: unknown; data?: unknown } };
  if (isObj(a.result)) {
    const versions = strings(a.result.supportedVersions);
    if (versions) return { era: 'modern', supportedVersions: versions, discover: a.result };
    return { era: 'legacy', reason: 'server/discover answered without supportedVersions' };
  }
  if (isObj(a.error) && typeof a.error.code === 'number' && MODERN_ERRORS.has(a.error.code)) {
    return { era: 'modern', supportedVersions: (isObj(a.error.data) && strings(a.error.data.supported)) || [] };
  }
  return { era: 'legacy', reason: `server/discover answered with error ${String(a.error?.code)}: ${String(a.error?.message)}` };
}

/**
 * A 2026-07-28 HTTP upstream as a transport: each request one stateless exchange (sendModern), its
 * answer and what came before it delivered as messages. The tools the upstream lists are kept so
 * that a tools/call carries the Mcp-Param headers their annotations define (a call for a tool this
 * connection has not seen listed reads the list first, once); a tool whose x-mcp-header annotations
 * are invalid is never called, as the spec has clients do (2026-07-28, server/tools); the pipeline
 * leaves it out of every tools/list it passes on, whatever the upstream (src/gateway/stages.ts). notifications/cancelled closes the exchange it names (a 2026
 * server's cancellation). An exchange that fails is answered with an error naming no address; why
 * goes to onerror (the gateway's log, scrubbed).
 */
export class ModernHttpTransport implements Transport {
  onmessage?: (message: JSONRPCMessage) => void;
  onerror?: (error: Error) => void;
  onclose?: () => void;
  private readonly inFlight = new Map<RequestId, AbortController>();
  private readonly tools = new Map<string, ToolDefinition>();
  /** Tools listed with invalid x-mcp-header annotations, and why: never called. */
  private readonly invalid = new Map<string, string>();
  /** The connection's own read of the tool list, made once when a call names a tool not seen listed. */
  private listed?: Promise<void>;

  constructor(
    private readonly connector: { sendModern(message: JSONRPCMessage, o?: ModernOptions): Promise<JSONRPCMessage | undefined>; close(): Promise<void> },
    /** How the error an exchange's caller gets names the upstream. */
    private readonly describe: string,
  ) {}

  async start(): Promise<void> {}

  async send(message: JSONRPCMessage): Promise<void> {
    const m = message as { id?: RequestId; method?: string; params?: { name?: unknown; requestId?: RequestId } };
    if (m.method === undefined) return; // an answer: a 2026 server sends the client no requests
    if (m.id === undefined) {
      if (m.method === 'notifications/cancelled' && m.params?.requestId !== undefined) this.inFlight.get(m.params.requestId)?.abort();
      return;
    }
    const id = m.id;
    const name = m.method === 'tools/call' && typeof m.params?.name === 'string' ? m.params.name : undefined;
    if (name !== undefined && !this.tools.has(name) && !this.invalid.has(name)) await (this.listed ??= this.listTools());
    const problem = name === undefined ? undefined : this.invalid.get(name);
    if (problem !== undefined) {
      const refusal = { jsonrpc: '2.0', id, error: { code: INVALID_PARAMS, message: `Tool ${JSON.stringify(name)} is not available: ${this.describe} defines it with invalid x-mcp-header annotations (${problem})` } };
      queueMicrotask(() => this.onmessage?.(refusal as JSONRPCMessage));
      return;
    }
    const abort = new AbortController();
    this.inFlight.set(id, abort);
    const tool = name === undefined ? undefined : this.tools.get(name);
    this.connector.sendModern(message, { tool, signal: abort.signal, forward: forwardedHeaders(message), onmessage: (x) => this.onmessage?.(x) }).then(
      (answer) => {
        this.inFlight.delete(id);
        if (!answer) return;
        if (m.method === 'tools/list') this.learn(answer);
        this.onmessage?.(answer);
      },
      (e: Error) => {
        this.inFlight.delete(id);
        if (abort.signal.aborted) return; // cancelled: no answer is owed
        this.onerror?.(e);
        this.onmessage?.({ jsonrpc: '2.0', id, error: { code: -32010, message: `${this.describe} could not answer (PCL_UPSTREAM_UNAVAILABLE); the gateway's log says why` } } as JSONRPCMessage);
      },
    );
  }

  /** Keeps each listed tool's definition, or why its annotations are invalid. */
  private learn(answer: JSONRPCMessage): void {
    const tools = (answer as { result?: { tools?: unknown } }).result?.tools;
    if (!Array.isArray(tools)) return;
    for (const t of tools as ToolDefinition[]) {
      if (typeof t?.name !== 'string') continue;
      const problem = headerProblem(t.inputSchema);
      if (problem !== undefined) {
        this.tools.delete(t.name);
        if (this.invalid.size < MAX_TOOLS) this.invalid.set(t.name, problem);
      } else {
        this.invalid.delete(t.name);
        if (this.tools.size < MAX_TOOLS) this.tools.set(t.name, t);
      }
    }
  }

  /** The connection's own read of every page of the tool list (the gateway's envelope, no client's). */
  private async listTools(): Promise<void> {
    let cursor: string | undefined;
    try {
      for (let page = 0; page < 100; page++) {
        const request = { jsonrpc: '2.0', id: `portcullis-tools-${page}`, method: 'tools/list', params: { ...(cursor !== undefined && { cursor }), _meta: gatewayEnvelope() } } as JSONRPCMessage;
        const answer = await this.connector.sendModern(request);
        if (answer) this.learn(answer);
        const result = (answer as { result?: { nextCursor?: unknown } } | undefined)?.result;
        if (typeof result?.nextCursor !== 'string') return;
        cursor = result.nextCursor;
      }
    } catch (e) {
      // The call goes on without the annotations; a 2026 server refuses it (-32020) if it needed them.
      this.onerror?.(e as Error);
    }
  }

  async close(): Promise<void> {
    for (const abort of this.inFlight.values()) abort.abort();
    this.inFlight.clear();
    await this.connector.close().catch(() => undefined);
    this.onclose?.();
  }
}
