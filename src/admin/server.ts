// The admin API (SPEC 7): its own listener, loopback by default, with the MCP front's Host and
// Origin checks. Callers authenticate with an admin token (only its SHA-256 is in the config) or
// an identity of the gateway (OIDC, API key) in one of `admin.groups`. Every call is an audit
// record naming its caller, refused ones included. JSON in and out; errors are {error, message},
// never a stack.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createApiKeyVerifier } from '../auth/api-keys.js';
import type { Authenticator } from '../auth/authenticate.js';
import type { Config } from '../config/schema.js';
import { checkHostAndOrigin, HttpRefusal, isLoopbackHost } from '../fronts/http-request.js';
import { actorOf, AdminError, adminRoutes, type AdminContext, type Caller } from './routes.js';

export interface AdminDeps extends Omit<AdminContext, 'caller' | 'body' | 'query'> {
  config: Config;
  log: Logger;
  auth: Authenticator;
}

export interface RunningAdmin {
  server: Server;
  /** http://host:port */
  base: string;
  close(): Promise<void>;
}

export async function startAdmin(deps: AdminDeps): Promise<RunningAdmin> {
  const admin = deps.config.admin!;
  const listen = admin.listen;
  const loopback = isLoopbackHost(listen.host.toLowerCase());
  const tokens = createApiKeyVerifier(admin.tokens.map((t) => ({ ...t, groups: [] })));
  const adminGroups = new Set(admin.groups);
  const routes = adminRoutes();

  async function authenticate(req: IncomingMessage): Promise<Caller> {
    const header = req.headers.authorization;
    const bearer = header !== undefined && /^Bearer [^\s]+$/i.test(header) ? header.slice(7) : undefined;
    if (bearer !== undefined) {
      const token = tokens.verify(bearer);
      if (token) return { kind: 'token', id: String(token.claims.keyId), admin: true };
    }
    if (header === undefined) throw new AdminError(401, 'unauthorized', 'send Authorization: Bearer <admin token or identity token>');
    const outcome = await deps.auth.authenticate(header);
    if (!outcome.ok || outcome.identity.via === 'anonymous') throw new AdminError(401, 'unauthorized', outcome.ok ? 'credentials required' : outcome.description);
    const identity = outcome.identity;
    return { kind: 'identity', identity, admin: identity.groups.some((g) => adminGroups.has(g)) };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin.invalid');
    const method = req.method ?? 'GET';
    let caller: Caller | undefined;
    let status = 500;
    let detail: Record<string, unknown> = {};
    try {
      try {
        checkHostAndOrigin(req, listen, loopback);
      } catch (e) {
        if (e instanceof HttpRefusal) throw new AdminError(e.status, 'forbidden', e.message);
        throw e;
      }
      const route = routes.match(method, url.pathname);
      if (!route) throw new AdminError(404, 'not_found', `no admin route ${method} ${url.pathname}`);
      caller = await authenticate(req);
      if (route.adminOnly && !caller.admin) throw new AdminError(403, 'forbidden', `${actorOf(caller)} is not an admin (admin.tokens, admin.groups)`);
      const body = method === 'GET' ? undefined : await readBody(req, deps.config.limits.maxBodyBytes);
      const answer = await route.handle({ ...deps, caller, body, query: url.searchParams }, route.params);
      status = answer.status ?? 200;
      detail = answer.audit ?? {};
      send(res, status, answer.body);
    } catch (e) {
      const err = e instanceof AdminError ? e : new AdminError(500, 'internal', 'internal error (see the gateway log)');
      if (!(e instanceof AdminError)) deps.log.error({ err: (e as Error).message, stack: (e as Error).stack, path: url.pathname }, 'admin request failed');
      status = err.status;
      detail = { error: err.error };
      send(res, status, { error: err.error, message: err.message, ...err.extra });
    }
    // Every call, refused ones too, with its caller: the audit log answers "who changed what".
    await deps.audit
      .append(`admin.request`, actorOf(caller), { method, path: url.pathname, status, ...detail })
      .catch((e) => deps.log.error({ err: (e as Error).message }, 'could not record an admin request'));
  }

  const server = createServer({ maxHeaderSize: deps.config.limits.maxHeaderBytes, requestTimeout: deps.config.limits.requestTimeout });
  server.on('request', (req, res) => void handle(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const base = `http://${host}:${address.port}`;
  deps.log.info({ address: base }, 'admin API listening');
  return {
    server,
    base,
    close: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), 5_000);
      await closed;
      clearTimeout(timer);
    },
  };
}

/** A JSON object body, strictly UTF-8, under the size limit. */
async function readBody(req: IncomingMessage, max: number): Promise<Record<string, unknown>> {
  const type = req.headers['content-type']?.split(';')[0].trim().toLowerCase();
  if (type !== 'application/json') throw new AdminError(415, 'unsupported_media_type', 'Content-Type must be application/json');
  if (req.headers['content-encoding'] !== undefined && req.headers['content-encoding'] !== 'identity') throw new AdminError(415, 'unsupported_media_type', 'send the body uncompressed');
  if (Number(req.headers['content-length'] ?? 0) > max) throw new AdminError(413, 'too_large', `the body is over ${max} bytes (limits.maxBodyBytes)`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new AdminError(413, 'too_large', `the body is over ${max} bytes (limits.maxBodyBytes)`);
    chunks.push(chunk);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks, size));
  } catch {
    throw new AdminError(400, 'bad_request', 'the body is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new AdminError(400, 'bad_request', `the body is not JSON: ${(e as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new AdminError(400, 'bad_request', 'the body must be a JSON object');
  return parsed as Record<string, unknown>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return void res.end();
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}
