// The gateway: configuration, the session registry, the pipelines, and the HTTP listener with
// its routes. Fronts and upstream connectors meet here and nowhere else.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createApiKeyVerifier, type ApiKeyVerifier } from '../auth/api-keys.js';
import { createAuthenticator, type Authenticator } from '../auth/authenticate.js';
import { identityKey, identityLabel, type Identity } from '../auth/identity.js';
import { handleWellKnown, resourceMetadataUrl, wwwAuthenticate } from '../auth/protected-resource.js';
import { SHARE_IDLE_MS, type Config } from '../config/schema.js';
import { mcpHandler } from '../fronts/streamable-http.js';
import { checkHostAndOrigin, HttpRefusal, isLoopbackHost, sendRefusal } from '../fronts/http-request.js';
import { createLogger } from '../observability/log.js';
import { createMetrics, registerAuditMetrics, registerPolicyMetrics, type AuditHealth, type Metrics } from '../observability/metrics.js';
import { connectUpstream, probeUpstream, type Upstream } from '../upstreams/upstream.js';
import { killStdioUpstreams } from '../upstreams/stdio.js';
import type { Verdict } from '../upstreams/era.js';
import { LegacyOverModern } from '../upstreams/legacy-over-modern.js';
import { SharedUpstream } from '../upstreams/shared.js';
import type { Recorder } from '../audit/recorder.js';
import { gatewayMessage, type AuditSink, type PolicyPoint } from './decide.js';
import type { Exchange, Reply } from './pipeline.js';
import { Session, type ClientChannel, type SessionHost, type SessionLimits } from './session.js';
import { buildPipelines } from './stages.js';
import { StatelessPool } from './stateless.js';
import type { ApprovalDesk } from './approvals.js';
import { NO_POLICY_PUSHED } from '../policy/store-source.js';
import { PortcullisError } from '../errors.js';

export interface GatewayOptions {
  baseDir?: string;
  log?: Logger;
  policy: PolicyPoint;
  audit: AuditSink;
  /** Session recordings; none when absent. */
  recorder?: Recorder;
  /** The audit log's health, for /readyz and /metrics: a gateway that cannot write its audit log refuses work. */
  health?: AuditHealth;
  /** Holds approve decisions for a human; without it they fail closed. */
  approvals?: ApprovalDesk;
}

/** How long requests in flight get to finish at shutdown. */
export const DRAIN_MS = 10_000;

export interface ShutdownOptions {
  graceMs?: number;
  /** Aborted: stop draining, SIGKILL stdio upstreams (a second Ctrl-C). */
  force?: AbortSignal;
}

export class Gateway implements SessionHost {
  readonly log: Logger;
  readonly metrics: Metrics = createMetrics();
  readonly sessions = new Map<string, Session>();
  /** The upstream sessions 2026-07-28 requests are served on (one per server and credential). */
  readonly stateless = new StatelessPool(this);
  readonly limits: SessionLimits;
  readonly auth: Authenticator;
  private readonly metricsTokens: ApiKeyVerifier;
  readonly toUpstream: (x: Exchange) => Promise<Reply>;
  readonly toClient: (x: Exchange) => Promise<Reply>;
  private closing = false;
  /** Sessions being opened (their upstream starting): they count against the limits already. */
  private opening = 0;
  /** Sessions open or being opened, per credential (identityKey), for limits.maxSessionsPerIdentity. */
  private readonly perPrincipal = new Map<string, number>();
  private shutdown?: Promise<void>;
  /**
   * Servers whose last upstream went away before it answered anything (a server that exits at
   * start: a missing folder, a bad argument): /readyz names them until one answers.
   */
  private readonly startProblems = new Map<string, string>();
  /** Each server's era, as it answered server/discover once (servers with era: auto). */
  private readonly verdicts = new Map<string, Verdict>();
  /** The upstream processes a credential's sessions share (servers with share: credential), per server and credential. */
  private readonly shared = new Map<string, Promise<SharedUpstream | Upstream>>();

