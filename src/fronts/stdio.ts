// The stdio front (`portcullis wrap`): an agent that launches local MCP servers launches
// Portcullis instead; one session, the agent on stdin/stdout (one JSON-RPC message per line),
// the configured server upstream. Lines get the same checks as HTTP bodies, and what is refused
// is answered on stdout like on HTTP (-32700, -32600 for batches and nesting, -32602), so an
// agent learns why instead of waiting.
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { Identity } from '../auth/identity.js';
import { readLines } from '../lines.js';
import { classify, depthExceeds, errorResponse, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, ShapeError, UPSTREAM_ERROR } from '../gateway/classify.js';
import type { Gateway } from '../gateway/gateway.js';
import { claimsModern, eraOf, notA2026Method } from '../gateway/stateless.js';

/** JSON-RPC implementation-defined server error: not now, try again. */
const SERVER_BUSY = -32000;

/** Lines read while the session opens (its upstream starting, its store answering) wait, in order, up to these bounds. */
export const PENDING_LINES = 1_000;

/** Serves one session on this process's stdin/stdout; resolves when either side has ended it and its upstream is closed. */
export async function serveStdio(gw: Gateway, server: string, identity: Identity, input: NodeJS.ReadableStream = process.stdin, output: NodeJS.WritableStream = process.stdout): Promise<string> {
  let writing = Promise.resolve();
  const write = (message: JSONRPCMessage): Promise<void> =>
    (writing = writing.then(async () => {
      if (!output.write(`${JSON.stringify(message)}\n`)) await once(output, 'drain');
    }));
  const limits = gw.config.limits;
  // Reading starts now: an agent writes initialize as soon as it has launched us, and the
  // session may take a while to open. What arrives meanwhile waits, bounded, and is then
  // handled in order; a line over the bounds is refused at once, like a full server would.
  const lines = readLines(input);
  let pending: string[] | undefined = [];
  let pendingBytes = 0;
  let stdinClosed = false;
  let handle = (line: string) => {
    const bytes = Buffer.byteLength(line);
    if (pending!.length < PENDING_LINES && pendingBytes + bytes <= limits.maxBodyBytes) {
      pending!.push(line);
      pendingBytes += bytes;
      return;
    }
    void write(errorResponse(bytes <= limits.maxBodyBytes ? requestId(line) : null, SERVER_BUSY, `the session is still opening and ${pending!.length} messages (${pendingBytes} bytes) already wait for it; send this again once earlier requests are answered`));
  };
  lines.on('line', (line) => handle?.(line));
  lines.once('close', () => (stdinClosed = true));

  // The first message decides the era of this process's client (2026-07-28 scopes it to the
  // stdio process): a request naming 2026-07-28 in _meta means no session, each request on its
  // own; anything else opens a 2025 session, as the client's initialize expects.
  await new Promise<void>((resolve) => {
    if (pending!.length > 0 || stdinClosed) return resolve();
    const first = handle;
    handle = (line) => (first(line), line.trim() !== '' && resolve());
    lines.once('close', () => resolve());
  });
  const parse = (line: string, refuse: (code: number, message: string, id?: string | number | null) => void): unknown => {
    if (line.trim() === '') return undefined;
    if (Buffer.byteLength(line) > limits.maxBodyBytes) return refuse(INVALID_REQUEST, `message is over ${limits.maxBodyBytes} bytes (limits.maxBodyBytes)`);
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch (e) {
      return refuse(PARSE_ERROR, `Parse error: ${(e as Error).message}`);
    }
    if (depthExceeds(raw, limits.maxDepth)) return refuse(INVALID_REQUEST, `message nesting is deeper than ${limits.maxDepth} (limits.maxDepth)`);
    try {
      classify(raw, true);
    } catch (e) {
      return e instanceof ShapeError ? refuse(e.code, e.message, e.id) : refuse(INVALID_REQUEST, (e as Error).message);
    }
    return raw;
  };
  const firstLine = pending!.find((l) => l.trim() !== '');
  if (firstLine !== undefined && modernLine(firstLine)) {
    const client = modernClient(gw, server, identity, parse, write);
    handle = client.handle;
    for (const line of pending!) handle(line);
    pending = undefined;
    if (!stdinClosed) await once(lines, 'close');
    // The client is gone: what it asked is still answered (it may be reading), then the process ends.
    await client.drained();
    return 'the client closed stdin';
  }

  const channel = { send: write, close: async () => lines.close() };
  const session = await gw.openSession(randomUUID(), server, identity, channel);
  handle = (line) => {
    const refuse = (code: number, message: string, id: string | number | null = null) => {
      session.log.warn({ err: message }, 'message from the client refused');
      void write(errorResponse(id, code, message));
    };
    const raw = parse(line, refuse);
    if (raw !== undefined) void session.fromClient(raw, identity);
  };
  // Each fromClient takes its turn synchronously, so the waiting lines reach the upstream in the order they came.
  for (const line of pending!) handle(line);
  pending = undefined;
  if (stdinClosed) session.end('the client closed stdin');
  else lines.once('close', () => session.end('the client closed stdin'));
  const reason = await session.whenEnded;
  await session.whenClosed;
  return reason;
}

