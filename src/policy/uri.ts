// One resource, one spelling. Upstream servers resolve the URIs they are asked for (the MCP SDK
// runs WHATWG `new URL()`: it drops tabs and newlines anywhere, trims controls and spaces,
// resolves dot segments, folds the scheme's case, turns "\" into "/" for file: and http:,
// decodes "%2e"); a filesystem then merges "//" and may decode "%2F". A policy decided on the
// spelling the client sent could be matched against one resource while the upstream serves
// another. So policy only ever sees URIs already in canonical form (RFC 3986 section 6.2.2, and
// unchanged by the WHATWG parser); any other spelling is refused before it is decided, never
// rewritten (what is decided is what is forwarded, SPEC 10).
import { UriTemplate } from '@modelcontextprotocol/sdk/shared/uriTemplate.js';

/** RFC 3986 unreserved characters: their percent-encodings are never canonical. */
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
/** Every character RFC 3986 allows in a URI (unreserved, reserved and "%"). */
const URI_CHARS = /^[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]*$/;
/** scheme ":" ["//" authority] path ["?" query] ["#" fragment] (RFC 3986 appendix B). */
const PARTS = /^([^:/?#]+):(?:\/\/([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$/s;

const hex = (c: string) => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;

function badCharacter(uri: string): string | undefined {
  if (URI_CHARS.test(uri)) return undefined;
  for (const c of uri) {
    if (URI_CHARS.test(c)) continue;
    const cp = c.codePointAt(0)!;
    if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) return `it holds a control character (${hex(c)})`;
    if (/\s/u.test(c)) return `it holds whitespace (${hex(c)})`;
    if (c === '\\') return 'it holds a backslash, which servers may read as "/"';
    if (cp > 0x7f) return `it holds a non-ASCII character (${hex(c)}): percent-encode its UTF-8 bytes`;
    return `it holds "${c}", which is not allowed in a URI: percent-encode it`;
  }
  return undefined;
}

function badEncoding(uri: string): string | undefined {
  for (let i = uri.indexOf('%'); i >= 0; i = uri.indexOf('%', i + 1)) {
    const pair = uri.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(pair)) return `it holds a "%" that is not followed by two hex digits`;
    if (pair !== pair.toUpperCase()) return `it holds the percent-encoding %${pair}: write %${pair.toUpperCase()} (uppercase hex)`;
    const byte = parseInt(pair, 16);
    const c = String.fromCharCode(byte);
    if (byte < 0x80 && UNRESERVED.test(c)) return `it holds %${pair}, an encoded "${c}": write "${c}" itself`;
    if (byte < 0x20 || byte === 0x7f) return `it holds %${pair}, an encoded control character`;
  }
  // Runs of encoded bytes must be UTF-8 (an overlong "%C0%AE" is a "." to some decoders).
  for (const run of uri.match(/(?:%[0-9A-F]{2})+/g) ?? []) {
    try {
      decodeURIComponent(run);
    } catch {
      return `it holds ${run}, which is not UTF-8`;
    }
  }
  return undefined;
}

function badPath(path: string): string | undefined {
  const separator = /%2F|%5C/.exec(path)?.[0];
  if (separator) return `it holds ${separator}, an encoded "${separator === '%2F' ? '/' : '\\'}" that a server may decode into a path separator`;
  const twice = /%25(?:2[EF]|5C)/i.exec(path)?.[0];
  if (twice) return `it holds ${twice}, a "." or separator encoded twice, which a server that decodes twice resolves`;
  const segments = path.split('/');
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i];
    if (s === '.' || s === '..') return `it holds the dot segment "${s}", which servers resolve`;
    // "" first (a path starting with "/") and last (a trailing "/") are not empty segments.
    if (s === '' && i > 0 && i < segments.length - 1) return 'it holds an empty path segment ("//"), which file systems merge';
  }
  return undefined;
}

/**
 * Why `uri` is not a canonical absolute URI, or undefined when it is. Canonical: only RFC 3986
 * characters; percent-encodings in uppercase hex, never of an unreserved character or a control,
 * and UTF-8; a lowercase scheme and host; no userinfo, no empty or leading-zero port; a path
 * without dot segments, empty segments, an encoded "/" or "\", or "." "/" "\" encoded twice; no
 * empty query, no fragment;
 * and unchanged by `new URL()`.
 */
export function uriProblem(uri: string): string | undefined {
  if (uri === '') return 'it is empty';
  const problem = badCharacter(uri) ?? badEncoding(uri);
  if (problem) return problem;
  const parts = PARTS.exec(uri);
  if (!parts || !/^[A-Za-z][A-Za-z0-9+.-]*$/.test(parts[1])) return 'it is not an absolute URI (scheme ":" …)';
  const [, scheme, authority, path, query, fragment] = parts;
  if (scheme !== scheme.toLowerCase()) return `its scheme must be lowercase (${scheme.toLowerCase()}:, not ${scheme}:)`;
  if (authority !== undefined) {
    if (authority.includes('@')) return 'it holds userinfo ("…@"): credentials are no part of a resource name';
    const [, host, port] = /^(\[[^\]]*\]|[^:]*)(?::(.*))?$/.exec(authority) ?? [];
    if (host === undefined) return 'its authority is malformed';
    if (host !== host.toLowerCase()) return `its host must be lowercase (${host.toLowerCase()})`;
    if (host.includes('%')) return 'its host is percent-encoded';
    if (port !== undefined && !/^[1-9][0-9]*$/.test(port)) return port === '' ? 'it has an empty port (":")' : `its port "${port}" is not a number without leading zeros`;
  }
  const bad = badPath(path);
  if (bad) return bad;
  if (query === '') return 'it ends in an empty query ("?")';
  if (fragment !== undefined) return 'it holds a fragment ("#…"), which names a part of a resource, not a resource';
  let parsed: URL;
  try {
    parsed = new URL(uri);
  } catch {
    return 'it is not a URL that servers can parse';
  }
  if (parsed.href !== uri) return `servers read it as ${parsed.href}`;
  return undefined;
}

/**
 * Why a resource template (RFC 6570, as in completion/complete's ref/resource) is not canonical:
 * it must parse as the SDK's UriTemplate, and with every expression replaced by a plain value it
 * must be a canonical URI (so its literal parts hold no dot segment, no odd encoding, no case
 * that servers fold).
 */
export function templateProblem(template: string): string | undefined {
  try {
    new UriTemplate(template);
  } catch (e) {
    return `it is not a URI template: ${(e as Error).message}`;
  }
  const problem = uriProblem(template.replace(/\{[^{}]*\}/g, 'x'));
  return problem && problem.replace(/^servers read it as .*/, 'servers would rewrite it');
}
