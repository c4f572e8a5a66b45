// Upstream connectors: a stdio child (./stdio.ts, in its own process group), Streamable HTTP
// (./http.ts, written for relaying) and the SDK's client transport for legacy SSE, behind one interface. send() accepts only an Authorized message, which only the decide stage
// can make: a message without a decision cannot reach an upstream, by construction.
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { getDefaultEnvironment } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { existsSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import type { ServerConfig } from '../config/schema.js';
import { Authorized } from '../gateway/decide.js';
import { PortcullisError } from '../errors.js';
import { upstreamFetch } from './http-fetch.js';
import { StreamableHttpUpstreamTransport } from './http.js';
import { redactedUrl, scrubber } from './redact.js';
import { StdioUpstreamTransport } from './stdio.js';
import { asksAgain, discoverProbe, PROBE_ID, PROBE_TIMEOUT_MS, verdictOf, type Verdict } from './era.js';
import { ModernHttpTransport, probeHttpEra } from './http-modern.js';

export interface Upstream {
  /** What the upstream said of its era when asked (server/discover), when it was asked. */
  readonly verdict?: Verdict;
  /** Why it is gone, when it went before anyone listened (a child that exited during the era probe). */
  readonly closedWith?: string;
  /** For a 2025 session on a 2026 HTTP upstream: the same server reached the 2026 way, for when it refuses the session's initialize. */
  readonly twin?: Upstream;
  send(message: Authorized): Promise<void>;
  /** After initialize: HTTP upstreams must send the negotiated MCP-Protocol-Version. */
  setProtocolVersion(version: string): void;
  close(): Promise<void>;
  onmessage?: (message: JSONRPCMessage) => void;
  /** Called once when the upstream is gone (child exited, stream closed), with why. */
  onclose?: (reason: string) => void;
}

/**
 * What clients see of an upstream is its name and what went wrong, with a code: never its URL,
 * command or arguments, nor the transport's own words (they can quote URLs, query keys, response
 * bodies). Those go to the gateway's log, with every configured secret value scrubbed.
 */
class TransportUpstream implements Upstream {
  onmessage?: (message: JSONRPCMessage) => void;
  onclose?: (reason: string) => void;
  verdict?: Verdict;
  closedWith?: string;
  twin?: Upstream;
  private closed = false;
  private probeEnded?: () => void;
  private readonly describe: string;

  constructor(
    private readonly transport: Transport,
    name: string,
    /** Where the upstream is, for the log only: its command, or its URL with query values hidden. */
    private readonly where: string,
    private readonly log: Logger,
    private readonly scrub: (text: string) => string,
    /** Why the transport closed, when it knows better than "closed" (a child's exit status). */
    closeReason?: () => string | undefined,
  ) {
    this.describe = `upstream "${name}"`;
    transport.onmessage = (m) => this.onmessage?.(m);
    transport.onerror = (e) => {
      // Closing a session tears its streams down on purpose: that is not worth a warning.
      log[this.closed ? 'debug' : 'warn']({ at: where, err: scrub(e.message) }, 'upstream transport error');
    };
    transport.onclose = () => this.gone(closeReason?.() ?? `${this.describe} closed the connection (PCL_UPSTREAM_UNAVAILABLE)`);
  }

  gone(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closedWith = reason;
    this.probeEnded?.();
    this.onclose?.(reason);
  }

  async start(): Promise<void> {
    await this.transport.start();
  }

  /**
   * Asks the upstream its era (server/discover) before anything else is sent: the gateway's own
   * question, carrying nothing of any client. No answer within PROBE_TIMEOUT_MS means 2025.
   */
  probe(): Promise<Verdict> {
    return new Promise<Verdict>((resolve, reject) => {
      const deliver = this.transport.onmessage;
      const finish = (answer: JSONRPCMessage | undefined) => {
        clearTimeout(timer);
        this.probeEnded = undefined;
        this.transport.onmessage = deliver;
        try {
          resolve((this.verdict = verdictOf(answer)));
        } catch (e) {
          reject(e);
        }
      };
      const timer = setTimeout(() => finish(undefined), PROBE_TIMEOUT_MS);
      // A child that exits instead of answering is no 2026 server; the session learns why from closedWith.
      this.probeEnded = () => finish(undefined);
      let askedAgain = false;
      this.transport.onmessage = (m) => {
        const r = m as { id?: unknown; method?: unknown };
        if (r.id !== PROBE_ID || r.method !== undefined) return void deliver?.(m);
        if (askedAgain || !asksAgain(m)) return finish(m);
        askedAgain = true;
        this.transport.send(discoverProbe()).catch(() => finish(undefined));
      };
      this.transport.send(discoverProbe()).catch(() => finish(undefined));
    });
  }

  send(a: Authorized): Promise<void> {
    // The type already forbids anything else; this holds against a cast too.
    if (!Authorized.is(a)) return Promise.reject(new Error(`${this.describe}: refused a message that carries no decision`));
    if (this.closed) return Promise.reject(new Error(`${this.describe} is closed (PCL_UPSTREAM_UNAVAILABLE)`));
    return this.transport.send(a.message).catch((e: Error) => {
      // The underlying cause, for the operator ("fetch failed" alone says neither which nor why).
      this.log.error({ at: this.where, err: this.scrub(describeError(e)) }, 'could not send to the upstream');
      throw new Error(`could not send to ${this.describe} (PCL_UPSTREAM_UNAVAILABLE); the gateway's log says why`);
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

/**
 * Connects to a configured upstream; rejects with an error a client may see (the name and a code)
 * and logs why. A stdio child runs in `cwd` resolved against baseDir (the config file's folder), so
 * relative paths in a config mean the same wherever the gateway is started.
 */
export async function connectUpstream(name: string, server: ServerConfig, log: Logger, baseDir: string, known?: Verdict, opts: { stateless?: boolean } = {}): Promise<Upstream> {
  const slog = log.child({ upstream: name });
  const scrub = scrubber(server);
  if (server.transport === 'stdio') {
    const transport = new StdioUpstreamTransport({
      command: server.command,
      args: server.args,
      env: { ...getDefaultEnvironment(), ...server.env },
      cwd: resolve(baseDir, server.cwd ?? '.'),
      // The child's stderr is its log: keep it, line by line, attributed to the server.
      stderr: (line) => slog.info({ stderr: line }, 'upstream stderr'),
    });
    const exited = () => (transport.exitStatus ? `upstream "${name}" exited (${transport.exitStatus}) (PCL_UPSTREAM_EXITED)` : undefined);
    const upstream = new TransportUpstream(transport, name, server.command, slog, scrub, exited);
    try {
      await upstream.start();
    } catch (e) {
      slog.error({ at: server.command, err: scrub(describeError(e as Error)) }, 'upstream could not be started');
      throw new PortcullisError('PCL_UPSTREAM_UNAVAILABLE', `upstream "${name}" could not be started (PCL_UPSTREAM_UNAVAILABLE); the gateway's log says why`);
    }
    await learnEra(upstream, server, name, slog, known);
    return upstream;
  }
  const headers = server.headers;
  const url = new URL(server.url);
  const where = redactedUrl(server.url);
  let upstream: TransportUpstream;
  if (server.transport === 'http') {
    const transport = new StreamableHttpUpstreamTransport(url, { headers });
    const ended = () => (transport.endedBecause ? `upstream "${name}" ${transport.endedBecause} (PCL_UPSTREAM_UNAVAILABLE)` : undefined);
    const verdict = await httpVerdict(name, server, slog, where, scrub, known);
    // A 2026 server gets each request on its own, no session. A 2025 session there first tries
    // the server's own 2025 side (a dual-era server serves it natively), the twin otherwise.
    const modern = verdict?.era === 'modern' ? new TransportUpstream(new ModernHttpTransport(new StreamableHttpUpstreamTransport(url, { headers }), `upstream "${name}"`), name, where, slog, scrub) : undefined;
    upstream = modern && opts.stateless ? modern : new TransportUpstream(transport, name, where, slog, scrub, ended);
    upstream.verdict = verdict;
    if (modern && upstream !== modern) {
      modern.verdict = verdict;
      upstream.twin = modern;
    }
  } else {
    // The SDK applies these headers to the event stream too.
    upstream = new TransportUpstream(new SSEClientTransport(url, { requestInit: { headers }, fetch: upstreamFetch }), name, where, slog, scrub);
  }
  try {
    await upstream.start();
  } catch (e) {
    // Close it: an SSE transport's EventSource would otherwise keep reconnecting forever.
    await upstream.close().catch(() => undefined);
    slog.error({ at: where, err: scrub(describeError(e as Error)) }, 'upstream could not be reached');
    throw new PortcullisError('PCL_UPSTREAM_UNAVAILABLE', `upstream "${name}" could not be reached (PCL_UPSTREAM_UNAVAILABLE); the gateway's log says why`);
  }
  return upstream;
}

/** The era of an HTTP upstream, asked as learnEra asks a stdio one (probeHttpEra: a stateless POST of server/discover). */
async function httpVerdict(name: string, server: Extract<ServerConfig, { transport: 'http' | 'sse' }>, log: Logger, where: string, scrub: (text: string) => string, known: Verdict | undefined): Promise<Verdict | undefined> {
  if (server.era === '2025') return undefined;
  if (server.era === 'auto' && known) return known;
  let era;
  try {
    era = await probeHttpEra(server.url, server.headers);
  } catch (e) {
    log.error({ at: where, err: scrub(describeError(e as Error)) }, 'upstream could not be reached');
    throw new PortcullisError('PCL_UPSTREAM_UNAVAILABLE', `upstream "${name}" could not be reached (PCL_UPSTREAM_UNAVAILABLE); the gateway's log says why`);
  }
  let verdict: Verdict;
  try {
    verdict = era.era === 'legacy' ? { era: 'legacy' } : verdictOf({ jsonrpc: '2.0', id: PROBE_ID, result: era.discover ?? { supportedVersions: era.supportedVersions } } as JSONRPCMessage);
  } catch (e) {
    log.error({ err: (e as Error).message }, 'upstream speaks no MCP revision the gateway serves');
    throw new PortcullisError('PCL_UPSTREAM_UNAVAILABLE', `upstream "${name}" speaks no MCP revision this gateway serves (PCL_UPSTREAM_UNAVAILABLE); the gateway's log says why`);
  }
  if (server.era === '2026' && verdict.era !== 'modern') throw new PortcullisError('PCL_UPSTREAM_UNAVAILABLE', `upstream "${name}" is configured as era 2026 but did not answer server/discover (PCL_UPSTREAM_UNAVAILABLE)`);
  log.info({ era: verdict.era }, 'upstream era');
  return verdict;
}

/**
 * `era: 2025` never asks; `auto` asks once per server (the caller keeps the verdict and passes it
 * back as `known`); `2026` asks every new connection, since the gateway needs the server's
 * discover result (its capabilities and identity) and refuses one that does not speak 2026-07-28.
 */
async function learnEra(upstream: TransportUpstream, server: ServerConfig, name: string, log: Logger, known: Verdict | undefined): Promise<void> {
  if (server.era === '2025') return;
  if (server.era === 'auto' && known) {
    upstream.verdict = known;
    return;
  }
  let verdict: Verdict;
  try {
    verdict = await upstream.probe();
  } catch (e) {
    await upstream.close().catch(() => undefined);
    log.error({ err: (e as Error).message }, 'upstream speaks no MCP revision the gateway serves');
    throw new PortcullisError('PCL_UPSTREAM_UNAVAILABLE', `upstream "${name}" speaks no MCP revision this gateway serves (PCL_UPSTREAM_UNAVAILABLE); the gateway's log says why`);
  }
  if (server.era === '2026' && verdict.era !== 'modern') {
    await upstream.close().catch(() => undefined);
    throw new PortcullisError('PCL_UPSTREAM_UNAVAILABLE', `upstream "${name}" is configured as era 2026 but did not answer server/discover (PCL_UPSTREAM_UNAVAILABLE)`);
  }
  log.info({ era: verdict.era }, 'upstream era');
}

/** The state of an upstream for /readyz, and for the log the detail of a failure. */
export interface Probe {
  state: 'ok' | 'unreachable' | 'command not found';
  detail?: string;
}

/** Whether the upstream can be reached now. Any HTTP answer counts: the endpoint is there. */
export async function probeUpstream(server: ServerConfig, baseDir: string): Promise<Probe> {
  if (server.transport === 'stdio') return commandExists(server.command, resolve(baseDir, server.cwd ?? '.')) ? { state: 'ok' } : { state: 'command not found', detail: server.command };
  try {
    const res = await fetch(server.url, { method: 'GET', headers: { accept: 'text/event-stream' }, signal: AbortSignal.timeout(2_000) });
    await res.body?.cancel();
    return { state: 'ok' };
  } catch (e) {
    return { state: 'unreachable', detail: `${redactedUrl(server.url)}: ${scrubber(server)(describeError(e as Error))}` };
  }
}

/** An error's message and its cause's ("fetch failed (connect ECONNREFUSED …)"). */
function describeError(e: Error): string {
  return e.cause instanceof Error ? `${e.message} (${e.cause.message})` : e.message;
}

function commandExists(command: string, cwd: string): boolean {
  if (command.includes('/')) return existsSync(resolve(cwd, command));
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir && existsSync(join(dir, command)));
}

