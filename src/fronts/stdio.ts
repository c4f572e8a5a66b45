// The stdio front (`portcullis wrap`): an agent that launches local MCP servers launches
// Portcullis instead; one session, the agent on stdin/stdout (one JSON-RPC message per line),
// the configured server upstream. Lines get the same checks as HTTP bodies, and what is refused
// is answered on stdout like on HTTP (-32700, -32600 for batches and nesting, -32602), so an
// agent learns why instead of waiting.
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import type { Identity } from '../auth/identity.js';
import { classify, depthExceeds, errorResponse, INVALID_REQUEST, PARSE_ERROR, ShapeError } from '../gateway/classify.js';
import type { Gateway } from '../gateway/gateway.js';

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
  const lines = createInterface({ input, crlfDelay: Infinity });
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
  lines.on('line', (line) => handle(line));
  lines.once('close', () => (stdinClosed = true));

  const channel = { send: write, close: async () => lines.close() };
  const session = await gw.openSession(randomUUID(), server, identity, channel);
  handle = (line) => {
    if (line.trim() === '') return;
    const refuse = (code: number, message: string, id: string | number | null = null) => {
      session.log.warn({ err: message }, 'message from the client refused');
      void write(errorResponse(id, code, message));
    };
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
    void session.fromClient(raw, identity);
  };
  // Each fromClient takes its turn synchronously, so the waiting lines reach the upstream in the order they came.
  for (const line of pending) handle(line);
  pending = undefined;
  if (stdinClosed) session.end('the client closed stdin');
  else lines.once('close', () => session.end('the client closed stdin'));
  const reason = await session.whenEnded;
  await session.whenClosed;
  return reason;
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
