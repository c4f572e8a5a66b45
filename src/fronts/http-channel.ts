// The downstream side of one Streamable HTTP session (MCP 2025-11-25 and the revisions before
// it), written for relaying on node:http: the body mcpHandler parsed and classified is handed on
// as is, and each message for the client is serialised once, into an SSE event written straight
// to the ServerResponse.
//
// Streams: each POSTed request gets its own (its related messages, then its answer, then the
// end); the GET stream carries what belongs to no request. A request answered before anything
// else came for it, within ANSWER_WAIT_MS, gets that answer as one application/json body
// instead: the transport allows either, and a JSON body spares the client an SSE parser (about a
// third of the SDK client's CPU per call, measured). A client whose Accept header ranks the
// event stream first gets its stream at once, whatever comes. Every event has an id
// `<stream>.<n>` (n counts the session's events), and the last events are kept, so a client that
// lost a connection comes back with GET and Last-Event-ID and gets what followed on that stream.
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import { SUPPORTED_PROTOCOL_VERSIONS } from '@modelcontextprotocol/sdk/types.js';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Identity } from '../auth/identity.js';
import { INVALID_REQUEST } from '../gateway/classify.js';
import type { ClientChannel } from '../gateway/session.js';
import { HttpRefusal } from './http-request.js';

/** Events kept per session for Last-Event-ID: enough to resume a dropped stream, not a history. */
const KEPT_EVENTS = 128;
const KEPT_BYTES = 1024 * 1024;
/** GET-stream messages that wait for the client to open it (today's bound), and their bytes. */
const WAITING_MESSAGES = 1000;
const WAITING_BYTES = 4 * 1024 * 1024;
/** A client that has not read this much of a stream is not reading: its connection is cut (it may resume). */
const UNREAD_BYTES = 32 * 1024 * 1024;
/** A comment on every open stream this often, so proxies and clients do not take it for dead. */
const KEEPALIVE_MS = 15_000;
/** The reconnection delay the gateway suggests (`retry:`), in a request stream's priming event and when it closes a GET stream itself (its token expired). */
const RETRY_MS = 1_000;
/** The first revision whose clients expect an empty priming event (SEP-1699); older ones would choke on it. */
const PRIMING_SINCE = '2025-11-25';
/**
 * A request's first bytes wait this long for its answer: an answer that comes first and sooner
 * leaves as one JSON body, in one write. Otherwise (something else comes first, or the time is
 * up) the response becomes an SSE stream, opened by its priming event, so a client holds an
 * event id to resume with well before a long call ends. A client cannot resume before it holds
 * an event id, so waiting loses nothing that was had.
 */
const ANSWER_WAIT_MS = 250;
/** The standalone (GET) stream's number; request streams count from 1. */
const STANDALONE = 0;
const DONE = Promise.resolve();

interface RequestStream {
  readonly key: number;
  /** The connection carrying it now; none while the client is away (its events are kept). */
  res?: ServerResponse;
  /** Nothing written yet: the priming event is still to come ('' when there is none), and no headers. */
  unsent?: string;
  timer?: NodeJS.Timeout;
}

interface KeptEvent {
  readonly stream: number;
  readonly n: number;
  readonly frame: string;
}

/** What mcpHandler has checked before calling handle: authentication, the session's owner, and for a POST its body (one message, classified) and headers. */
export class HttpChannel implements ClientChannel {
  /** A message from the client, with the verified identity of the HTTP request that carried it. */
  onmessage?: (message: unknown, identity: Identity) => void;
  /** The client ended the session (DELETE). */
  onclose?: () => void;

  private closed = false;
  private nextStream = 1;
  private events = 0;
  private readonly requests = new Map<RequestId, RequestStream>();
  private standalone?: ServerResponse;
  /** GET-stream messages (serialised) written while no GET stream was open; they get their event ids when written. */
  private waiting: string[] = [];
  private waitingBytes = 0;
  private readonly kept: KeptEvent[] = [];
  private keptBytes = 0;
  private readonly open = new Set<ServerResponse>();
  private keepAlive?: NodeJS.Timeout;
  private readonly headers: OutgoingHttpHeaders;
  private readonly jsonHeaders: OutgoingHttpHeaders;