/** Whether a line is a 2026-07-28 request (its _meta names the version; initialize never is). */
function modernLine(line: string): boolean {
  try {
    const raw = JSON.parse(line) as unknown;
    return claimsModern(raw) && eraOf(raw).kind !== 'legacy';
  } catch {
    return false;
  }
}

/**
 * A 2026-07-28 client on stdin/stdout: no session; each request runs the pipeline on the
 * gateway's pooled upstream session (gateway/stateless.ts), its answer written when it comes.
 * notifications/cancelled cancels a request in flight (on stdio, 2026-07-28 keeps it).
 */
function modernClient(
  gw: Gateway,
  server: string,
  identity: Identity,
  parse: (line: string, refuse: (code: number, message: string, id?: string | number | null) => void) => unknown,
  write: (message: JSONRPCMessage) => Promise<void>,
): { handle: (line: string) => void; drained: () => Promise<void> } {
  const inFlight = new Map<RequestId, () => void>();
  let settled: () => void = () => {};
  const handle = (line: string): void => {
    const refuse = (code: number, message: string, id: string | number | null = null, data?: unknown) => {
      gw.log.warn({ server, err: message }, 'message from the 2026-07-28 client refused');
      void write(errorResponse(id, code, message, data));
    };
    const raw = parse(line, refuse) as { id?: RequestId; method: string; params?: { requestId?: RequestId } } | undefined;
    if (raw === undefined) return;
    if (raw.id === undefined) {
      if (raw.method === 'notifications/cancelled' && raw.params?.requestId !== undefined) inFlight.get(raw.params.requestId)?.();
      return;
    }
    const id = raw.id;
    const era = eraOf(raw);
    if (era.kind === 'refused') return refuse(era.code, era.message, id, era.data);
    if (era.kind === 'legacy') return refuse(INVALID_REQUEST, 'this process serves a 2026-07-28 client (its first request named 2026-07-28): every request carries io.modelcontextprotocol/protocolVersion in _meta', id);
    const removed = notA2026Method(raw.method);
    if (removed) return refuse(METHOD_NOT_FOUND, `Method not found: ${removed}`, id);
    if (inFlight.has(id)) return refuse(INVALID_REQUEST, `request id ${JSON.stringify(id)} is already in flight: use another id`, id);
    let cancel: (() => void) | undefined;
    // Cancelled: no answer is owed (MCP cancellation), and the request no longer holds the exit.
    inFlight.set(id, () => {
      cancel?.();
      if (inFlight.delete(id) && inFlight.size === 0) settled();
    });
    const done = (m: JSONRPCMessage) => {
      if (!inFlight.delete(id)) return;
      void write(m);
      if (inFlight.size === 0) settled();
    };
    const answered = raw.method === 'server/discover' ? gw.stateless.discover(server, identity).then((result) => done({ jsonrpc: '2.0', id, result } as JSONRPCMessage)) : gw.stateless.request(server, identity, raw, { notify: (m) => void write(m), reply: done }).then((c) => void (cancel = c));
    answered.catch((e: Error) => done(errorResponse(id, UPSTREAM_ERROR, e.message)));
  };
  return { handle, drained: () => (inFlight.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => (settled = resolve))) };
}

/** The id of a request refused before it is read in full, when it has a usable one. */
function requestId(line: string): string | number | null {
  try {
    const id = (JSON.parse(line) as { id?: unknown }).id;
    return typeof id === 'string' || typeof id === 'number' ? id : null;
  } catch {
    return null;
  }
}
