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

/** Serves one session on this process's stdin/stdout; resolves when either side ends it. */
export async function serveStdio(gw: Gateway, server: string, identity: Identity, input: NodeJS.ReadableStream = process.stdin, output: NodeJS.WritableStream = process.stdout): Promise<string> {
  let writing = Promise.resolve();
  const write = (message: JSONRPCMessage): Promise<void> =>
    (writing = writing.then(async () => {
      if (!output.write(`${JSON.stringify(message)}\n`)) await once(output, 'drain');
    }));
  const lines = createInterface({ input, crlfDelay: Infinity });
  const channel = { send: write, close: async () => lines.close() };
  const session = await gw.openSession(randomUUID(), server, identity, channel);
  const limits = gw.config.limits;

  lines.on('line', (line) => {
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
  });
  lines.once('close', () => session.end('the client closed stdin'));
  return session.whenEnded;
}
