// Upstream secrets in what the gateway writes: URLs in logs with their query values hidden, and
// configured secret values scrubbed from text that came from elsewhere (errors, response bodies).
import type { ServerConfig } from '../config/schema.js';

export const REDACTED = '[REDACTED]';

/** A URL for logs: every query value (and a fragment) hidden, since SaaS MCP servers take keys there (?api_key=…). */
export function redactedUrl(url: string): string {
  const u = new URL(url);
  for (const key of [...new Set(u.searchParams.keys())]) u.searchParams.set(key, REDACTED);
  if (u.hash) u.hash = REDACTED;
  return u.href.replaceAll(encodeURIComponent(REDACTED), REDACTED);
}

/** Values shorter than this are not scrubbed from text: "1" or "json" are no secrets, and erasing them garbles. */
const MIN_SECRET_LENGTH = 6;

/**
 * Removes the upstream's secrets from text that came from elsewhere (an error, an upstream's
 * response body): the URL, each query value and each header value, raw and URL-encoded.
 */
export function scrubber(server: ServerConfig): (text: string) => string {
  if (server.transport === 'stdio') return (text) => text;
  const u = new URL(server.url);
  // As written in the config and as the URL parser re-encodes it (a "'" becomes %27): either can be quoted back.
  const written = server.url.split('#')[0].split('?').slice(1).join('?');
  const rawQueryValues = [written, u.search.slice(1)].flatMap((q) => q.split('&').map((pair) => pair.slice(pair.indexOf('=') + 1)));
  const values = [server.url, u.href, u.hash.slice(1), ...rawQueryValues, ...u.searchParams.values(), ...Object.values(server.headers)];
  for (const v of [...values]) {
    values.push(encodeURIComponent(v));
    // "Bearer <token>": the token alone can be echoed too.
    const sp = v.indexOf(' ');
    if (sp !== -1) values.push(v.slice(sp + 1));
  }
  const secrets = [...new Set(values)].filter((v) => v.length >= MIN_SECRET_LENGTH).sort((a, b) => b.length - a.length);
  return (text) => secrets.reduce((t, secret) => t.replaceAll(secret, REDACTED), text);
}
