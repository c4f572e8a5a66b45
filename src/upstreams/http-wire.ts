// The HTTP plumbing the Streamable HTTP connector is built on: node:http(s) requests on shared
// keep-alive agents with bounded set-up, bodies read with a size limit, event streams parsed as
// they arrive, and the one JSON.parse each message gets. No web streams, no fetch.
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { SseParser } from './sse.js';

/** How much of an error answer's body is kept for the log. */
const ERROR_BODY_CHARS = 500;
export const ACCEPT_BOTH = 'application/json, text/event-stream';

/** Keep-alive agents shared by every upstream session: a new session starts on a warm socket. */
const agents = { 'http:': new HttpAgent({ keepAlive: true, noDelay: true }), 'https:': new HttpsAgent({ keepAlive: true, noDelay: true }) };

export interface Target {
  url: URL;
  agent: HttpAgent;
  request: typeof httpRequest;
  connectTimeoutMs: number;
}

export function target(url: URL, connectTimeoutMs: number): Target {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`an HTTP upstream needs an http: or https: URL, not ${url.protocol}`);
  return { url, agent: agents[url.protocol], request: url.protocol === 'https:' ? httpsRequest : httpRequest, connectTimeoutMs };
}

/** Configured headers with lowercase names; those that would break framing are dropped (the connector sets its own). */
export function configuredHeaders(headers: Record<string, string> = {}): Record<string, string> {
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
export function open(t: Target, method: string, headers: OutgoingHttpHeaders, body: string | undefined, o: OpenOptions, retried = false): Promise<IncomingMessage> {
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
export function readText(res: IncomingMessage, limit: number): Promise<string> {
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
export async function errorBody(res: IncomingMessage): Promise<string> {
  const text = await readText(res, 64 * 1024).catch(() => '');
  return text.length > ERROR_BODY_CHARS ? `${text.slice(0, ERROR_BODY_CHARS)}…` : text;
}

export function mediaType(res: IncomingMessage): string {
  return (res.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
}

export const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A JSON-RPC 2.0 envelope: a request or notification (a method), or a response (a result or an error). Its details are the stages' to check. */
function isMessage(v: unknown): v is JSONRPCMessage {
  return isObj(v) && v.jsonrpc === '2.0' && (typeof v.method === 'string' || 'result' in v || 'error' in v);
}

export function isAnswerTo(m: JSONRPCMessage, id: RequestId): boolean {
  const r = m as { method?: unknown; id?: unknown };
  return r.method === undefined && r.id === id;
}

/** Parses one message; undefined (and why, through onInvalid) when it is not JSON or not JSON-RPC. */
export function parseMessage(text: string, onInvalid: (why: string) => void): JSONRPCMessage | undefined {
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

export interface StreamEnd {
  /** The answer to the request the stream was opened for came. */
  answered: boolean;
  /** The stream brought something: an event, or an id to resume after. */
  progressed: boolean;
  lastEventId?: string;
  retryMs?: number;
  /** Why the stream ended early (a broken connection, an oversized event); undefined when the server ended it. */
  broke?: Error;
}

/** Reads an event stream to its end, handing each message on as it arrives. Never rejects. */
export function readEvents(res: IncomingMessage, limit: number, answers: RequestId | undefined, deliver: (m: JSONRPCMessage) => void, onInvalid: (why: string) => void): Promise<StreamEnd> {
  return new Promise((resolve) => {
    let answered = false;
    let events = 0;
    let broke: Error | undefined;
    const parser = new SseParser((data, type) => {
      events++;
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
      resolve({ answered, progressed: events > 0 || parser.lastEventId !== undefined, lastEventId: parser.lastEventId, retryMs: parser.retryMs, broke });
    });
  });
}
