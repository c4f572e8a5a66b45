// What every HTTP request to /mcp must pass before the MCP transport sees it: Host and Origin
// (DNS rebinding, browsers), media type, size and nesting limits. Each refusal is a clear
// status with a JSON-RPC error body; nothing refused here reaches a session.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import type { Config } from '../config/schema.js';
import { classify, depthExceeds, INVALID_REQUEST, PARSE_ERROR, ShapeError } from '../gateway/classify.js';

export class HttpRefusal extends Error {
  constructor(
    readonly status: number,
    readonly rpcCode: number,
    message: string,
    readonly headers: Record<string, string> = {},
    /** The JSON-RPC id the error answers, when the request's id could be read. */
    readonly id: string | number | null = null,
    /** The JSON-RPC error's data (the supported versions of -32022, say). */
    readonly data?: unknown,
  ) {
    super(message);
  }
}

export function sendRefusal(res: ServerResponse, r: HttpRefusal, id: unknown = null): void {
  if (res.headersSent) return void res.end();
  res.writeHead(r.status, { 'content-type': 'application/json', ...r.headers });
  res.end(JSON.stringify({ jsonrpc: '2.0', id: r.id ?? id, error: { code: r.rpcCode, message: r.message, ...(r.data !== undefined && { data: r.data }) } }));
}

const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

function hostName(hostHeader: string): string {
  if (hostHeader.startsWith('[')) {
    // "[v6]" or "[v6]:port" only: anything else after the bracket ("[::1].evil.example") is another name.
    const m = /^(\[[^\]]*\])(?::\d*)?$/.exec(hostHeader);
    return m ? m[1].toLowerCase() : hostHeader.toLowerCase();
  }
  const colon = hostHeader.lastIndexOf(':');
  return (colon === -1 ? hostHeader : hostHeader.slice(0, colon)).toLowerCase();
}

export function isLoopbackHost(name: string): boolean {
  return LOOPBACK_NAMES.has(name) || name.endsWith('.localhost') || (isIP(name) === 4 && name.startsWith('127.'));
}

/**
 * SPEC 10: bound to loopback, only loopback Host names (or allowedHosts); elsewhere, allowedHosts
 * when set. An Origin must be in allowedOrigins, or be the gateway's own origin as named by a Host
 * that passed that check: a DNS-rebinding page cannot produce that pair, a same-origin call can.
 */
export function checkHostAndOrigin(req: IncomingMessage, listen: Config['listen'], boundToLoopback: boolean): void {
  const host = req.headers.host;
  let hostValidated = false;
  if (boundToLoopback || listen.allowedHosts.length > 0) {
    const name = host ? hostName(host) : '';
    hostValidated = (boundToLoopback && isLoopbackHost(name)) || listen.allowedHosts.some((h) => h.toLowerCase() === name || h.toLowerCase() === host?.toLowerCase());
    if (!hostValidated) throw new HttpRefusal(403, INVALID_REQUEST, `Host "${host ?? ''}" is not allowed (listen.allowedHosts)`);
  }
  const origin = req.headers.origin;
  if (origin === undefined || listen.allowedOrigins.includes(origin)) return;
  const sameOrigin = hostValidated && host !== undefined && (origin.toLowerCase() === `http://${host.toLowerCase()}` || origin.toLowerCase() === `https://${host.toLowerCase()}`);
  if (!sameOrigin) throw new HttpRefusal(403, INVALID_REQUEST, `Origin "${origin}" is not allowed (listen.allowedOrigins)`);
}

/** Reads and parses a POST body under the configured limits; the only JSON.parse on the path. */
export async function readJsonBody(req: IncomingMessage, limits: Config['limits']): Promise<unknown> {
  const type = req.headers['content-type'];
  const essence = type?.split(';')[0].trim().toLowerCase();
  if (essence !== 'application/json') throw new HttpRefusal(415, INVALID_REQUEST, 'Content-Type must be application/json');
  if (req.headers['content-encoding'] !== undefined && req.headers['content-encoding'] !== 'identity') {
    throw new HttpRefusal(415, INVALID_REQUEST, 'Content-Encoding is not accepted: send the body uncompressed');
  }
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limits.maxBodyBytes) throw tooLarge(limits.maxBodyBytes);
  const body = await readBody(req, limits.maxBodyBytes);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new HttpRefusal(400, PARSE_ERROR, `Parse error: ${(e as Error).message}`);
  }
  if (depthExceeds(parsed, limits.maxDepth)) throw new HttpRefusal(400, INVALID_REQUEST, `message nesting is deeper than ${limits.maxDepth} (limits.maxDepth)`);
  return parsed;
}

/** The body, at most `max` bytes (beyond: 413; the rest is discarded, and the connection closes after the answer). Events, not an async iterator: this runs per request. */
function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= max) return void chunks.push(chunk);
      done();
      req.resume();
      reject(tooLarge(max));
    };
    const onEnd = () => {
      done();
      resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    };
    const onError = (e: Error) => {
      done();
      reject(e);
    };
    const onClose = () => {
      done();
      reject(new Error('the request was cut off before its body was complete'));
    };
    const done = () => {
      req.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
    };
    req.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}

function tooLarge(max: number): HttpRefusal {
  return new HttpRefusal(413, INVALID_REQUEST, `request body is over ${max} bytes (limits.maxBodyBytes)`, { connection: 'close' });
}

/** Refuses, with a proper HTTP error, what cannot be answered inside a stream: batches, bad envelopes. */
export function earlyCheck(body: unknown): unknown {
  try {
    const c = classify(body, true);
    return c.type === 'notification' ? null : c.id;
  } catch (e) {
    if (e instanceof ShapeError) throw new HttpRefusal(400, e.code, e.message, {}, e.id);
    throw e;
  }
}