  constructor(
    readonly config: Config,
    private readonly opts: GatewayOptions,
  ) {
    this.log = opts.log ?? createLogger(config.logging.level);
    const pipelines = buildPipelines({ policy: opts.policy, audit: opts.audit, recorder: opts.recorder, approvals: opts.approvals, log: this.log, metrics: this.metrics });
    this.toUpstream = pipelines.toUpstream;
    this.toClient = pipelines.toClient;
    const l = config.limits;
    registerAuditMetrics(this.metrics.registry, opts.health, opts.recorder);
    registerPolicyMetrics(this.metrics.registry, opts.policy, opts.approvals);
    this.metricsTokens = createApiKeyVerifier(config.metrics.tokens.map((t) => ({ ...t, groups: [] })));
    this.auth = createAuthenticator(config.auth, { log: this.log, resourceUrl: configuredBaseUrl(config) });
    if (config.auth.oidc && !configuredBaseUrl(config)) {
      this.log.warn(`auth.resourceUrl is not set and the listen address (${config.listen.host}:${config.listen.port}) is not a URL clients use: the protected-resource metadata names the address each request reached, and tokens are accepted only for auth.oidc.audience. Set auth.resourceUrl to the gateway's public URL so that MCP clients' resource-bound tokens are accepted`);
    }
    this.limits = { upstreamTimeoutMs: l.upstreamTimeout, maxResultBytes: l.maxResultBytes, idleTimeoutMs: l.sessionIdleTimeout };
  }

