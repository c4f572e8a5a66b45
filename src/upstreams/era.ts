// Which era an upstream speaks (2026-07-28 Versioning, backward compatibility): a 2026 server
// answers server/discover (or a recognised 2026 error); anything else (another error, silence)
// is a 2025 server, which then gets initialize as before. The gateway asks once per configured
// server and keeps the answer for the life of the process (`era: auto`), or is told (`era: 2025`
// / `2026`).
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { HEADER_MISMATCH, MISSING_REQUIRED_CLIENT_CAPABILITY, PROTOCOL_VERSION_META, UNSUPPORTED_PROTOCOL_VERSION } from '../protocol/mcp-headers.js';
import { packageVersion } from '../version.js';

// The names of the 2026-07-28 era, in one place for the fronts, the pool and the connectors.
export const MODERN_PROTOCOL_VERSION = '2026-07-28';
export const PROTOCOL_VERSION_KEY = PROTOCOL_VERSION_META;
export const CLIENT_CAPABILITIES_KEY = 'io.modelcontextprotocol/clientCapabilities';
export const CLIENT_INFO_KEY = 'io.modelcontextprotocol/clientInfo';
export const LOG_LEVEL_KEY = 'io.modelcontextprotocol/logLevel';
export const SERVER_INFO_KEY = 'io.modelcontextprotocol/serverInfo';
/** The client capability each request a server sends the client needs. */
export const CAPABILITY_FOR: Readonly<Record<string, string>> = { 'elicitation/create': 'elicitation', 'sampling/createMessage': 'sampling', 'roots/list': 'roots' };

/** How long a probe waits: a 2025 server may stay silent on a request before initialize. */
export const PROBE_TIMEOUT_MS = 3_000;
/** The errors only a 2026 server gives (HeaderMismatch, MissingRequiredClientCapability, UnsupportedProtocolVersion). */
export const MODERN_ERRORS: ReadonlySet<number> = new Set([HEADER_MISMATCH, MISSING_REQUIRED_CLIENT_CAPABILITY, UNSUPPORTED_PROTOCOL_VERSION]);

export type Verdict = { era: 'modern'; discover: Record<string, unknown> } | { era: 'legacy' };

/** The `_meta` envelope the gateway sends as a 2026 client of its own (probes, list reads). */
export function gatewayEnvelope(capabilities: Record<string, unknown> = {}): Record<string, unknown> {
  return { [PROTOCOL_VERSION_KEY]: MODERN_PROTOCOL_VERSION, [CLIENT_CAPABILITIES_KEY]: capabilities, [CLIENT_INFO_KEY]: { name: 'portcullis', version: packageVersion() } };
}

export const PROBE_ID = 'portcullis-discover';

export function discoverProbe(): JSONRPCMessage {
  return { jsonrpc: '2.0', id: PROBE_ID, method: 'server/discover', params: { _meta: gatewayEnvelope() } } as JSONRPCMessage;
}

/**
 * An UnsupportedProtocolVersion answer that lists 2026-07-28 among the supported versions: a
 * client retries with a supported version (basic/versioning), here the same one; the probe asks
 * again, once.
 */
export function asksAgain(answer: JSONRPCMessage | undefined): boolean {
  const e = (answer as { error?: { code?: unknown; data?: { supported?: unknown } } } | undefined)?.error;
  const supported = e?.data?.supported;
  return e?.code === UNSUPPORTED_PROTOCOL_VERSION && Array.isArray(supported) && supported.includes(MODERN_PROTOCOL_VERSION);
}

/** The verdict an answer to the probe gives (undefined: no answer, a 2025 server). */
export function verdictOf(answer: JSONRPCMessage | undefined): Verdict {
  const m = answer as { result?: Record<string, unknown>; error?: { code?: number; data?: { supported?: unknown } } } | undefined;
  const supported = m?.result?.supportedVersions;
  if (Array.isArray(supported) && supported.includes(MODERN_PROTOCOL_VERSION)) return { era: 'modern', discover: m!.result! };
  // A 2026 server that does not serve 2026-07-28 (a later revision only) is not one the gateway can speak to.
  if (Array.isArray(supported) || (m?.error?.code !== undefined && MODERN_ERRORS.has(m.error.code))) {
    throw new Error(`the upstream speaks a later MCP revision than 2026-07-28 only (supported: ${JSON.stringify(supported ?? m?.error?.data?.supported ?? [])})`);
  }
  return { era: 'legacy' };
}
