// The gateway: configuration, the session registry, the pipelines, and the HTTP listener with
// its routes. Fronts and upstream connectors meet here and nowhere else.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createAuthenticator, identityKey, type Authenticator } from '../auth/authenticate.js';
import type { Identity } from '../auth/identity.js';
import { handleWellKnown, resourceMetadataUrl, wwwAuthenticate } from '../auth/protected-resource.js';
import type { Config } from '../config/schema.js';
import { mcpHandler } from '../fronts/streamable-http.js';
import { HttpRefusal, isLoopbackHost, sendRefusal } from '../fronts/http-request.js';
import { createLogger } from '../observability/log.js';
import { createMetrics, registerAuditMetrics, type AuditHealth, type Metrics } from '../observability/metrics.js';
import { connectUpstream, probeUpstream, type Upstream } from '../upstreams/upstream.js';
import type { Recorder } from '../audit/recorder.js';
import type { AuditSink, PolicyPoint } from './decide.js';
import type { Exchange, Reply } from './pipeline.js';
import { Session, type ClientChannel, type SessionHost, type SessionLimits } from './session.js';
import { buildPipelines } from './stages.js';

export interface GatewayOptions {
  baseDir?: string;
  log?: Logger;
  policy: PolicyPoint;
  audit: AuditSink;
  /** Session recordings; none when absent. */
  recorder?: Recorder;
  /** The audit log's health, for /readyz and /metrics: a gateway that cannot write its audit log refuses work. */
  health?: AuditHealth;
}

export class Gateway implements SessionHost {
  readonly log: Logger;
  readonly metrics: Metrics = createMetrics();
  readonly sessions = new Map<string, Session>();
  readonly limits: SessionLimits;
  readonly auth: Authenticator;
  readonly toUpstream: (x: Exchange) => Promise<Reply>;
  readonly toClient: (x: Exchange) => Promise<Reply>;
  private closing = false;
  /**
   * Servers whose last upstream went away before it answered anything (a server that exits at
   * start: a missing folder, a bad argument): /readyz names them until one answers.
   */
  private readonly startProblems = new Map<string, string>();

  constructor(
    readonly config: Config,
    private readonly opts: GatewayOptions,
  ) {
    this.log = opts.log ?? createLogger(config.logging.level);
    const pipelines = buildPipelines({ policy: opts.policy, audit: opts.audit, recorder: opts.recorder, log: this.log, metrics: this.metrics });
    this.toUpstream = pipelines.toUpstream;
    this.toClient = pipelines.toClient;
    const l = config.limits;
    registerAuditMetrics(this.metrics.registry, opts.health, opts.recorder);
    this.auth = createAuthenticator(config.auth, { log: this.log, resourceUrl: configuredBaseUrl(config) });
    if (config.auth.oidc && !configuredBaseUrl(config)) {
      this.log.warn(`auth.resourceUrl is not set and the listen address (${config.listen.host}:${config.listen.port}) is not a URL clients use: the protected-resource metadata names the address each request reached, and tokens are accepted only for auth.oidc.audience. Set auth.resourceUrl to the gateway's public URL so that MCP clients' resource-bound tokens are accepted`);
    }
    this.limits = { upstreamTimeoutMs: l.upstreamTimeout, maxResultBytes: l.maxResultBytes, idleTimeoutMs: l.sessionIdleTimeout };
  }

  /** The identity behind a request, or undefined after answering it (401 with where to log in, or 400). */
  async authenticate(req: IncomingMessage, res: ServerResponse, server: string): Promise<Identity | undefined> {
    const outcome = await this.auth.authenticate(req.headers.authorization, { server });
    if (outcome.ok) return outcome.identity;
    this.metrics.refusals.inc({ status: String(outcome.status) });
    const metadata = this.config.auth.oidc ? resourceMetadataUrl(publicBaseUrl(this.config, req), server) : undefined;
    res.writeHead(outcome.status, { 'content-type': 'application/json', 'www-authenticate': wwwAuthenticate(outcome, metadata) });
    res.end(JSON.stringify({ error: outcome.error ?? 'unauthorized', error_description: outcome.description }));
    return undefined;
  }