  constructor(readonly sessionId: string) {
    this.headers = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache, no-transform', 'x-accel-buffering': 'no', 'mcp-session-id': sessionId };
    this.jsonHeaders = { 'content-type': 'application/json', 'mcp-session-id': sessionId };
  }

  /** A response goes on its request's stream and ends it; another message on its related request's stream, else on the GET stream. */
  send(message: JSONRPCMessage, relatedRequestId?: RequestId): Promise<void> {
    if (this.closed) return DONE;
    const m = message as { id?: RequestId; method?: unknown };
    const response = m.method === undefined;
    const id = response ? m.id : relatedRequestId;
    const stream = id === undefined || id === null ? undefined : this.requests.get(id);
    if (stream) {
      if (response) this.requests.delete(id!);
      const res = stream.res;
      if (response && stream.unsent !== undefined) {
        // The answer came first: one JSON body (there is no stream to resume; a client gone meanwhile loses nothing it could have had).
        clearTimeout(stream.timer);
        stream.unsent = undefined;
        if (res && !res.writableEnded) res.writeHead(200, this.jsonHeaders).end(JSON.stringify(message));
        return DONE;
      }
      const frame = this.startStream(stream) + this.keep(stream.key, JSON.stringify(message));
      if (res) response ? finish(res, frame) : write(res, frame);
      return DONE;
    }
    if (response) return Promise.reject(new Error(`no open request ${JSON.stringify(m.id)} to answer on this session (answered, cancelled, or never made here)`));
    // Its request is over (or there was none): the GET stream, which is for what belongs to no running request.
    const json = JSON.stringify(message);
    if (this.standalone) write(this.standalone, this.keep(STANDALONE, json));
    else this.wait(json);
    return DONE;
  }

  /** A cancelled request gets no answer: its stream ends now rather than when the session does. */
  cancelled(id: RequestId): void {
    const stream = this.requests.get(id);
    if (!stream) return;
    this.requests.delete(id);
    this.startStream(stream);
    stream.res?.end();
  }

  async handle(req: IncomingMessage, res: ServerResponse, body: unknown, identity: Identity): Promise<void> {
    if (this.closed) throw new HttpRefusal(404, -32001, 'Session not found: start a new session with initialize');
    if (req.method === 'POST') return this.post(req, res, body, identity);
    refuseUnsupportedVersion(req);
    if (req.method === 'DELETE') {
      this.onclose?.();
      await this.close();
      res.writeHead(200).end();
      return;
    }
    if (!(req.headers.accept ?? '').includes('text/event-stream')) throw new HttpRefusal(406, INVALID_REQUEST, 'Not Acceptable: a GET must accept text/event-stream');
    const lastEventId = req.headers['last-event-id'];
    if (typeof lastEventId === 'string') return this.resume(res, lastEventId, identity);
    if (this.standalone) throw new HttpRefusal(409, INVALID_REQUEST, 'Conflict: this session already has its GET stream open (one at a time); to resume a dropped one, send Last-Event-ID');
    this.openStandalone(res, identity, undefined);
  }

  close(): Promise<void> {
    if (this.closed) return DONE;
    this.closed = true;
    clearInterval(this.keepAlive);
    for (const res of this.open) res.end();
    this.open.clear();
    for (const stream of this.requests.values()) {
      clearTimeout(stream.timer);
      // Not started: an empty stream, as a started one ends.
      if (stream.unsent !== undefined && stream.res && !stream.res.headersSent) stream.res.writeHead(200, this.headers).end();
    }
    this.requests.clear();
    this.standalone = undefined;
    this.waiting = [];
    this.kept.length = 0;
    return DONE;
  }

