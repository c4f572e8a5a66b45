// The Streamable HTTP upstream connector (protocol 2025-11-25, client side), written for relaying:
// each message is serialised once and each answer parsed once (no second validation pass: the
// gateway's stages classify what they forward), event streams are read straight off the socket,
// sockets are kept alive and shared between sessions, and no library's private field is touched.
// Also the 2026-07-28 side: probeHttpEra (which era a server speaks) and sendModern (one
// stateless request whose headers are regenerated from its body).
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import {
  HEADER_MISMATCH,
  MISSING_REQUIRED_CLIENT_CAPABILITY,
  modernRequestHeaders,
  PROTOCOL_VERSION_META,
  UNSUPPORTED_PROTOCOL_VERSION,
  type ToolDefinition,
} from '../protocol/mcp-headers.js';
import { SseParser, SseTooLarge } from './sse.js';

/** The modern revision this connector speaks when asked to. */
export const MODERN_PROTOCOL_VERSION = '2026-07-28';

export interface HttpUpstreamOptions {
  /** Sent with every request: the upstream's credentials from the config. */
  headers?: Record<string, string>;
  /** The largest message accepted from the upstream (a JSON body, one event). Default 64 MiB. */
  maxMessageBytes?: number;
  /** TCP (and TLS) connection set-up, at most. Default 10 s. */
  connectTimeoutMs?: number;
  /** How long a GET or DELETE may take to answer with its status. Default 10 s. */
  answerTimeoutMs?: number;
  /** Reopening a broken event stream when the server named no `retry:` delay: exponential from initialMs to maxMs; `attempts` failures in a row and it gives up. */
  reconnect?: { initialMs: number; maxMs: number; attempts: number };
  /** How long after a request's event stream broke the connector keeps resuming it. Default 10 min. */
  resumeForMs?: number;
}

const DEFAULTS = {
  maxMessageBytes: 64 * 1024 * 1024,
  connectTimeoutMs: 10_000,
  answerTimeoutMs: 10_000,
  reconnect: { initialMs: 1_000, maxMs: 30_000, attempts: 3 },
  resumeForMs: 10 * 60_000,
};
/** A server's `retry: 0` must not turn reconnecting into a busy loop. */
const MIN_RECONNECT_MS = 100;
/** How much of an error answer's body is kept for the log. */
const ERROR_BODY_CHARS = 500;
const ACCEPT_BOTH = 'application/json, text/event-stream';

/** Keep-alive agents shared by every upstream session: a new session starts on a warm socket. */
const agents = { 'http:': new HttpAgent({ keepAlive: true, noDelay: true }), 'https:': new HttpsAgent({ keepAlive: true, noDelay: true }) };

interface Target {
  url: URL;
  agent: HttpAgent;
  request: typeof httpRequest;
  connectTimeoutMs: number;
}

function target(url: URL, connectTimeoutMs: number): Target {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`an HTTP upstream needs an http: or https: URL, not ${url.protocol}`);
  return { url, agent: agents[url.protocol], request: url.protocol === 'https:' ? httpsRequest : httpRequest, connectTimeoutMs };
}

/** Configured headers with lowercase names; those that would break framing are dropped (the connector sets its own). */
function configuredHeaders(headers: Record<string, string> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (lower !== 'content-length' && lower !== 'transfer-encoding') out[lower] = value;
  }
  return out;
}

/** The upstream answered, but not as the protocol says (a status, a content type, a body): not a network failure. */
export class UpstreamAnswerError extends Error {
  override name = 'UpstreamAnswerError';
  constructor(
    message: string,
    readonly status?: number,
    /** Retrying cannot help (405: the server offers no such stream). */
    readonly final = false,
  ) {
    super(message);
  }
}