  /** Opens a session: starts its upstream first, so a client never holds a session without one. */
  async openSession(id: string, server: string, identity: Identity, channel: ClientChannel): Promise<Session> {
    if (this.closing) throw Object.assign(new Error('the gateway is shutting down'), { status: 503 });
    if (this.sessions.size >= this.config.limits.maxSessions) {
      throw Object.assign(new Error(`the gateway has ${this.sessions.size} sessions open, its limit (limits.maxSessions)`), { status: 503 });
    }
    const session = new Session(id, server, identity, channel, this);
    let upstream;
    try {
      upstream = await connectUpstream(server, this.config.servers[server], session.log, this.opts.baseDir ?? process.cwd());
    } catch (e) {
      this.metrics.upstreamFailures.inc({ server });
      session.log.error({ err: (e as Error).message }, 'upstream could not be started');
      throw e;
    }
    session.attach(upstream);
    this.watchStart(server, upstream);
    try {
      await this.opts.audit.append('session.start', identity.sub, { session: id, server, identity: { sub: identity.sub, groups: identity.groups, via: identity.via } });
    } catch (e) {
      session.log.error({ err: (e as Error).message }, 'audit write failed; session refused');
      session.end('its start could not be recorded');
      throw Object.assign(new Error('Audit log unavailable: the session was not opened (PCL_AUDIT_WRITE_FAILED)'), { status: 503 });
    }
    this.sessions.set(id, session);
    this.metrics.sessions.inc({ server });
    session.log.info('session started');
    return session;
  }

  /** Notes whether this upstream answers before it goes away (see startProblems); observes, changes nothing. */
  private watchStart(server: string, upstream: Upstream): void {
    const { onmessage, onclose } = upstream;
    let answered = false;
    upstream.onmessage = (m) => {
      if (!answered) {
        answered = true;
        if (this.startProblems.delete(server)) this.log.info({ upstream: server }, `upstream ${server} answers again`);
      }
      onmessage?.(m);
    };
    upstream.onclose = (reason) => {
      if (!answered && !this.closing && !this.startProblems.has(server)) {
        this.startProblems.set(server, `${reason} before it answered`);
        this.log.warn({ upstream: server }, `upstream ${server} went away before it answered anything (${reason}): sessions on /mcp/${server} fail until it can start; its stderr lines above say why. /readyz reports it until it answers again`);
      }
      onclose?.(reason);
    };
  }

  /** A session id is valid only on the path that created it and with the identity that created it. */
  findSession(id: string, server: string, identity: Identity): Session | undefined {
    const s = this.sessions.get(id);
    if (!s || s.server !== server || identityKey(s.identity) !== identityKey(identity)) return undefined;
    return s;
  }

  ended(session: Session, reason: string): void {
    if (!this.sessions.delete(session.id)) return;
    this.metrics.sessions.dec({ server: session.server });
    session.log.info({ reason }, 'session ended');
    this.opts.audit.append('session.end', session.identity.sub, { session: session.id, server: session.server, reason }).catch((e) => session.log.error({ err: (e as Error).message }, 'could not record session end'));
  }

  /** A new policy version is in force: every open session is told its lists may have changed. */
  policyChanged(): void {
    for (const s of this.sessions.values()) s.policyChanged();
  }

  /** Graceful: no new sessions, in-flight requests get up to graceMs to finish, then every session ends. */
  async close(graceMs = 10_000): Promise<void> {
    this.closing = true;
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && [...this.sessions.values()].some((s) => s.busy)) await new Promise((r) => setTimeout(r, 20));
    for (const s of [...this.sessions.values()]) s.end('the gateway is shutting down');
    this.auth.close();
  }

  /** Ready when every upstream can be reached (HTTP answers; a stdio command exists, and its last start did not fail). */
  async readiness(): Promise<{ ready: boolean; checks: Record<string, string> }> {
    const checks: Record<string, string> = {};
    await Promise.all(Object.entries(this.config.servers).map(async ([name, server]) => (checks[`upstream:${name}`] = await probeUpstream(server, this.opts.baseDir ?? process.cwd()))));
    for (const [name, problem] of this.startProblems) if (checks[`upstream:${name}`] === 'ok') checks[`upstream:${name}`] = `cannot start: ${problem}`;
    const audit = this.opts.health;
    if (audit) {
      const { pending, oldestPendingMs } = audit.stats();
      // A store that waits on a lock fails nothing for seconds: report the stall before it fails.
      checks.audit = !audit.healthy() ? `failing: ${audit.lastError()?.message ?? 'write failed'}` : oldestPendingMs > 1000 ? `stalled: ${pending} appends waiting ${oldestPendingMs} ms` : 'ok';
    }
    checks.auth = this.auth.ready() ? 'ok' : `not ready: ${this.auth.readinessProblem() ?? 'identity provider unavailable'}`;
    if (this.closing) checks.gateway = 'shutting down';
    return { ready: Object.values(checks).every((c) => c === 'ok'), checks };
  }
}

