// The 2026-07-28 era on POST /mcp/<server>: a request that names its protocol version in
// `_meta` is served on its own, with no Mcp-Session-Id. Its era is read from the body (the SDK's
// own rules, classifyInboundRequest), its headers are checked against that body before anything
// is opened for it, and it then runs the pipeline on the gateway's pooled upstream session
// (gateway/stateless.ts). The answer is one JSON object, or an SSE stream when the upstream sends
// progress first; the client closing that stream cancels the request.
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Identity } from '../auth/identity.js';
import { INVALID_REQUEST, METHOD_NOT_FOUND, UPSTREAM_ERROR } from '../gateway/classify.js';
import type { Gateway } from '../gateway/gateway.js';
import { claimsModern, eraOf, notA2026Method, UNSUPPORTED_PROTOCOL_VERSION } from '../gateway/stateless.js';
import { earlyCheck, HttpRefusal } from './http-request.js';
import { checkParamHeaders, checkStandardHeaders, HEADER_MISMATCH, HeaderMismatch, singleHeader, unknownParamHeaders } from './request-headers.js';

/** Whether a POST may be a 2026-era request (see claimsModern). */
export function looksModern(req: IncomingMessage, body: unknown): boolean {
  const header = req.headers['mcp-protocol-version'];
  return claimsModern(body, typeof header === 'string' ? header : undefined);
}

/** The 2026 version a POST names, or undefined when it is 2025 traffic after all; throws the HTTP refusal. */
export function modernVersion(req: IncomingMessage, body: unknown, id: RequestId | null): string | undefined {
  let era;
  try {
    era = eraOf(body, { protocolVersionHeader: singleHeader(req, 'mcp-protocol-version'), mcpMethodHeader: singleHeader(req, 'mcp-method'), mcpNameHeader: singleHeader(req, 'mcp-name') });
  } catch (e) {
    if (e instanceof HeaderMismatch) throw new HttpRefusal(400, HEADER_MISMATCH, e.message, {}, id, e.data);
    throw e;
  }
  if (era.kind === 'refused') throw new HttpRefusal(era.status, era.code, era.message, {}, id, era.data);
  return era.kind === 'modern' ? era.version : undefined;
}

/** Serves one 2026-07-28 request or notification. */
export async function serveStateless(gw: Gateway, req: IncomingMessage, res: ServerResponse, server: string, identity: Identity, body: Record<string, unknown>, version: string): Promise<void> {
  const method = body.method as string;
  const removed = notA2026Method(method);
  // A removed method is unknown to 2026-07-28, whatever its params say: 404 before any shape check.
  if (removed && body.id !== undefined) throw new HttpRefusal(404, METHOD_NOT_FOUND, `Method not found: ${removed}`, {}, body.id as RequestId);
  const id = earlyCheck(body) as RequestId | null;
  const accept = req.headers.accept ?? '';
  if (!accept.includes('application/json') || !accept.includes('text/event-stream')) {
    throw new HttpRefusal(406, INVALID_REQUEST, 'Not Acceptable: the Accept header must list both application/json and text/event-stream', {}, id);
  }
  const mismatch = (e: unknown) => (e instanceof HeaderMismatch ? new HttpRefusal(400, HEADER_MISMATCH, e.message, {}, id, e.data) : e);
  try {
    checkStandardHeaders(req, body, version);
  } catch (e) {
    throw mismatch(e);
  }
  // 2026-07-28 defines no client notification over HTTP (closing a stream cancels): accepted, dropped.
  if (id === null) {
    res.writeHead(202).end();
    return;
  }
  const pool = gw.stateless;
  try {
    if (method === 'server/discover') return sendJson(res, 200, { jsonrpc: '2.0', id, result: await pool.discover(server, identity) });
    let unknown: Record<string, string> = {};
    if (method === 'tools/call') {
      const lookup = await pool.paramHeaders(server, identity);
      try {
        checkParamHeaders(req, body, lookup);
        unknown = unknownParamHeaders(req, body, lookup);
      } catch (e) {
        throw mismatch(e);
      }
    }
    const cancel = await pool.request(server, identity, body, responder(res), unknown);
    res.once('close', () => !res.writableFinished && cancel());
  } catch (e) {
    if (e instanceof HttpRefusal) throw e;
    const status = (e as { status?: number }).status ?? 502;
    throw new HttpRefusal(status, status === 429 ? INVALID_REQUEST : UPSTREAM_ERROR, (e as Error).message, status === 503 || status === 429 ? { 'retry-after': '5' } : {}, id);
  }
}

/** Writes one request's messages: JSON when the answer comes alone, SSE once a notification comes first. */
function responder(res: ServerResponse) {
  let stream = false;
  const event = (m: JSONRPCMessage) => `event: message\ndata: ${JSON.stringify(m)}\n\n`;
  return {
    notify(m: JSONRPCMessage): void {
      if (res.writableEnded) return;
      if (!stream) {
        stream = true;
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
      }
      res.write(event(m));
    },
    reply(m: JSONRPCMessage): void {
      if (res.writableEnded) return;
      if (stream) return void res.end(event(m));
      sendJson(res, statusOf(m), m);
    },
  };
}

/** An unknown method is 404 on 2026-07-28 HTTP; the spec's own request errors are 400; any other answer is 200. */
function statusOf(m: JSONRPCMessage): number {
  const code = (m as { error?: { code?: number } }).error?.code;
  if (code === METHOD_NOT_FOUND) return 404;
  if (code === HEADER_MISMATCH || code === UNSUPPORTED_PROTOCOL_VERSION || code === -32021) return 400;
  return 200;
}

function sendJson(res: ServerResponse, status: number, m: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(m));
}