interface OpenOptions {
  /** Requests in flight, so close() can end them. */
  live?: Set<ClientRequest>;
  answerTimeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Sends one request and resolves with the response once its status line and headers are in. A
 * POST that meets a kept-alive socket the server had just closed (ECONNRESET before any answer)
 * is sent once more on a new one, as Node's documentation advises: the server never read it.
 */
function open(t: Target, method: string, headers: OutgoingHttpHeaders, body: string | undefined, o: OpenOptions, retried = false): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    if (o.signal?.aborted) return reject(o.signal.reason);
    let req: ClientRequest;
    try {
      req = t.request(t.url, { method, headers, agent: t.agent });
    } catch (e) {
      return reject(e); // a header value Node refuses (a CR or LF in the config)
    }
    o.live?.add(req);
    let connectTimer: NodeJS.Timeout | undefined;
    const answerTimer = o.answerTimeoutMs ? setTimeout(() => req.destroy(new Error(`no answer within ${o.answerTimeoutMs} ms`)), o.answerTimeoutMs) : undefined;
    const onAbort = () => req.destroy(o.signal!.reason instanceof Error ? o.signal!.reason : new Error('aborted'));
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const settled = () => {
      clearTimeout(connectTimer);
      clearTimeout(answerTimer);
    };
    req.once('socket', (socket) => {
      if (!socket.connecting) return; // a kept-alive socket
      connectTimer = setTimeout(() => req.destroy(new Error(`no connection within ${t.connectTimeoutMs} ms`)), t.connectTimeoutMs);
      socket.once(t.url.protocol === 'https:' ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer));
    });
    let responded = false;
    req.once('response', (res) => {
      responded = true;
      settled();
      res.on('error', () => undefined); // seen through 'close' and res.complete by whoever reads it
      resolve(res);
    });
    req.once('close', () => {
      settled();
      o.live?.delete(req);
      o.signal?.removeEventListener('abort', onAbort);
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      settled();
      if (!responded && !retried && req.reusedSocket && e.code === 'ECONNRESET' && !o.signal?.aborted) resolve(open(t, method, headers, body, o, true));
      else reject(e);
    });
    req.end(body);
  });
}

/** A response body as text, at most `limit` bytes (beyond: an error, and the connection is dropped). */
function readText(res: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(res.headers['content-length']);
    if (declared > limit) {
      res.destroy();
      return reject(new UpstreamAnswerError(`an answer of ${declared} bytes, over the limit of ${limit}`));
    }
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        res.destroy();
        reject(new UpstreamAnswerError(`an answer over the limit of ${limit} bytes`));
      } else chunks.push(chunk);
    });
    res.once('end', () => resolve(chunks.length === 1 ? chunks[0].toString('utf8') : Buffer.concat(chunks, size).toString('utf8')));
    res.once('close', () => {
      if (!res.complete) reject(new Error('the connection broke before the answer was complete'));
    });
  });
}

/** The start of an error answer's body, for the log (which scrubs secrets from it); never fails. */
async function errorBody(res: IncomingMessage): Promise<string> {
  const text = await readText(res, 64 * 1024).catch(() => '');
  return text.length > ERROR_BODY_CHARS ? `${text.slice(0, ERROR_BODY_CHARS)}…` : text;
}

function mediaType(res: IncomingMessage): string {
  return (res.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A JSON-RPC 2.0 envelope: a request or notification (a method), or a response (a result or an error). Its details are the stages' to check. */
function isMessage(v: unknown): v is JSONRPCMessage {
  return isObj(v) && v.jsonrpc === '2.0' && (typeof v.method === 'string' || 'result' in v || 'error' in v);
}

function isAnswerTo(m: JSONRPCMessage, id: RequestId): boolean {
  const r = m as { method?: unknown; id?: unknown };
  return r.method === undefined && r.id === id;
}

/** Parses one message; undefined (and why, through onInvalid) when it is not JSON or not JSON-RPC. */
function parseMessage(text: string, onInvalid: (why: string) => void): JSONRPCMessage | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    onInvalid('the upstream sent something that is not JSON');
    return undefined;
  }
  if (isMessage(value)) return value;
  onInvalid('the upstream sent JSON that is not a JSON-RPC message');
  return undefined;
}

interface StreamEnd {
  /** The answer to the request the stream was opened for came. */
  answered: boolean;
  lastEventId?: string;
  retryMs?: number;
  /** Why the stream ended early (a broken connection, an oversized event); undefined when the server ended it. */
  broke?: Error;
}

