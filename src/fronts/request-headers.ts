// MCP 2026-07-28 request headers (SEP-2243): MCP-Protocol-Version, Mcp-Method, Mcp-Name and
// Mcp-Param-{Name} mirror fields of the body so that load balancers can route without parsing
// it. Whatever trusts a header must see the body say the same thing, so the gateway checks every
// header it recognises against the body it decides on (400 with -32020 HeaderMismatch) and never
// decides on a header. A header sent twice is refused too: Node joins repeated values with ", ",
// and "a" + "a" must not pass as a body value "a, a" while a router reads the first "a".
import type { IncomingMessage } from 'node:http';

export const HEADER_MISMATCH = -32020;

/** Which body field Mcp-Name mirrors, per method (2026-07-28 Standard Request Headers; tasks/* per SEP-2663). */
const NAME_SOURCE: Record<string, 'name' | 'uri' | 'taskId'> = {
  'tools/call': 'name',
  'prompts/get': 'name',
  'resources/read': 'uri',
  'tasks/get': 'taskId',
  'tasks/update': 'taskId',
  'tasks/cancel': 'taskId',
};

const SENTINEL = /^=\?base64\?([A-Za-z0-9+/]*={0,2})\?=$/;
/** RFC 9110 field-value characters, as a header value may carry them unencoded. */
const PLAIN = /^[\x20-\x7e\t]*$/;
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The value a header carries: plain visible ASCII as is, or the `=?base64?…?=` sentinel decoded
 * (strict: canonical Base64 of well-formed UTF-8). Undefined when it is neither.
 */
export function decodeHeaderValue(value: string): string | undefined {
  if (value.startsWith('=?base64?') && value.endsWith('?=')) {
    const m = SENTINEL.exec(value);
    if (!m) return undefined;
    const bytes = Buffer.from(m[1], 'base64');
    // Non-canonical Base64 (stray bits, missing padding) decodes too: one value, one spelling.
    if (bytes.toString('base64') !== m[1]) return undefined;
    try {
      return UTF8.decode(bytes);
    } catch {
      return undefined;
    }
  }
  return PLAIN.test(value) ? value : undefined;
}

/** A value as a client must send it: plain when it is safe visible ASCII with no edge spaces, else the sentinel. */
export function encodeHeaderValue(value: string): string {
  const plain = PLAIN.test(value) && !/^[ \t]|[ \t]$/.test(value) && !(value.startsWith('=?base64?') && value.endsWith('?='));
  return plain ? value : `=?base64?${Buffer.from(value, 'utf8').toString('base64')}?=`;
}

export class HeaderMismatch extends Error {}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A tool's `x-mcp-header` annotations: header name (lower case) → the `properties` path it mirrors. */
export type ParamHeaders = Map<string, string[]>;

/**
 * The annotations of a tool's inputSchema that the spec allows (statically reachable through
 * `properties` only, token names, unique ignoring case). Undefined when any is invalid: such a
 * tool definition is invalid as a whole, and its headers are then checked by nobody here.
 */
export function paramHeadersOf(inputSchema: unknown): ParamHeaders | undefined {
  const out: ParamHeaders = new Map();
  const walk = (schema: unknown, path: string[]): boolean => {
    if (!isObj(schema)) return true;
    const header = schema['x-mcp-header'];
    if (header !== undefined) {
      if (path.length === 0 || typeof header !== 'string' || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(header)) return false;
      const key = header.toLowerCase();
      if (out.has(key)) return false;
      out.set(key, path);
    }
    const props = schema.properties;
    if (isObj(props)) for (const [name, child] of Object.entries(props)) if (!walk(child, [...path, name])) return false;
    return true;
  };
  return walk(inputSchema, []) ? out : undefined;
}

/** One header's value, refusing a header sent more than once. */
export function singleHeader(req: IncomingMessage, name: string): string | undefined {
  const values = req.headersDistinct[name];
  if (!values) return undefined;
  if (values.length > 1) throw new HeaderMismatch(`the ${name} header is sent ${values.length} times: send it once`);
  return values[0];
}