  private post(req: IncomingMessage, res: ServerResponse, body: unknown, identity: Identity): void {
    const m = body as { id?: RequestId; method?: unknown; params?: { protocolVersion?: unknown } };
    if (typeof m.method !== 'string' || m.id === undefined) {
      // A notification or a response: taken in, answered 202 with no body.
      this.onmessage?.(body, identity);
      res.writeHead(202).end();
      return;
    }
    // Never two streams for one id: answers are routed by id. The session admits ids uniquely, so this is a bug if reached.
    if (this.requests.has(m.id)) throw new HttpRefusal(400, INVALID_REQUEST, `request id ${JSON.stringify(m.id)} is already in flight in this session`, {}, m.id);
    const stream: RequestStream = { key: this.nextStream++, res };
    this.requests.set(m.id, stream);
    this.follow(res, () => {
      if (stream.res !== res) return;
      stream.res = undefined;
      clearTimeout(stream.timer);
    });
    const version = m.method === 'initialize' ? m.params?.protocolVersion : req.headers['mcp-protocol-version'];
    stream.unsent = typeof version === 'string' && version >= PRIMING_SINCE ? `id: ${stream.key}.${++this.events}\nretry: ${RETRY_MS}\ndata: \n\n` : '';
    // A client that asked for SSE first gets its stream (and an event id to resume with) at once.
    if (prefersEventStream(req.headers.accept)) this.begin(stream);
    else stream.timer = setTimeout(() => this.begin(stream), ANSWER_WAIT_MS);
    this.onmessage?.(body, identity);
  }

  /** Sends a request stream's headers and priming event now. */
  private begin(stream: RequestStream): void {
    const first = this.startStream(stream);
    if (!stream.res) return;
    if (first) write(stream.res, first);
    else stream.res.flushHeaders();
  }

  /** The request's response becomes an SSE stream (its headers, kept alive from now); returns what goes first in its next write, the priming event. */
  private startStream(stream: RequestStream): string {
    const unsent = stream.unsent;
    if (unsent === undefined) return '';
    stream.unsent = undefined;
    clearTimeout(stream.timer);
    if (stream.res) this.startSse(stream.res);
    return unsent;
  }

  /** GET with Last-Event-ID: what followed that event on its stream, then the stream goes on here (or ends, when it already has). */
  private resume(res: ServerResponse, lastEventId: string, identity: Identity): void {
    const parsed = /^(\d{1,9})\.(\d{1,15})$/.exec(lastEventId);
    const key = parsed ? Number(parsed[1]) : NaN;
    if (!parsed || key >= this.nextStream) throw new HttpRefusal(400, INVALID_REQUEST, `Last-Event-ID "${lastEventId.slice(0, 64)}" is no event of this session`);
    const after = Number(parsed[2]);
    if (key === STANDALONE) {
      if (this.standalone) throw new HttpRefusal(409, INVALID_REQUEST, 'Conflict: the GET stream is open on another connection');
      return this.openStandalone(res, identity, after);
    }
    let stream: RequestStream | undefined;
    for (const s of this.requests.values()) if (s.key === key) stream = s;
    if (stream?.res) throw new HttpRefusal(409, INVALID_REQUEST, 'Conflict: that stream is open on another connection');
    this.follow(res, () => stream?.res === res && (stream.res = undefined));
    this.startSse(res);
    this.expireWith(res, identity);
    res.flushHeaders();
    for (const e of this.kept) if (e.stream === key && e.n > after) write(res, e.frame);
    // Answered or cancelled: nothing more will come on it.
    if (!stream) return void res.end();
    this.startStream(stream); // (its first connection is gone: this one is its stream now)
    stream.res = res;
  }

  private openStandalone(res: ServerResponse, identity: Identity, after: number | undefined): void {
    this.follow(res, () => this.standalone === res && (this.standalone = undefined));
    this.startSse(res);
    this.expireWith(res, identity);
    res.flushHeaders();
    if (after !== undefined) for (const e of this.kept) if (e.stream === STANDALONE && e.n > after) write(res, e.frame);
    this.standalone = res;
    const waiting = this.waiting;
    this.waiting = [];
    this.waitingBytes = 0;
    for (const json of waiting) write(res, this.keep(STANDALONE, json));
  }