/** Reads an event stream to its end, handing each message on as it arrives. Never rejects. */
function readEvents(res: IncomingMessage, limit: number, answers: RequestId | undefined, deliver: (m: JSONRPCMessage) => void, onInvalid: (why: string) => void): Promise<StreamEnd> {
  return new Promise((resolve) => {
    let answered = false;
    let broke: Error | undefined;
    const parser = new SseParser((data, type) => {
      if (type !== 'message') return; // MCP sends its messages as plain "message" events
      const m = parseMessage(data, onInvalid);
      if (!m) return;
      if (answers !== undefined && isAnswerTo(m, answers)) answered = true;
      deliver(m);
    }, limit);
    res.on('data', (chunk: Buffer) => {
      if (broke) return;
      try {
        parser.push(chunk);
      } catch (e) {
        broke = e as Error;
        res.destroy();
      }
    });
    res.once('error', (e) => (broke ??= e));
    res.once('close', () => {
      parser.end();
      if (!res.complete) broke ??= new Error('the connection broke');
      resolve({ answered, lastEventId: parser.lastEventId, retryMs: parser.retryMs, broke });
    });
  });
}

/** What a modern exchange may be given besides its message. */
export interface ModernOptions {
  /** For tools/call: the tool's definition, whose x-mcp-header annotations become Mcp-Param-* headers. */
  tool?: ToolDefinition;
  /** Messages the server sends before its answer (progress, logging), as they arrive. */
  onmessage?: (message: JSONRPCMessage) => void;
  /** Aborting closes the answer's stream, which a modern server takes as the request's cancellation. */
  signal?: AbortSignal;
}

/**
 * POSTs one modern request (no session) with its metadata headers regenerated from its body, and
 * resolves with the server's answer, also when it came with an HTTP error status (400 with
 * -32022, 404 with -32601: a modern server's way to refuse). Anything that is not a JSON-RPC
 * answer to this request rejects with an UpstreamAnswerError; a network failure rejects as it is.
 * A notification resolves with undefined once accepted (202).
 */
