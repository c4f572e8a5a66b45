// The Streamable HTTP upstream connector (protocol 2025-11-25, client side), written for relaying:
// each message is serialised once and each answer parsed once (no second validation pass: the
// gateway's stages classify what they forward), event streams are read straight off the socket,
// sockets are kept alive and shared between sessions, and no library's private field is touched.
// The 2026-07-28 side (sendModern, probeHttpEra) is in ./http-modern.ts.
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { exchangeModern, type ModernOptions } from './http-modern.js';
import { ACCEPT_BOTH, configuredHeaders, errorBody, isAnswerTo, mediaType, open, parseMessage, readEvents, readText, target, UpstreamAnswerError, type StreamEnd, type Target } from './http-wire.js';
import { SseTooLarge } from './sse.js';

export { probeHttpEra, type HttpEra, type ModernOptions } from './http-modern.js';
export { UpstreamAnswerError } from './http-wire.js';

export interface HttpUpstreamOptions {
  /** Sent with every request: the upstream's credentials from the config. */
  headers?: Record<string, string>;
  /** The largest message accepted from the upstream (a JSON body, one event). Default 64 MiB. */
  maxMessageBytes?: number;
  /** TCP (and TLS) connection set-up, at most. Default 10 s. */
  connectTimeoutMs?: number;
  /** How long a GET may take to answer with its status. Default 10 s. */
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
/** A session's end waits for its DELETE: an upstream that does not answer must not hold it up for long. */
const DELETE_TIMEOUT_MS = 2_000;
/** A server's `retry: 0` must not turn reconnecting into a busy loop. */
const MIN_RECONNECT_MS = 100;

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
    const res = await open(this.target, 'DELETE', this.headers({}, session), undefined, { live: this.live, answerTimeoutMs: DELETE_TIMEOUT_MS });
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
    // failures: resumptions in a row that could not be opened or broke before bringing anything;
    // quiet: streams in a row that brought nothing, which back off when the server names no delay.
    let failures = 0;
    let quiet = 0;
    const until = Date.now() + this.o.resumeForMs;
    while (!end.answered && !this.ending) {
      // Resuming would replay the same oversized event.
      if (end.broke instanceof SseTooLarge) throw new UpstreamAnswerError(`the upstream sent ${end.broke.message}`);
      // Without an event id there is nothing to resume from: the answer cannot come any more.
      if (end.lastEventId === undefined) throw new UpstreamAnswerError(end.broke ? `the answer's event stream broke: ${end.broke.message}` : 'the upstream ended the event stream without the answer');
      if (Date.now() > until) throw new UpstreamAnswerError(`no answer after resuming the event stream for ${this.o.resumeForMs} ms`);
      await this.wait(end.retryMs ?? this.backoff(Math.max(failures, quiet)));
      if (this.ending) return;
      let next: StreamEnd;
      try {
        next = await this.events(await this.openStream(end.lastEventId), id);
      } catch (e) {
        if ((e as UpstreamAnswerError).final || ++failures >= this.o.reconnect.attempts) throw new Error(`could not resume the answer's event stream: ${(e as Error).message}`);
        continue;
      }
      // A server that closes a stream to be polled again is fine; one whose streams keep breaking before any event is not.
      quiet = next.progressed ? 0 : quiet + 1;
      failures = next.broke && !next.progressed ? failures + 1 : 0;
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
    let quiet = 0;
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
      quiet = end.progressed ? 0 : quiet + 1;
      failures = end.broke && !end.progressed ? failures + 1 : 0;
      if (failures >= this.o.reconnect.attempts) throw end.broke!;
      lastEventId = end.lastEventId ?? lastEventId;
      retryMs = end.retryMs ?? retryMs;
      if (this.ending) return;
      await this.wait(retryMs ?? this.backoff(quiet));
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
