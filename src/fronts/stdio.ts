// The stdio front (`portcullis wrap`): an agent that launches local MCP servers launches
// Portcullis instead; one session, the agent on stdin/stdout, the configured server upstream.
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { randomUUID } from 'node:crypto';
import type { Identity } from '../auth/identity.js';
import type { Gateway } from '../gateway/gateway.js';

/** Serves one session on this process's stdin/stdout; resolves when either side ends it. */
export async function serveStdio(gw: Gateway, server: string, identity: Identity): Promise<string> {
  const transport = new StdioServerTransport();
  const channel = { send: (m: JSONRPCMessage) => transport.send(m), close: () => transport.close() };
  const session = await gw.openSession(randomUUID(), server, identity, channel);
  // Lines that are not JSON-RPC are refused by the SDK's reader before they reach the session.
  transport.onerror = (e) => session.log.warn({ err: e.message }, 'unreadable message from the client refused');
  transport.onmessage = (m) => void session.fromClient(m);
  transport.onclose = () => session.end('the client closed stdin');
  process.stdin.once('end', () => session.end('the client closed stdin'));
  await transport.start();
  return session.whenEnded;
}
