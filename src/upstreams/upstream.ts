// Upstream connectors: the SDK's client transports (stdio child, Streamable HTTP, legacy SSE)
// behind one interface. send() accepts only an Authorized message, which only the decide stage
// can make: a message without a decision cannot reach an upstream, by construction.
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { getDefaultEnvironment, StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import { LATEST_PROTOCOL_VERSION, type JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
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

/**
 * "ok", or why a stdio upstream cannot start: its command is started and asked to initialize, as a
 * session would, and closed again. Run when `serve` starts and while it fails, for /readyz: a
 * server that exits at once (a missing folder, a bad argument) fails every session otherwise.
 */
export async function probeStdioStart(name: string, server: Extract<ServerConfig, { transport: 'stdio' }>, baseDir: string, timeoutMs = 30_000): Promise<string> {
  const cwd = resolve(baseDir, server.cwd ?? '.');
  if (!existsSync(cwd)) return `cannot start: its folder (cwd) ${cwd} does not exist`;
  if (!commandExists(server.command, cwd)) return `command not found: ${server.command}`;
  const transport = new StdioClientTransport({ command: server.command, args: server.args, env: { ...getDefaultEnvironment(), ...server.env }, cwd, stderr: 'pipe' });
  let lastStderr = '';
  createInterface({ input: transport.stderr as unknown as NodeJS.ReadableStream }).on('line', (line) => line.trim() && (lastStderr = line.trim()));
  const result = await new Promise<string>((settle) => {
    const timer = setTimeout(() => settle(`upstream "${name}" did not answer initialize within ${timeoutMs} ms`), timeoutMs);
    const done = (r: string) => (clearTimeout(timer), settle(r));
    transport.onmessage = (m) => {
      if ('id' in m && m.id === 'portcullis-readiness') done('result' in m ? 'ok' : `upstream "${name}" refused initialize: ${(m as { error?: { message?: string } }).error?.message}`);
    };
    // stderr is read to its end before the reason is given: the child's last words say why.
    transport.onclose = () => setTimeout(() => done(`upstream "${name}" exited before answering initialize${lastStderr ? `: ${lastStderr}` : ''}`), 50);
    transport
      .start()
      .then(() =>
        transport.send({
          jsonrpc: '2.0',
          id: 'portcullis-readiness',
          method: 'initialize',
          params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'portcullis-readiness', version: '1' } },
        }),
      )
      .catch((e: Error) => done(`cannot start upstream "${name}": ${e.message}`));
  });
  transport.onclose = undefined;
  await transport.close().catch(() => undefined);
  return result;
}
