// MCP 2026-07-28 request headers (SEP-2243): MCP-Protocol-Version, Mcp-Method, Mcp-Name and
// Mcp-Param-{Name} mirror fields of the body so that load balancers can route without parsing
// it. Whatever trusts a header must see the body say the same thing, so the gateway checks every
// header it recognises against the body it decides on (400 with -32020 HeaderMismatch) and never
// decides on a header. A header sent twice is refused too: Node joins repeated values with ", ",
// and "a" + "a" must not pass as a body value "a, a" while a router reads the first "a".
import type { IncomingMessage } from 'node:http';
import { decodeHeaderValue, paramHeaderFields } from '../protocol/mcp-headers.js';

export { HEADER_MISMATCH } from '../protocol/mcp-headers.js';

/** Which body field Mcp-Name mirrors, per method (2026-07-28 Standard Request Headers; tasks/* per SEP-2663). */
const NAME_SOURCE: Record<string, 'name' | 'uri' | 'taskId'> = {
  'tools/call': 'name',
  'prompts/get': 'name',
  'resources/read': 'uri',
  'tasks/get': 'taskId',
  'tasks/update': 'taskId',
  'tasks/cancel': 'taskId',
};

/**
 * A header that disagrees with the body, worded as the MCP SDK words it (so a client sees the
 * same answer from the gateway as from a server): `data.mismatch` names the header (or its value,
 * or "(missing)") and what the body says.
 */
export class HeaderMismatch extends Error {
  constructor(
    readonly header: string,
    readonly body: string,
  ) {
    super(`Bad Request: the request headers and body disagree: ${body}`);
  }
  get data(): unknown {
    return { mismatch: { header: this.header, body: this.body } };
  }
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A tool's `x-mcp-header` annotations: header name (lower case) → the name as annotated and the `properties` path it mirrors. */
export type ParamHeaders = Map<string, { name: string; path: string[] }>;

/** The annotations of a tool's inputSchema (src/protocol/mcp-headers.ts); undefined when any is invalid, which makes the tool definition invalid. */
export function paramHeadersOf(inputSchema: unknown): ParamHeaders | undefined {
  const found = paramHeaderFields(inputSchema);
  if ('problem' in found) return undefined;
  return new Map(found.fields.map((f) => [f.name.toLowerCase(), { name: f.name, path: [...f.path] }]));
}

/** One header's value, refusing a header sent more than once. */
export function singleHeader(req: IncomingMessage, name: string): string | undefined {
  const values = req.headersDistinct[name];
  if (!values) return undefined;
  if (values.length > 1) throw new HeaderMismatch(name, `the ${name} header is sent ${values.length} times: send it once`);
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
  if (pv === undefined) throw new HeaderMismatch('(missing)', `the body envelope names protocol version ${version} but the required MCP-Protocol-Version header is absent`);
  if (pv !== version) throw new HeaderMismatch(pv, `the body envelope names protocol version ${version} but the MCP-Protocol-Version header names ${pv}`);
  const mm = singleHeader(req, 'mcp-method');
  if (mm === undefined) throw new HeaderMismatch('(missing)', `the body names method ${method} but the required Mcp-Method header is absent`);
  if (mm !== method) throw new HeaderMismatch(mm, `the body names method ${method} but the Mcp-Method header names ${mm}`);
  const source = Object.hasOwn(NAME_SOURCE, method) ? NAME_SOURCE[method] : undefined;
  const name = singleHeader(req, 'mcp-name');
  if (source) {
    const bodyValue = params[source];
    if (name === undefined) {
      if (typeof bodyValue === 'string') throw new HeaderMismatch('(missing)', `the body carries params.${source}=${JSON.stringify(bodyValue)} but the required Mcp-Name header is absent`);
    } else {
      const decoded = decodeHeaderValue(name);
      if (decoded === undefined) throw new HeaderMismatch(name, 'the Mcp-Name header carries an invalid Base64 sentinel value or characters a header may not carry unencoded');
      if (decoded !== bodyValue) throw new HeaderMismatch(name, `the body carries params.${source}=${JSON.stringify(bodyValue)} but the Mcp-Name header names ${JSON.stringify(decoded)}`);
    }
  } else if (name !== undefined && decodeHeaderValue(name) === undefined) {
    throw new HeaderMismatch(name, 'the Mcp-Name header carries an invalid Base64 sentinel value or characters a header may not carry unencoded');
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
  for (const [key, { name, path }] of annotated) {
    const header = `Mcp-Param-${name}`;
    const sent = singleHeader(req, `mcp-param-${key}`);
    let value: unknown = args;
    for (const step of path) value = isObj(value) && Object.hasOwn(value, step) ? value[step] : undefined;
    const absent = value === undefined || value === null;
    const field = path.join('.');
    if (sent === undefined) {
      if (absent) continue;
      throw new HeaderMismatch(header, `the body carries ${field}=${JSON.stringify(value)} but the ${header} header is absent`);
    }
    const decoded = decodeHeaderValue(sent);
    if (decoded === undefined) throw new HeaderMismatch(header, `the ${header} header carries an invalid Base64 sentinel value`);
    // Stricter than "ignore": a header a router may act on, for an argument the body does not carry.
    if (absent) throw new HeaderMismatch(header, `the ${header} header decodes to ${JSON.stringify(decoded)} but the body carries no ${field}`);
    if (!sameValue(decoded, value)) throw new HeaderMismatch(header, `the ${header} header decodes to ${JSON.stringify(decoded)} but the body carries ${field}=${JSON.stringify(value)}`);
  }
}

/** A header's text against a body value: strings exactly, integers numerically (42.0 is 42), booleans as true/false. */
function sameValue(header: string, value: unknown): boolean {
  if (typeof value === 'string') return header === value;
  if (typeof value === 'boolean') return header === String(value);
  if (typeof value === 'number') return /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(header) && Number(header) === value;
  return false;
}

/**
 * The Mcp-Param headers of a tools/call that no annotation of the tool defines: not the gateway's
 * to judge, the upstream's to see (it may know annotations the gateway has not read yet).
 */
export function unknownParamHeaders(req: IncomingMessage, body: Obj, paramHeaders: (tool: string) => ParamHeaders | undefined): Record<string, string> {
  const params = isObj(body.params) ? body.params : {};
  const known = typeof params.name === 'string' ? paramHeaders(params.name) : undefined;
  const out: Record<string, string> = {};
  for (const name of Object.keys(req.headersDistinct)) {
    if (!name.startsWith('mcp-param-') || known?.has(name.slice('mcp-param-'.length))) continue;
    const value = singleHeader(req, name);
    if (value !== undefined) out[name] = value;
  }
  return out;
}
