// MCP authorization (revision 2025-11-25): the gateway is an OAuth 2.1 resource server. A client
// that gets a 401 reads `resource_metadata` from WWW-Authenticate (or probes the well-known
// paths), fetches the RFC 9728 document, finds the authorization server (our OIDC issuer) there,
// and asks it for a token for this resource (RFC 8707 `resource`).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthConfig } from '../config/schema.js';
import { SERVER_NAME } from '../config/schema.js';
import type { AuthFailure } from './authenticate.js';

export const WELL_KNOWN_PREFIX = '/.well-known/oauth-protected-resource';

export interface ProtectedResourceMetadata {
  resource: string;
  authorization_servers?: string[];
  bearer_methods_supported: string[];
  scopes_supported?: string[];
  resource_name?: string;
}

/** The RFC 9728 document for `resourceUrl` (the gateway's base URL, or one /mcp/<server> URL). */
export function protectedResourceMetadata(resourceUrl: string, auth: AuthConfig): ProtectedResourceMetadata {
  const doc: ProtectedResourceMetadata = { resource: resourceUrl, bearer_methods_supported: ['header'], resource_name: 'Portcullis MCP gateway' };
  if (auth.oidc) doc.authorization_servers = [auth.oidc.issuer];
  if (auth.oidc?.scopes?.length) doc.scopes_supported = auth.oidc.scopes;
  return doc;
}

/**
 * Where the metadata of a resource lives (RFC 9728 section 3.1: the well-known segment goes
 * between the host and the path). `publicBaseUrl` is the gateway's external origin, e.g.
 * auth.resourceUrl or http://127.0.0.1:8080; take it from configuration, not from Host headers.
 */
export function resourceMetadataUrl(publicBaseUrl: string, server?: string): string {
  const base = publicBaseUrl.replace(/\/+$/, '');
  return server === undefined ? `${base}${WELL_KNOWN_PREFIX}` : `${base}${WELL_KNOWN_PREFIX}/mcp/${encodeURIComponent(server)}`;
}

/** The resource URL of the /mcp/<server> endpoint: what its tokens' audience should be. */
export function resourceUrlFor(publicBaseUrl: string, server: string): string {
  return `${publicBaseUrl.replace(/\/+$/, '')}/mcp/${encodeURIComponent(server)}`;
}

/**
 * The WWW-Authenticate value of a refusal: `Bearer resource_metadata="…"`, then `error` and
 * `error_description` when the outcome has an error code (none when no credentials were sent,
 * RFC 6750 section 3.1), then `scope` when scopes are configured.
 */
export function wwwAuthenticate(outcome: Pick<AuthFailure, 'error' | 'description'>, resourceMetadataUrlValue?: string, scopes?: readonly string[]): string {
  const params: string[] = [];
  if (resourceMetadataUrlValue) params.push(`resource_metadata=${quote(resourceMetadataUrlValue)}`);
  if (outcome.error) {
    params.push(`error=${quote(outcome.error)}`);
    params.push(`error_description=${quote(outcome.description)}`);
  }
  if (scopes?.length) params.push(`scope=${quote(scopes.join(' '))}`);
  return params.length ? `Bearer ${params.join(', ')}` : 'Bearer';
}

/** An RFC 7230 quoted-string; control and non-ASCII characters (never in our messages, but a
 *  description may quote a claim) become "?" so the header stays valid. */
function quote(value: string): string {
  return `"${value.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, '\\$&')}"`;
}

/**
 * Serves `/.well-known/oauth-protected-resource` (resource = the base URL) and
 * `/.well-known/oauth-protected-resource/mcp/<server>` (resource = <base>/mcp/<server>).
 * Returns false when the path is not one of these, so the caller routes it on; true when it has
 * answered. `isServer` makes unknown server names 404, like /mcp/<unknown> does.
 */
export function handleWellKnown(
  req: IncomingMessage,
  res: ServerResponse,
  publicBaseUrl: string,
  auth: AuthConfig,
  isServer: (name: string) => boolean = () => true,
): boolean {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  if (path !== WELL_KNOWN_PREFIX && !path.startsWith(`${WELL_KNOWN_PREFIX}/`)) return false;

  const rest = path.slice(WELL_KNOWN_PREFIX.length);
  let resource: string | undefined;
  if (rest === '' || rest === '/') resource = publicBaseUrl.replace(/\/+$/, '');
  else {
    const m = /^\/mcp\/([^/]+)\/?$/.exec(rest);
    let name: string | undefined;
    try {
      name = m ? decodeURIComponent(m[1]) : undefined;
    } catch {
      name = undefined;
    }
    if (name !== undefined && SERVER_NAME.test(name) && isServer(name)) resource = resourceUrlFor(publicBaseUrl, name);
  }

  // Metadata is public by design (RFC 9728): browser-based MCP clients must be able to read it.
  res.setHeader('Access-Control-Allow-Origin', '*');
  if (req.method === 'OPTIONS') {
    res.writeHead(204, { 'Access-Control-Allow-Methods': 'GET, HEAD, OPTIONS', 'Access-Control-Allow-Headers': 'MCP-Protocol-Version' }).end();
    return true;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    sendJson(res, 405, { error: 'method_not_allowed' }, req.method, { Allow: 'GET, HEAD, OPTIONS' });
    return true;
  }
  // Without an OIDC issuer there is no authorization server to point clients at (API keys are
  // provisioned out of band), so there is no OAuth metadata to publish.
  if (!resource || !auth.oidc) {
    sendJson(res, 404, { error: 'not_found' }, req.method);
    return true;
  }
  sendJson(res, 200, protectedResourceMetadata(resource, auth), req.method, { 'Cache-Control': 'public, max-age=3600' });
  return true;
}

function sendJson(res: ServerResponse, status: number, body: unknown, method: string | undefined, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(method === 'HEAD' ? undefined : text);
}