  /** Whether a scrape may read /metrics: anyone when metrics.tokens is empty, else a bearer token whose SHA-256 is listed. */
  metricsAllowed(authorization: string | undefined): boolean {
    if (this.metricsTokens.size === 0) return true;
    const m = /^Bearer +(\S+)$/i.exec(authorization ?? '');
    return m !== null && this.metricsTokens.verify(m[1]) !== undefined;
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

  /**
   * Opens a session: starts its upstream first, so a client never holds a session without one.
   * The limits are checked and the place taken before anything is started, so concurrent opens
   * cannot overshoot them.
   */
  async openSession(id: string, server: string, identity: Identity, channel: ClientChannel, opts: { stateless?: boolean } = {}): Promise<Session> {
    if (this.closing) throw Object.assign(new Error('the gateway is shutting down'), { status: 503 });
    const l = this.config.limits;
    if (this.sessions.size + this.opening >= l.maxSessions) {
      throw Object.assign(new Error(`the gateway has ${this.sessions.size + this.opening} sessions open, its limit (limits.maxSessions)`), { status: 503 });
    }
    const principal = identityKey(identity);
    const held = this.perPrincipal.get(principal) ?? 0;
    if (held >= l.maxSessionsPerIdentity) {
      this.log.warn({ ...identityLabel(identity), sessions: held }, 'session refused: per-identity limit');
      throw Object.assign(new Error(`this identity has ${held} sessions open, its limit (limits.maxSessionsPerIdentity): end one (DELETE) before opening another`), { status: 429 });
    }
    this.perPrincipal.set(principal, held + 1);
    this.opening++;
    let opened = false;
    try {
      const session = new Session(id, server, identity, channel, this);
      let upstream: Upstream;
      try {
        upstream = await this.connect(server, identity, session, opts);
      } catch (e) {
        this.metrics.upstreamFailures.inc({ server }); // connectUpstream logged why
        throw e;
      }
      if (upstream.verdict) this.verdicts.set(server, upstream.verdict);
      // A 2025 session on a 2026 upstream: the gateway plays the 2026 client for it. 2026 requests
      // (stateless) need no such help: they reach a 2026 upstream as they are.
      if (upstream.verdict?.era === 'modern' && !opts.stateless) upstream = new LegacyOverModern(upstream, upstream.verdict.discover, upstream.twin);
      session.attach(upstream);
      this.watchStart(server, upstream);
      if (this.closing) {
        // The gateway began to shut down while this upstream started: it must not outlive the shutdown.
        session.end('the gateway is shutting down');
        await session.whenClosed;
        throw Object.assign(new Error('the gateway is shutting down'), { status: 503 });
      }
      try {
        await this.opts.audit.append('session.start', identity.sub, { sessionId: id, server, identity: { ...identityLabel(identity), groups: identity.groups, via: identity.via } });
      } catch (e) {
        session.log.error({ err: (e as Error).message }, 'audit write failed; session refused');
        session.end('its start could not be recorded');
        throw Object.assign(new Error('Audit log unavailable: the session was not opened (PCL_AUDIT_WRITE_FAILED)'), { status: 503 });
      }
      if (session.isEnded) throw new Error(`the upstream ended before the session opened`);
      this.sessions.set(id, session);
      opened = true;
      this.metrics.sessions.inc({ server });
      session.log.info('session started');
      return session;
    } finally {
      this.opening--;
      if (!opened) this.release(principal);
    }
  }

  /**
   * The session's upstream: its own, or its lease on the process its credential's sessions share
   * (share: credential; a 2026 upstream is never shared this way, it needs no session).
   */
  private async connect(server: string, identity: Identity, session: Session, opts: { stateless?: boolean }): Promise<Upstream> {
    const config = this.config.servers[server];
    const baseDir = this.opts.baseDir ?? process.cwd();
    const own = () => connectUpstream(server, config, session.log, baseDir, this.verdicts.get(server), opts);
    // The session 2026 requests are served on (stateless) is one more session of the credential.
    if (config.transport !== 'stdio' || config.share !== 'credential' || this.verdicts.get(server)?.era === 'modern') return own();
    const key = `${server}\0${identityKey(identity)}`;
    for (;;) {
      let pending = this.shared.get(key);
      const mine = !pending;
      if (!pending) {
        const log = this.log.child({ server, ...identityLabel(identity), shared: true });
        const forget = () => this.shared.get(key) === p && this.shared.delete(key);
        const p: Promise<SharedUpstream | Upstream> = connectUpstream(server, config, log, baseDir, this.verdicts.get(server)).then(async (u) => {
          if (u.verdict?.era === 'modern') return u; // this session's own after all
          const s = new SharedUpstream(u, forget, config.shareIdle ?? SHARE_IDLE_MS);
          try {
            await s.open((m) => gatewayMessage(this.opts.policy, this.opts.audit, identity, server, m), this.limits.upstreamTimeoutMs);
          } catch (e) {
            log.error({ err: (e as Error).message }, 'shared upstream could not be opened');
            throw new PortcullisError('PCL_UPSTREAM_UNAVAILABLE', `upstream "${server}" could not be opened (PCL_UPSTREAM_UNAVAILABLE); the gateway's log says why`);
          }
          log.info('upstream started, shared by the sessions of this credential');
          return s;
        });
        this.shared.set(key, (pending = p));
        p.then((u) => u instanceof SharedUpstream || forget(), forget);
      }
      const s = await pending;
      if (!(s instanceof SharedUpstream)) {
        // A 2026 upstream: the session that started it keeps it; any other that waited starts its own.
        if (s.verdict) this.verdicts.set(server, s.verdict);
        return mine ? s : own();
      }
      // Undefined when it retired while this session waited (and took itself off the map): start another.
      const lease = s.lease();
      if (lease) return lease;
    }
  }

  private release(principal: string): void {
    const n = (this.perPrincipal.get(principal) ?? 1) - 1;
    if (n > 0) this.perPrincipal.set(principal, n);
    else this.perPrincipal.delete(principal);
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
    // Gone already (it exited while the gateway asked its era): the same story, told now.
    if (upstream.closedWith !== undefined) upstream.onclose(upstream.closedWith);
  }

  /** A session id is valid only on the path that created it and with the credential that created it. */
  findSession(id: string, server: string, identity: Identity): Session | undefined {
    const s = this.sessions.get(id);
    if (!s || s.server !== server || s.principal !== identityKey(identity)) return undefined;
    return s;
  }

  ended(session: Session, reason: string): void {
    this.opts.recorder?.endSession(session.id);
    if (!this.sessions.delete(session.id)) return;
    this.release(session.principal);
    this.metrics.sessions.dec({ server: session.server });
    session.log.info({ reason }, 'session ended');
    this.opts.audit.append('session.end', session.openedBy.sub, { sessionId: session.id, server: session.server, reason }).catch((e) => session.log.error({ err: (e as Error).message }, 'could not record session end'));
  }

  /** A new policy version is in force: every open session is told its lists may have changed. */
  policyChanged(): void {
    for (const s of this.sessions.values()) s.policyChanged();
  }

  /**
   * Drain, then end: no new sessions; requests in flight get up to graceMs to finish (no longer
   * once `force` aborts: then stdio upstreams are SIGKILLed); then every session ends and its
   * upstream is closed, stdio process groups included. Idempotent: every call gets the same
   * promise, so a second signal cannot start a second shutdown.
   */
  close(opts: ShutdownOptions = {}): Promise<void> {
    return (this.shutdown ??= this.drainThenEnd(opts));
  }

  private async drainThenEnd({ graceMs = DRAIN_MS, force }: ShutdownOptions): Promise<void> {
    this.closing = true;
    // A held call would wait for a human past any grace: withdraw it now, with a clear error.
    await this.opts.approvals?.close();
    const forced = new Promise<void>((resolve) => {
      const now = () => (killStdioUpstreams(), resolve());
      if (force?.aborted) now();
      else force?.addEventListener('abort', now, { once: true });
    });
    let timer: NodeJS.Timeout | undefined;
    const drained = Promise.all([...this.sessions.values()].map((s) => s.drained()));
    await Promise.race([drained, forced, new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    const sessions = [...this.sessions.values()];
    for (const s of sessions) s.end('the gateway is shutting down');
    await Promise.all(sessions.map((s) => s.whenClosed));
    // Shared processes kept for a credential's next session (shareIdle) end now.
    await Promise.all([...this.shared.values()].map((p) => p.then((s) => (s instanceof SharedUpstream ? s.close() : undefined)).catch(() => undefined)));
    this.auth.close();
  }

  /**
   * Ready when every upstream can be reached (HTTP answers; a stdio command exists, and its last
   * start did not end before it answered). /readyz is
   * public, so it says names and states only; why a check fails (a command, an address, a store
   * error) goes to the log, once each time it changes.
   */
  async readiness(): Promise<{ ready: boolean; checks: Record<string, string> }> {
    const checks: Record<string, { state: string; detail?: string }> = {};
    await Promise.all(Object.entries(this.config.servers).map(async ([name, server]) => (checks[`upstream:${name}`] = await probeUpstream(server, this.opts.baseDir ?? process.cwd()))));
    for (const [name, detail] of this.startProblems) if (checks[`upstream:${name}`].state === 'ok') checks[`upstream:${name}`] = { state: 'cannot start', detail };
    const audit = this.opts.health;
    if (audit) {
      const { pending, oldestPendingMs } = audit.stats();
      // A store that waits on a lock fails nothing for seconds: report the stall before it fails.
      checks.audit = !audit.healthy() ? { state: 'failing', detail: audit.lastError()?.message ?? 'write failed' } : oldestPendingMs > 1000 ? { state: 'stalled', detail: `${pending} appends waiting ${oldestPendingMs} ms` } : { state: 'ok' };
    }
    checks.auth = this.auth.ready() ? { state: 'ok' } : { state: 'not ready', detail: this.auth.readinessProblem() ?? 'identity provider unavailable' };
    // policy.source: store before the first push: every request would be denied (SPEC 7).
    if (this.opts.policy.current().version === NO_POLICY_PUSHED) checks.policy = { state: 'nothing pushed', detail: 'policy.source is store and no bundle has been pushed (PUT /admin/v1/policy)' };
    if (this.closing) checks.gateway = { state: 'shutting down' };
    const states: Record<string, string> = {};
    for (const [name, { state, detail }] of Object.entries(checks)) {
      states[name] = state;
      const said = detail === undefined ? state : `${state}: ${detail}`;
      if (this.readinessSaid.get(name) !== said && (state !== 'ok' || this.readinessSaid.has(name))) this.log[state === 'ok' ? 'info' : 'warn']({ check: name, state, detail }, 'readiness check changed');
      this.readinessSaid.set(name, said);
    }
    return { ready: Object.values(states).every((c) => c === 'ok'), checks: states };
  }
  private readonly readinessSaid = new Map<string, string>();
}

export interface RunningGateway {
  gateway: Gateway;
  server: Server;
  url(server: string): string;
  close(opts?: ShutdownOptions): Promise<void>;
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
  const mcp = mcpHandler(gw);
  const boundToLoopback = isLoopbackHost(config.listen.host.toLowerCase());
  server.on('request', (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    // Every route, not only /mcp: a DNS-rebinding page must not read /metrics or /readyz either.
    try {
      checkHostAndOrigin(req, config.listen, boundToLoopback);
    } catch (e) {
      gw.metrics.refusals.inc({ status: '403' });
      if (path.startsWith('/mcp/')) return sendRefusal(res, e as HttpRefusal);
      return json(res, 403, { error: 'forbidden', message: (e as Error).message });
    }
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
  // Stop accepting, drain and end the sessions, then close connections: idle ones at once,
  // busy ones (a GET stream, say) after 5 s or at once when forced.
  let closing: Promise<void> | undefined;
  const closeListener = async (opts: ShutdownOptions = {}) => {
    const closed = new Promise<void>((r) => server.close(() => r()));
    await gw.close(opts);
    server.closeIdleConnections();
    const all = () => server.closeAllConnections();
    const timer = setTimeout(all, 5_000);
    if (opts.force?.aborted) all();
    else opts.force?.addEventListener('abort', all, { once: true });
    await closed;
    clearTimeout(timer);
    opts.force?.removeEventListener('abort', all);
  };
  return {
    gateway: gw,
    server,
    url: (name) => `http://${host}:${address.port}/mcp/${encodeURIComponent(name)}`,
    close: (opts) => (closing ??= closeListener(opts)),
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
    if (!gw.metricsAllowed(req.headers.authorization)) {
      gw.metrics.refusals.inc({ status: '401' });
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer realm="metrics"' });
      return void res.end(JSON.stringify({ error: 'unauthorized', message: 'metrics need Authorization: Bearer <token> (metrics.tokens)' }));
    }
    res.writeHead(200, { 'content-type': gw.metrics.registry.contentType });
    return void res.end(await gw.metrics.registry.metrics());
  }
  json(res, 404, { error: 'not_found', message: `no route ${path}; MCP servers are at /mcp/<server>` });
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