async function exchangeModern(t: Target, headers: Record<string, string>, message: JSONRPCMessage, limit: number, o: ModernOptions = {}): Promise<JSONRPCMessage | undefined> {
  const m = message as { id?: RequestId; method?: unknown };
  if (typeof m.method !== 'string') throw new TypeError('a modern exchange sends a request or a notification');
  const all = { ...headers, accept: ACCEPT_BOTH, 'content-type': 'application/json', ...modernRequestHeaders(message as { method: string; params?: unknown }, o.tool) };
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

/** The errors only a modern server answers with. */
const MODERN_ERRORS = new Set([HEADER_MISMATCH, MISSING_REQUIRED_CLIENT_CAPABILITY, UNSUPPORTED_PROTOCOL_VERSION]);

/**
 * Which era an HTTP server speaks (2026-07-28, basic/versioning and the Streamable HTTP binding's
 * backward compatibility): POSTs server/discover with modern `_meta` and headers. A DiscoverResult,
 * or a recognised modern error (-32020, -32021, -32022; its `data.supported` when it has one),
 * means modern; any other answer means legacy (fall back to initialize). A network failure rejects:
 * a server that cannot be reached has no era.
 */
export async function probeHttpEra(url: string | URL, headers: Record<string, string> = {}, o: { clientInfo?: { name: string; version: string }; connectTimeoutMs?: number; signal?: AbortSignal } = {}): Promise<HttpEra> {
  const discover = {
    jsonrpc: '2.0',
    id: 'portcullis-discover',
    method: 'server/discover',
    params: {
      _meta: {
        [PROTOCOL_VERSION_META]: MODERN_PROTOCOL_VERSION,
        'io.modelcontextprotocol/clientInfo': o.clientInfo ?? { name: 'portcullis', version: '0' },
        'io.modelcontextprotocol/clientCapabilities': {},
      },
    },
  } as JSONRPCMessage;
  let answer: JSONRPCMessage | undefined;
  try {
    const t = target(new URL(url), o.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs);
    answer = await exchangeModern(t, configuredHeaders(headers), discover, 1024 * 1024, { signal: o.signal });
  } catch (e) {
    if (e instanceof UpstreamAnswerError) return { era: 'legacy', reason: e.message };
    throw e;
  }
  const a = answer as { result?: unknown; error?: { code?: unknown; message?: unknown; data?: unknown } };
  const strings = (v: unknown) => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined);
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
 * A Streamable HTTP session with one upstream, as the SDK's Transport (so TransportUpstream wraps
 * it like the others). Each message is its own POST; the answer comes as JSON, or as an event
 * stream delivered event by event; after `notifications/initialized` a GET stream carries what the
 * server sends on its own. A stream that breaks before its answer (or that the server closes to
 * make the client poll, SEP-1699) is resumed with GET and Last-Event-ID after the server's
 * `retry:` delay. send() of a request settles when its answer has been delivered, or rejects when
 * it cannot come (the answer's stream ended without it and cannot be resumed), so the waiting
 * call fails at once rather than at its timeout.
 */
export class StreamableHttpUpstreamTransport implements Transport {
  onmessage?: (message: JSONRPCMessage) => void;
  onerror?: (error: Error) => void;
  onclose?: () => void;
  /** Set when the connector closed on its own: the upstream ended the session. */
  endedBecause?: string;
  private session?: string;
  private protocolVersion?: string;
  private readonly target: Target;
  private readonly configured: Record<string, string>;
  private readonly o: typeof DEFAULTS;
  private readonly live = new Set<ClientRequest>();
  private readonly waits = new Set<() => void>();
  private postHeaders?: OutgoingHttpHeaders;
  private listening = false;
  /** terminateSession or close has begun: nothing is reopened, and what breaks now is no error. */
  private ending = false;
  private closed = false;

  constructor(url: URL, options: HttpUpstreamOptions = {}) {
    this.o = { ...DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) } as typeof DEFAULTS;
    this.target = target(url, this.o.connectTimeoutMs);
    this.configured = configuredHeaders(options.headers);
  }

  get sessionId(): string | undefined {
    return this.session;
  }

  async start(): Promise<void> {
    // Nothing to connect: the first POST (initialize) opens the first socket.
  }

  send(message: JSONRPCMessage): Promise<void> {
    if (this.ending) return Promise.reject(new Error('the connection to the upstream is closed'));
    const body = JSON.stringify(message);
    const m = message as { method?: unknown; id?: RequestId };
    const sent = typeof m.method === 'string' && m.id !== undefined ? this.request(body, m.id) : this.notify(body, m.method === 'notifications/initialized');
    // What breaks because the session is closing is no error: nobody waits for it any more.
    return sent.catch((e: Error) => {
      if (!this.ending) throw e;
    });
  }

  setProtocolVersion(version: string): void {
    this.protocolVersion = version;
    this.postHeaders = undefined;
  }

  /**
   * One modern (2026-07-28) request, stateless: no session id, and its MCP-Protocol-Version,
   * Mcp-Method, Mcp-Name and Mcp-Param-* headers regenerated from the body (the last from
   * `o.tool`'s inputSchema). Resolves with the server's answer; see exchangeModern.
   */
  sendModern(message: JSONRPCMessage, o: ModernOptions = {}): Promise<JSONRPCMessage | undefined> {
    if (this.ending) return Promise.reject(new Error('the connection to the upstream is closed'));
    return exchangeModern(this.target, this.configured, message, this.o.maxMessageBytes, o);
  }

  /** Ends the session at the server (DELETE with its id); 405 means the server does not end sessions that way. */
  async terminateSession(): Promise<void> {
    this.ending = true; // the streams the DELETE ends must not be reopened
    const session = this.session;
    if (!session) return;
    this.session = undefined;
    const res = await open(this.target, 'DELETE', this.headers({}, session), undefined, { live: this.live, answerTimeoutMs: this.o.answerTimeoutMs });
    res.resume();
    const status = res.statusCode ?? 0;
    if (!(status >= 200 && status < 300) && status !== 404 && status !== 405) throw new UpstreamAnswerError(`HTTP ${status} to the session's DELETE`, status);
  }

  /** Ends every request and stream of this session and its timers; idle sockets go back to the shared pool. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = this.ending = true;
    for (const wake of this.waits) wake();
    // With an error of our own: a bare destroy() reads as a reset socket, which open() would retry.
    const closing = new Error('the session is closing');
    for (const req of this.live) req.destroy(closing);
    this.onclose?.();
  }

  private headers(extra: Record<string, string>, session = this.session): OutgoingHttpHeaders {
    const h: OutgoingHttpHeaders = { ...this.configured, ...extra };
    if (session) h['mcp-session-id'] = session;
    if (this.protocolVersion) h['mcp-protocol-version'] = this.protocolVersion;
    return h;
  }

  /** POSTs a body; resolves with a 2xx response, else rejects with what went wrong (a 404 for the session's id ends the session). */
  private async post(body: string): Promise<IncomingMessage> {
    const headers = (this.postHeaders ??= this.headers({ accept: ACCEPT_BOTH, 'content-type': 'application/json' }));
    const res = await open(this.target, 'POST', headers, body, { live: this.live });
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) {
      try {
        this.noteSession(res);
      } catch (e) {
        res.destroy();
        throw e;
      }
      return res;
    }
    const text = await errorBody(res);
    if (status === 404 && headers['mcp-session-id']) this.sessionGone();
    throw new UpstreamAnswerError(`HTTP ${status}${status >= 300 && status < 400 ? ' (redirects are not followed)' : ''}${text ? `: ${text}` : ''}`, status);
  }

  private async notify(body: string, initialized: boolean): Promise<void> {
    const res = await this.post(body);
    res.resume(); // 202, or a body nobody asked for
    if (initialized) this.listen();
  }

  private async request(body: string, id: RequestId): Promise<void> {
    const res = await this.post(body);
    const type = mediaType(res);
    if (res.statusCode === 202) return void res.resume(); // accepted: the answer comes on the GET stream
    if (type === 'application/json') {
      let invalid = '';
      const value = parseMessage(await readText(res, this.o.maxMessageBytes), (why) => (invalid = why));
      if (!value) throw new UpstreamAnswerError(invalid);
      this.deliver(value);
      // Anything else (an error without an id, another request's answer) means this answer will not come.
      if (!isAnswerTo(value, id)) throw new UpstreamAnswerError('the JSON body is not the answer to this request');
      return;
    }
    if (type !== 'text/event-stream') {
      res.resume();
      throw new UpstreamAnswerError(`the upstream answered with content type "${type}"`);
    }
    let end = await this.events(res, id);
    let failures = 0;
    const until = Date.now() + this.o.resumeForMs;
    while (!end.answered && !this.ending) {
      // Resuming would replay the same oversized event.
      if (end.broke instanceof SseTooLarge) throw new UpstreamAnswerError(`the upstream sent ${end.broke.message}`);
      // Without an event id there is nothing to resume from: the answer cannot come any more.
      if (end.lastEventId === undefined) throw new UpstreamAnswerError(end.broke ? `the answer's event stream broke: ${end.broke.message}` : 'the upstream ended the event stream without the answer');
      if (Date.now() > until) throw new UpstreamAnswerError(`no answer after resuming the event stream for ${this.o.resumeForMs} ms`);
      await this.wait(end.retryMs ?? this.backoff(failures));
      if (this.ending) return;
      let next: StreamEnd;
      try {
        next = await this.events(await this.openStream(end.lastEventId), id);
      } catch (e) {
        if ((e as UpstreamAnswerError).final || ++failures >= this.o.reconnect.attempts) throw new Error(`could not resume the answer's event stream: ${(e as Error).message}`);
        continue;
      }
      // A server that closes a stream to be polled again is fine; one whose streams keep breaking before any event is not.
      failures = next.broke && next.lastEventId === undefined ? failures + 1 : 0;
      if (failures >= this.o.reconnect.attempts) throw new Error(`could not resume the answer's event stream: ${next.broke!.message}`);
      end = { ...next, lastEventId: next.lastEventId ?? end.lastEventId, retryMs: next.retryMs ?? end.retryMs };
    }
  }

  /** Opens the GET stream for what the server sends on its own; once, after initialization. */
  private listen(): void {
    if (this.listening || this.ending) return;
    this.listening = true;
    this.listenLoop()
      .catch((e: Error) => this.ending || this.onerror?.(new Error(`the upstream's event stream is gone: ${e.message}`)))
      .finally(() => (this.listening = false));
  }

  private async listenLoop(): Promise<void> {
    let lastEventId: string | undefined;
    let retryMs: number | undefined;
    let failures = 0;
    while (!this.ending) {
      let res: IncomingMessage;
      try {
        res = await this.openStream(lastEventId);
      } catch (e) {
        if ((e as UpstreamAnswerError).status === 405) return; // the server offers no such stream: fine
        if ((e as UpstreamAnswerError).final || ++failures >= this.o.reconnect.attempts) throw e;
        await this.wait(retryMs ?? this.backoff(failures - 1));
        continue;
      }
      const end = await this.events(res, undefined);
      if (end.broke instanceof SseTooLarge) throw end.broke; // reopening would replay it
      failures = end.broke && end.lastEventId === undefined ? failures + 1 : 0;
      if (failures >= this.o.reconnect.attempts) throw end.broke!;
      lastEventId = end.lastEventId ?? lastEventId;
      retryMs = end.retryMs ?? retryMs;
      if (this.ending) return;
      await this.wait(retryMs ?? this.backoff(0));
    }
  }

  /** GET of an event stream: the session's own, or with Last-Event-ID the rest of a broken one. */
  private async openStream(lastEventId: string | undefined): Promise<IncomingMessage> {
    const sent = this.headers(lastEventId === undefined ? { accept: 'text/event-stream' } : { accept: 'text/event-stream', 'last-event-id': lastEventId });
    const res = await open(this.target, 'GET', sent, undefined, { live: this.live, answerTimeoutMs: this.o.answerTimeoutMs });
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300 && mediaType(res) === 'text/event-stream') return res;
    const text = await errorBody(res);
    if (status === 404 && sent['mcp-session-id']) this.sessionGone();
    const final = status === 405 || status === 404 || (status >= 200 && status < 300);
    throw new UpstreamAnswerError(`HTTP ${status}${status < 300 ? ` with content type "${mediaType(res)}"` : ''} to the event stream's GET${text ? `: ${text}` : ''}`, status, final);
  }

  private events(res: IncomingMessage, answers: RequestId | undefined): Promise<StreamEnd> {
    return readEvents(res, this.o.maxMessageBytes, answers, (m) => this.deliver(m), (why) => this.onerror?.(new Error(why)));
  }

  private deliver(m: JSONRPCMessage): void {
    try {
      this.onmessage?.(m);
    } catch (e) {
      this.onerror?.(e as Error);
    }
  }

  /** The session id the server assigned (with the initialize answer); only visible ASCII, as the spec requires. */
  private noteSession(res: IncomingMessage): void {
    const id = res.headers['mcp-session-id'];
    if (typeof id !== 'string' || this.session !== undefined) return;
    if (!/^[\x21-\x7e]+$/.test(id)) throw new UpstreamAnswerError('the upstream assigned a session id with characters other than visible ASCII');
    this.session = id;
    this.postHeaders = undefined;
  }

  /** 404 for the session's id: the server ended the session, and it cannot be used any more. */
  private sessionGone(): void {
    if (this.ending) return;
    this.endedBecause = 'ended the session (HTTP 404 for its session id)';
    this.session = undefined;
    void this.close();
  }

  private backoff(failures: number): number {
    return Math.min(this.o.reconnect.initialMs * 2 ** failures, this.o.reconnect.maxMs);
  }

  /** Waits ms (at least MIN_RECONNECT_MS), or until close(). */
  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.waits.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, Math.max(ms, MIN_RECONNECT_MS));
      this.waits.add(wake);
    });
  }
}