/**
 * Checks the standard headers of a 2026-era request against its body (2026-07-28 Server
 * Validation): MCP-Protocol-Version and Mcp-Method present and equal to the body's; Mcp-Name
 * present and equal (decoded) for the methods that name something. Throws HeaderMismatch saying
 * what disagrees.
 */
export function checkStandardHeaders(req: IncomingMessage, body: Obj, version: string): void {
  const method = body.method as string;
  const params = isObj(body.params) ? body.params : {};
  const pv = singleHeader(req, 'mcp-protocol-version');
  if (pv === undefined) throw new HeaderMismatch(`the MCP-Protocol-Version header is missing (the body names ${version})`);
  if (pv !== version) throw new HeaderMismatch(`MCP-Protocol-Version header "${pv}" does not match the body's ${version}`);
  const mm = singleHeader(req, 'mcp-method');
  if (mm === undefined) throw new HeaderMismatch(`the Mcp-Method header is missing (the body names ${method})`);
  if (mm !== method) throw new HeaderMismatch(`Mcp-Method header "${mm}" does not match the body's method ${method}`);
  const source = Object.hasOwn(NAME_SOURCE, method) ? NAME_SOURCE[method] : undefined;
  const name = singleHeader(req, 'mcp-name');
  if (source) {
    const bodyValue = params[source];
    if (name === undefined) {
      if (typeof bodyValue === 'string') throw new HeaderMismatch(`the Mcp-Name header is missing (the body's params.${source} is ${JSON.stringify(bodyValue)})`);
    } else {
      const decoded = decodeHeaderValue(name);
      if (decoded === undefined) throw new HeaderMismatch('the Mcp-Name header holds characters a header may not carry unencoded, or an invalid =?base64?…?= value');
      if (decoded !== bodyValue) throw new HeaderMismatch(`Mcp-Name header ${JSON.stringify(decoded)} does not match the body's params.${source} ${JSON.stringify(bodyValue)}`);
    }
  } else if (name !== undefined && decodeHeaderValue(name) === undefined) {
    throw new HeaderMismatch('the Mcp-Name header holds characters a header may not carry unencoded, or an invalid =?base64?…?= value');
  }
}

/**
 * A tools/call's Mcp-Param headers: every header the tool's x-mcp-header annotations define equal
 * to its argument, and present whenever the argument is. Mcp-Param headers no annotation defines
 * are not ours to judge (the spec has intermediaries forward and ignore them).
 */
export function checkParamHeaders(req: IncomingMessage, body: Obj, paramHeaders: (tool: string) => ParamHeaders | undefined): void {
  const params = isObj(body.params) ? body.params : {};
  if (body.method !== 'tools/call' || typeof params.name !== 'string') return;
  const annotated = paramHeaders(params.name);
  if (!annotated) return;
  const args = isObj(params.arguments) ? params.arguments : {};
  for (const [header, path] of annotated) {
    const sent = singleHeader(req, `mcp-param-${header}`);
    let value: unknown = args;
    for (const key of path) value = isObj(value) && Object.hasOwn(value, key) ? value[key] : undefined;
    const absent = value === undefined || value === null;
    if (sent === undefined) {
      if (absent) continue;
      throw new HeaderMismatch(`the Mcp-Param-${header} header is missing (the tool's ${path.join('.')} is set)`);
    }
    const decoded = decodeHeaderValue(sent);
    if (decoded === undefined) throw new HeaderMismatch(`the Mcp-Param-${header} header holds characters a header may not carry unencoded, or an invalid =?base64?…?= value`);
    if (absent || !sameValue(decoded, value)) throw new HeaderMismatch(`Mcp-Param-${header} header ${JSON.stringify(decoded)} does not match the tool's ${path.join('.')} ${absent ? '(not set)' : JSON.stringify(value)}`);
  }
}

/** A header's text against a body value: strings exactly, integers numerically (42.0 is 42), booleans as true/false. */
function sameValue(header: string, value: unknown): boolean {
  if (typeof value === 'string') return header === value;
  if (typeof value === 'boolean') return header === String(value);
  if (typeof value === 'number') return /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(header) && Number(header) === value;
  return false;
}