  /** Follows a response's connection: onClose once it has closed (at once when it already had: the client hung up while its body was read). */
  private follow(res: ServerResponse, onClose: () => void): void {
    if (res.destroyed) return void queueMicrotask(onClose);
    res.once('close', () => {
      if (this.open.delete(res) && this.open.size === 0) {
        clearInterval(this.keepAlive);
        this.keepAlive = undefined;
      }
      onClose();
    });
  }

  /** Starts an SSE response (its headers are written with its first bytes), kept alive while it is open. */
  private startSse(res: ServerResponse): void {
    res.writeHead(200, this.headers);
    if (res.destroyed) return;
    this.open.add(res);
    this.keepAlive ??= setInterval(() => {
      for (const r of this.open) write(r, ': keepalive\n\n');
    }, KEEPALIVE_MS).unref();
  }

  /** A GET stream outlives no token: it closes when the identity that opened it expires, and the client comes back with a valid one. */
  private expireWith(res: ServerResponse, identity: Identity): void {
    if (identity.expiresAt === undefined) return;
    const timer = setTimeout(() => res.end(`retry: ${RETRY_MS}\n\n`), Math.min(Math.max(0, identity.expiresAt - Date.now()), 2 ** 31 - 1)).unref();
    res.once('close', () => clearTimeout(timer));
  }

  /** The SSE event for a message, numbered and kept for resumption (bounded: the oldest go first, the newest stays). */
  private keep(stream: number, json: string): string {
    const n = ++this.events;
    const frame = `event: message\nid: ${stream}.${n}\ndata: ${json}\n\n`;
    this.kept.push({ stream, n, frame });
    this.keptBytes += frame.length;
    while (this.kept.length > 1 && (this.kept.length > KEPT_EVENTS || this.keptBytes > KEPT_BYTES)) this.keptBytes -= this.kept.shift()!.frame.length;
    return frame;
  }

  private wait(json: string): void {
    this.waiting.push(json);
    this.waitingBytes += json.length;
    while (this.waiting.length > 1 && (this.waiting.length > WAITING_MESSAGES || this.waitingBytes > WAITING_BYTES)) this.waitingBytes -= this.waiting.shift()!.length;
  }
}

/**
 * Whether an Accept header ranks text/event-stream above application/json: by q-value, then by
 * order. RFC 9110 gives order no weight, but a client that lists the event stream first (the
 * conformance suite does; the SDK lists JSON first) asks for it, and gets it.
 */
export function prefersEventStream(accept: string | undefined): boolean {
  if (accept === undefined || accept === SDK_ACCEPT) return false;
  let sse: { q: number; at: number } | undefined;
  let json: { q: number; at: number } | undefined;
  accept.split(',').forEach((range, at) => {
    const [type, ...params] = range.split(';');
    const name = type!.trim().toLowerCase();
    if (name !== 'text/event-stream' && name !== 'application/json') return;
    let q = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*([01](?:\.\d{0,3})?)\s*$/i.exec(p);
      if (m) q = Number(m[1]);
    }
    if (name === 'text/event-stream') sse ??= { q, at };
    else json ??= { q, at };
  });
  if (!sse) return false;
  return !json || sse.q > json.q || (sse.q === json.q && sse.at < json.at);
}
/** What the SDK clients send: the common case, answered without parsing. */
const SDK_ACCEPT = 'application/json, text/event-stream';

function write(res: ServerResponse, chunk: string): void {
  if (res.writableEnded) return;
  if (res.writableLength > UNREAD_BYTES) return void res.destroy();
  res.write(chunk);
}

function finish(res: ServerResponse, frame: string): void {
  if (!res.writableEnded) res.end(frame);
}

/** MCP-Protocol-Version, when sent, must be one this front speaks (400 otherwise, as the transport spec says). */
export function refuseUnsupportedVersion(req: IncomingMessage, id: RequestId | null = null): void {
  const version = req.headers['mcp-protocol-version'];
  if (typeof version === 'string' && !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
    throw new HttpRefusal(400, INVALID_REQUEST, `unsupported MCP-Protocol-Version "${version}" (supported: ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')})`, {}, id);
  }
}