export interface RunningGateway {
  gateway: Gateway;
  server: Server;
  url(server: string): string;
  close(): Promise<void>;
}

/** Starts the HTTP listener; resolves once it listens. */
export async function startGateway(config: Config, opts: GatewayOptions): Promise<RunningGateway> {
  const gw = new Gateway(config, opts);
  await gw.auth.start();
  const limits = config.limits;
  // Node checks requestTimeout and headersTimeout only every connectionsCheckingInterval (30 s by
  // default): check often enough that a slow client is cut off close to limits.requestTimeout.
  const server = createServer({
    maxHeaderSize: limits.maxHeaderBytes,
    requestTimeout: limits.requestTimeout,
    headersTimeout: Math.min(limits.requestTimeout, 60_000),
    connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(limits.requestTimeout / 4))),
    keepAliveTimeout: 5_000,
  });
  const mcp = mcpHandler(gw, isLoopbackHost(config.listen.host.toLowerCase()));
  server.on('request', (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path.startsWith('/mcp/')) {
      let name: string;
      try {
        name = decodeURIComponent(path.slice(5));
      } catch {
        return sendRefusal(res, new HttpRefusal(400, -32600, 'malformed server name in the path'));
      }
      // Some MCP Inspector versions rewrite a URL that does not end in /mcp: /mcp/<server>/mcp is the
      // same endpoint (server names have no "/", so this names no other server).
      if (name.endsWith('/mcp') && Object.hasOwn(config.servers, name.slice(0, -4))) name = name.slice(0, -4);
      return void mcp(req, res, name);
    }
    route(gw, req, res, path).catch((e) => {
      gw.log.error({ err: (e as Error).message }, 'route failed');
      sendRefusal(res, new HttpRefusal(500, -32603, 'internal gateway error'));
    });
  });
  server.on('clientError', (err, socket) => {
    const code = (err as NodeJS.ErrnoException).code;
    gw.metrics.refusals.inc({ status: code === 'HPE_HEADER_OVERFLOW' ? '431' : '400' });
    if (!socket.writable) return socket.destroy();
    socket.end(code === 'HPE_HEADER_OVERFLOW' ? 'HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\r\n' : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n\r\n' : 'HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  gw.log.info({ address: `http://${host}:${address.port}`, servers: Object.keys(config.servers) }, 'gateway listening');
  return {
    gateway: gw,
    server,
    url: (name) => `http://${host}:${address.port}/mcp/${encodeURIComponent(name)}`,
    close: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      await gw.close();
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), 5_000);
      await closed;
      clearTimeout(timer);
    },
  };
}

/** The gateway's public URL: auth.resourceUrl when set (behind a proxy), else the listen address. Never
 *  the Host header: token audiences are checked against this, and a client must not choose it. */
function configuredBaseUrl(config: Config): string | undefined {
  if (config.auth.resourceUrl) return config.auth.resourceUrl.replace(/\/+$/, '');
  // A wildcard address (0.0.0.0, ::) is where the gateway listens, not a URL anyone can reach it
  // at: advertising http://0.0.0.0:8080 in the protected-resource metadata breaks every client.
  if (!config.listen.port || WILDCARD_HOSTS.has(config.listen.host)) return undefined;
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  return `http://${host}:${config.listen.port}`;
}

const WILDCARD_HOSTS = new Set(['', '0.0.0.0', '::', '[::]', '::0', '0:0:0:0:0:0:0:0']);

function publicBaseUrl(config: Config, req: IncomingMessage): string {
  return configuredBaseUrl(config) ?? `http://${req.headers.host}`;
}

async function route(gw: Gateway, req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
  if (handleWellKnown(req, res, publicBaseUrl(gw.config, req), gw.config.auth, (name) => Object.hasOwn(gw.config.servers, name))) return;
  if (path === '/healthz') return json(res, 200, { status: 'ok' });
  if (path === '/readyz') {
    const r = await gw.readiness();
    return json(res, r.ready ? 200 : 503, { status: r.ready ? 'ready' : 'not ready', checks: r.checks, sessions: gw.sessions.size });
  }
  if (path === '/metrics') {
    res.writeHead(200, { 'content-type': gw.metrics.registry.contentType });
    return void res.end(await gw.metrics.registry.metrics());
  }
  json(res, 404, { error: 'not_found', message: `no route ${path}; MCP servers are at /mcp/<server>` });
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
