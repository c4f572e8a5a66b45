// Upstream connectors: the SDK's client transports (stdio child, Streamable HTTP, legacy SSE)
// behind one interface. send() accepts only an Authorized message, which only the decide stage
// can make: a message without a decision cannot reach an upstream, by construction.
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { getDefaultEnvironment, StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { existsSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { ServerConfig } from '../config/schema.js';
import type { Authorized } from '../gateway/decide.js';
import { upstreamFetch } from './http-fetch.js';

export interface Upstream {
  send(message: Authorized): Promise<void>;
  /** After initialize: HTTP upstreams must send the negotiated MCP-Protocol-Version. */
  setProtocolVersion(version: string): void;
  close(): Promise<void>;
  onmessage?: (message: JSONRPCMessage) => void;
  /** Called once when the upstream is gone (child exited, stream closed), with why. */
  onclose?: (reason: string) => void;
}

class TransportUpstream implements Upstream {
  onmessage?: (message: JSONRPCMessage) => void;
  onclose?: (reason: string) => void;
  private closed = false;
  private lastError?: string;

  constructor(
    private readonly transport: Transport,
    private readonly describe: string,
    log: Logger,
  ) {
    transport.onmessage = (m) => this.onmessage?.(m);
    transport.onerror = (e) => {
      this.lastError = e.message;
      // Closing a session tears its streams down on purpose: that is not worth a warning.
      log[this.closed ? 'debug' : 'warn']({ err: e.message }, 'upstream transport error');
    };
    transport.onclose = () => this.gone(this.lastError ? `${describe} closed: ${this.lastError}` : `${describe} closed`);
  }

  gone(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.onclose?.(reason);
  }

  async start(): Promise<void> {
    await this.transport.start();
  }

  send(a: Authorized): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`${this.describe} is closed`));
    // Name the upstream and the underlying cause ("fetch failed" alone says neither which nor why).
    return this.transport.send(a.message).catch((e: Error) => {
      const cause = e.cause instanceof Error ? ` (${e.cause.message})` : '';
      throw new Error(`${this.describe}: ${e.message}${cause}`, { cause: e });
    });
  }

  setProtocolVersion(version: string): void {
    this.transport.setProtocolVersion?.(version);
  }

  async close(): Promise<void> {
    this.closed = true;
    const t = this.transport as Transport & { terminateSession?: () => Promise<void> };
    await t.terminateSession?.().catch(() => undefined);
    await this.transport.close();
  }
}

/** Connects to a configured upstream; rejects with a clear message when it cannot be started. */
/** A stdio child runs in `cwd` resolved against baseDir (the config file's folder), so relative paths in a config mean the same wherever the gateway is started. */
export async function connectUpstream(name: string, server: ServerConfig, log: Logger, baseDir: string): Promise<Upstream> {
  const slog = log.child({ upstream: name });
  if (server.transport === 'stdio') {
    const transport = new StdioClientTransport({
      command: server.command,
      args: server.args,
      env: { ...getDefaultEnvironment(), ...server.env },
      cwd: resolve(baseDir, server.cwd ?? '.'),
      stderr: 'pipe',
    });
    const upstream = new TransportUpstream(transport, `upstream "${name}" (${server.command})`, slog);
    // The child's stderr is its log: keep it, line by line, attributed to the server.
    createInterface({ input: transport.stderr as unknown as NodeJS.ReadableStream }).on('line', (line) => slog.info({ stderr: line }, 'upstream stderr'));
    try {
      await upstream.start();
    } catch (e) {
      throw new Error(`cannot start upstream "${name}": ${(e as Error).message}`);
    }
    const child = (transport as unknown as { _process?: import('node:child_process').ChildProcess })._process;
    child?.on('exit', (code, signal) => upstream.gone(`upstream "${name}" exited (${signal ?? `code ${code}`})`));
    return upstream;
  }
  const headers = server.headers;
  const url = new URL(server.url);
  const transport =
    server.transport === 'http'
      ? new StreamableHTTPClientTransport(url, { requestInit: { headers }, fetch: upstreamFetch })
      : new SSEClientTransport(url, { requestInit: { headers }, fetch: upstreamFetch }); // the SDK applies these headers to the event stream too
  const upstream = new TransportUpstream(transport, `upstream "${name}" (${server.url})`, slog);
  try {
    await upstream.start();
  } catch (e) {
    // Close it: an SSE transport's EventSource would otherwise keep reconnecting forever.
    await upstream.close().catch(() => undefined);
    throw new Error(`cannot reach upstream "${name}" at ${server.url}: ${(e as Error).message}`);
  }
  return upstream;
}

/** "ok", or why the upstream cannot be reached now. Any HTTP answer counts: the endpoint is there. */
export async function probeUpstream(server: ServerConfig, baseDir: string): Promise<string> {
  if (server.transport === 'stdio') return commandExists(server.command, resolve(baseDir, server.cwd ?? '.')) ? 'ok' : `command not found: ${server.command}`;
  try {
    const res = await fetch(server.url, { method: 'GET', headers: { accept: 'text/event-stream' }, signal: AbortSignal.timeout(2_000) });
    await res.body?.cancel();
    return 'ok';
  } catch (e) {
    return `unreachable: ${(e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message}`;
  }
}

function commandExists(command: string, cwd: string): boolean {
  if (command.includes('/')) return existsSync(resolve(cwd, command));
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir && existsSync(join(dir, command)));
}

