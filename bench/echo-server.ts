// A small local MCP upstream for the benchmark: one `echo` tool (and a `get-sum` tool so the
// bench policy has more than one tool to govern), built on the SDK's McpServer.
//
//   tsx bench/echo-server.ts --stdio             MCP over stdin/stdout
//   tsx bench/echo-server.ts --http [--port N]   Streamable HTTP on 127.0.0.1 (port 0 by default);
//                                                prints "ECHO_URL http://127.0.0.1:<port>/mcp"
//
// Over HTTP each MCP session gets its own McpServer and transport (the SDK's stateful pattern),
// so N clients are N independent sessions, as they are through the gateway.
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { randomUUID } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

export function createEchoServer(): McpServer {
  const server = new McpServer({ name: 'portcullis-bench-echo', version: '1.0.0' });
  server.registerTool(
    'echo',
    { description: 'Echoes back the input message', inputSchema: { message: z.string().describe('the message to echo') } },
    async ({ message }) => ({ content: [{ type: 'text', text: `Echo: ${message}` }] }),
  );
  server.registerTool(
    'get-sum',
    { description: 'Adds two numbers', inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }) => ({ content: [{ type: 'text', text: `The sum of ${a} and ${b} is ${a + b}.` }] }),
  );
  return server;
}

export async function serveStdio(): Promise<void> {
  const server = createEchoServer();
  await server.connect(new StdioServerTransport());
}

export interface EchoHttp {
  url: string;
  close(): Promise<void>;
}

/** Streamable HTTP on 127.0.0.1; POST/GET/DELETE /mcp. */
export async function serveHttp(port = 0): Promise<EchoHttp> {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const readBody = async (req: IncomingMessage): Promise<unknown> => {
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
    return chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if ((req.url ?? '').split('?')[0] !== '/mcp') return void res.writeHead(404).end();
    const body = req.method === 'POST' ? await readBody(req) : undefined;
    const sid = req.headers['mcp-session-id'];
    let transport = typeof sid === 'string' ? transports.get(sid) : undefined;
    if (!transport) {
      if (typeof sid === 'string' || req.method !== 'POST' || !isInitializeRequest(body)) {
        res.writeHead(typeof sid === 'string' ? 404 : 400, { 'content-type': 'application/json' });
        return void res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'no valid session' } }));
      }
      const t = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => void transports.set(id, t),
      });
      t.onclose = () => {
        if (t.sessionId) transports.delete(t.sessionId);
      };
      await createEchoServer().connect(t);
      transport = t;
    }
    await transport.handleRequest(req, res, body);
  };
  const http = createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32603, message: (e as Error).message } }));
    });
  });
  http.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(port, '127.0.0.1', () => resolve());
  });
  const { port: bound } = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${bound}/mcp`,
    close: async () => {
      for (const t of transports.values()) await t.close().catch(() => undefined);
      http.closeAllConnections();
      await new Promise<void>((r) => http.close(() => r()));
    },
  };
}

// realpath: Node runs the main module by its real path, and node_modules (where the bench keeps the
// compiled copy) may be a symlink.
const isMain = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === realpathSync(resolve(process.argv[1]));
if (isMain) {
  const argv = process.argv.slice(2);
  if (argv.includes('--stdio')) {
    await serveStdio();
  } else if (argv.includes('--http')) {
    const i = argv.indexOf('--port');
    const running = await serveHttp(i >= 0 ? Number(argv[i + 1]) : 0);
    process.stdout.write(`ECHO_URL ${running.url}\n`);
    const stop = () => void running.close().finally(() => process.exit(0));
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  } else {
    process.stderr.write('usage: echo-server.ts --stdio | --http [--port N]\n');
    process.exit(2);
  }
}
