// Configurations that load and start but that a user would not want: said loudly at start.
import { isLoopbackHost } from '../fronts/http-request.js';
import type { Config } from './schema.js';

export function accessWarnings(config: Config): string[] {
  const { auth, listen } = config;
  const warnings: string[] = [];
  if (!auth.oidc && auth.apiKeys.length === 0 && !auth.anonymous) {
    warnings.push('nobody can connect: auth has no oidc, no apiKeys and anonymous is false, so every request gets 401. Add a key with `portcullis keys new --id <name>` (or configure auth.oidc)');
  }
  if (auth.anonymous && !isLoopbackHost(listen.host.replace(/^\[|\]$/g, ''))) {
    warnings.push(`auth.anonymous is true and the gateway listens on ${listen.host}, not on loopback: anyone who can reach ${listen.host}:${listen.port} gets the anonymous identity. Use API keys or OIDC, or listen on 127.0.0.1`);
  }
  return warnings;
}
