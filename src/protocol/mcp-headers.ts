// The request metadata headers of Streamable HTTP 2026-07-28 (SEP-2243): what a client mirrors
// from a request's body into headers (MCP-Protocol-Version, Mcp-Method, Mcp-Name and a tool's
// Mcp-Param-{Name}), and how whoever reads them checks them against the body. One module for
// both sides, so the upstream connector that writes them and the gateway's front that checks
// them cannot disagree on an encoding.

/** Where a modern request carries its protocol version. */
export const PROTOCOL_VERSION_META = 'io.modelcontextprotocol/protocolVersion';
/** The errors a modern server answers with (basic/index, Error Codes). */
export const HEADER_MISMATCH = -32020;
export const MISSING_REQUIRED_CLIENT_CAPABILITY = -32021;
export const UNSUPPORTED_PROTOCOL_VERSION = -32022;

/** Methods whose Mcp-Name header is required, and the params field it mirrors. */
const NAME_FIELD: Record<string, 'name' | 'uri'> = { 'tools/call': 'name', 'prompts/get': 'name', 'resources/read': 'uri' };

const START = '=?base64?';
const END = '?=';
/** An RFC 9110 field value restricted to ASCII: visible characters, with spaces and tabs only inside. */
const FIELD_VALUE = /^(?:[\x21-\x7e](?:[\x20\x09\x21-\x7e]*[\x21-\x7e])?)?$/;
/** RFC 9110 token (1*tchar): what an x-mcp-header name must be. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A decimal integer as a header may spell it ("42", "-7", "42.0"): never hex, exponents or spaces. */
const DECIMAL_INTEGER = /^-?\d+(?:\.0+)?$/;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export class McpHeaderError extends Error {
  override name = 'McpHeaderError';
}

const looksEncoded = (value: string) => value.startsWith(START) && value.endsWith(END);

/**
 * A string as a header value: as it is when it is non-empty plain ASCII that a header carries
 * unchanged (visible characters, inner spaces and tabs) and does not look like the sentinel;
 * otherwise `=?base64?<UTF-8 in base64>?=`. The result never holds CR, LF, NUL or non-ASCII.
 * An empty value is encoded too: some intermediaries drop empty headers.
 */
export function encodeHeaderValue(value: string): string {
  if (value !== '' && FIELD_VALUE.test(value) && !looksEncoded(value)) return value;
  if (!(value as string & { isWellFormed(): boolean }).isWellFormed()) throw new McpHeaderError('a value with a lone surrogate has no UTF-8 form to put in a header');
  return `${START}${Buffer.from(value, 'utf8').toString('base64')}${END}`;
}

/**
 * What a header value stands for, or undefined when it is not a valid one: a character outside
 * ASCII field values, a sentinel whose payload is not canonical base64 of valid UTF-8, or a plain
 * value that looks like the sentinel (a client must have encoded it).
 */
export function decodeHeaderValue(value: string): string | undefined {
  if (!FIELD_VALUE.test(value)) return undefined;
  if (!looksEncoded(value)) return value;
  if (value.length < START.length + END.length) return undefined;
  const payload = value.slice(START.length, value.length - END.length);
  const bytes = Buffer.from(payload, 'base64');
  // Canonical only: no whitespace, no missing padding, no stray bits, no URL-safe alphabet.
  if (bytes.toString('base64') !== payload) return undefined;
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

export type ParamType = 'string' | 'integer' | 'boolean';

/** One `x-mcp-header` annotation: the argument at `path` travels in `Mcp-Param-{name}`. */
export interface ParamHeaderField {
  path: readonly string[];
  name: string;
  type: ParamType;
}

/** Keywords whose value is one subschema, a list of them, or a map of names to them; an annotation below any of them is not statically reachable. */
const SUBSCHEMA = ['items', 'additionalItems', 'additionalProperties', 'unevaluatedProperties', 'unevaluatedItems', 'propertyNames', 'contains', 'not', 'if', 'then', 'else'];
const SUBSCHEMA_LISTS = ['allOf', 'anyOf', 'oneOf', 'prefixItems', 'items'];
const SUBSCHEMA_MAPS = ['patternProperties', '$defs', 'definitions', 'dependentSchemas', 'dependencies'];

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The `x-mcp-header` annotations of a tool's inputSchema, or why the tool definition is invalid
 * (spec: such a tool is left out of tools/list). Valid annotations sit on string, integer or
 * boolean properties (`["string", "null"]` too; `number` is not allowed) reached from the root
 * through `properties` alone, with token names unique regardless of case.
 */
export function paramHeaderFields(inputSchema: unknown): { fields: ParamHeaderField[] } | { problem: string } {
  const fields: ParamHeaderField[] = [];
  const names = new Map<string, string>();
  const where = (path: readonly string[]) => (path.length ? path.join('.') : 'the schema root');
  // Iterative: a hostile schema must not exhaust the stack.
  const stack: Array<{ node: unknown; path: readonly string[]; reachable: boolean }> = [{ node: inputSchema, path: [], reachable: true }];
  while (stack.length) {
    const { node, path, reachable } = stack.pop()!;
    if (!isObj(node)) continue;
    if ('x-mcp-header' in node) {
      const name = node['x-mcp-header'];
      if (!reachable || path.length === 0) return { problem: `x-mcp-header on ${where(path)}: only properties reached through "properties" alone may carry one` };
      if (typeof name !== 'string' || !TOKEN.test(name)) return { problem: `x-mcp-header on ${where(path)}: ${JSON.stringify(name)} is not an HTTP token` };
      const type = primitiveType(node.type);
      if (!type) return { problem: `x-mcp-header on ${where(path)}: the property must be a string, an integer or a boolean, not ${JSON.stringify(node.type ?? 'untyped')}` };
      const seen = names.get(name.toLowerCase());
      if (seen !== undefined) return { problem: `x-mcp-header "${name}" on ${where(path)}: already used by ${seen} (names are compared without case)` };
      names.set(name.toLowerCase(), where(path));
      fields.push({ path, name, type });
    }
    if (isObj(node.properties)) for (const [key, sub] of Object.entries(node.properties)) stack.push({ node: sub, path: [...path, key], reachable });
    const below = (sub: unknown, keyword: string) => stack.push({ node: sub, path: [...path, keyword], reachable: false });
    for (const k of SUBSCHEMA) if (isObj(node[k])) below(node[k], k);
    for (const k of SUBSCHEMA_LISTS) if (Array.isArray(node[k])) for (const sub of node[k] as unknown[]) below(sub, k);
    for (const k of SUBSCHEMA_MAPS) if (isObj(node[k])) for (const sub of Object.values(node[k])) below(sub, k);
  }
  return { fields };
}

function primitiveType(type: unknown): ParamType | undefined {
  const types = Array.isArray(type) ? type.filter((t) => t !== 'null') : [type];
  return types.length === 1 && (types[0] === 'string' || types[0] === 'integer' || types[0] === 'boolean') ? types[0] : undefined;
}

const fieldsCache = new WeakMap<object, { fields: ParamHeaderField[] } | { problem: string }>();

/** paramHeaderFields, computed once per schema object (a tool definition is reused call after call). */
function cachedFields(inputSchema: unknown): { fields: ParamHeaderField[] } | { problem: string } {
  if (!isObj(inputSchema)) return paramHeaderFields(inputSchema);
  let found = fieldsCache.get(inputSchema);
  if (!found) fieldsCache.set(inputSchema, (found = paramHeaderFields(inputSchema)));
  return found;
}

/** Why a tool definition's x-mcp-header annotations are invalid, or undefined when they are valid (or absent). */
export function headerProblem(inputSchema: unknown): string | undefined {
  const found = cachedFields(inputSchema);
  return 'problem' in found ? found.problem : undefined;
}

function valueAt(args: unknown, path: readonly string[]): unknown {
  let v = args;
  for (const key of path) {
    if (!isObj(v) || !Object.hasOwn(v, key)) return undefined;
    v = v[key];
  }
  return v;
}

/** The text an argument travels as (strings as they are, numbers in decimal, booleans in lowercase); undefined when it does not travel (absent, null, an object). */
function argumentText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return undefined;
}

/** A tool definition as tools/list gives it; only its inputSchema matters here. */
export interface ToolDefinition {
  name?: string;
  inputSchema?: unknown;
}

/**
 * The Mcp-Param-{Name} headers of one tools/call: each annotated argument present in `args`,
 * encoded. Throws McpHeaderError when the tool's annotations are invalid (such a tool must not be
 * called over HTTP at all).
 */
export function paramHeaders(tool: ToolDefinition, args: unknown): Record<string, string> {
  const found = cachedFields(tool.inputSchema);
  if ('problem' in found) throw new McpHeaderError(`tool ${JSON.stringify(tool.name ?? '?')} is invalid: ${found.problem}`);
  const headers: Record<string, string> = {};
  for (const f of found.fields) {
    const text = argumentText(valueAt(args, f.path));
    if (text !== undefined) headers[`mcp-param-${f.name.toLowerCase()}`] = encodeHeaderValue(text);
  }
  return headers;
}

type Message = { method?: unknown; params?: unknown };

/**
 * Every header a modern (2026-07-28) request carries, regenerated from its body: MCP-Protocol-Version
 * from `_meta`, Mcp-Method, Mcp-Name where required, and, for tools/call with the tool's
 * definition, its Mcp-Param-* headers. Names are lowercase. Throws McpHeaderError when the body
 * cannot be mirrored (no protocol version in `_meta`, a method or version that is not a plain
 * header value, a missing name, an invalid tool definition).
 */
export function modernRequestHeaders(message: Message, tool?: ToolDefinition): Record<string, string> {
  const params = isObj(message.params) ? message.params : {};
  const meta = isObj(params._meta) ? params._meta : {};
  const version = meta[PROTOCOL_VERSION_META];
  if (typeof version !== 'string' || version === '' || !FIELD_VALUE.test(version)) throw new McpHeaderError(`a modern request needs params._meta["${PROTOCOL_VERSION_META}"] as a plain header value`);
  const method = message.method;
  if (typeof method !== 'string' || method === '' || !FIELD_VALUE.test(method)) throw new McpHeaderError('a modern request needs a method that is a plain header value');
  const headers: Record<string, string> = { 'mcp-protocol-version': version, 'mcp-method': method };
  const field = NAME_FIELD[method];
  if (field) {
    const name = params[field];
    if (typeof name !== 'string') throw new McpHeaderError(`${method} needs params.${field} as a string`);
    headers['mcp-name'] = encodeHeaderValue(name);
  }
  if (method === 'tools/call' && tool) Object.assign(headers, paramHeaders(tool, params.arguments));
  return headers;
}

/**
 * Why a modern request's headers do not match its body (answer 400 with HEADER_MISMATCH), or
 * undefined when they do. `header(name)` returns a request header by lowercase name. Checks the
 * standard headers, and with the tool's definition every annotated argument: a header must be
 * present when the body has the value, decode, and be equal (integers compared as numbers, so
 * "42.0" matches 42). A header with invalid characters or encoding never matches.
 */
export function headerMismatch(header: (lowercaseName: string) => string | undefined, message: Message, tool?: ToolDefinition): string | undefined {
  const params = isObj(message.params) ? message.params : {};
  const meta = isObj(params._meta) ? params._meta : {};
  const version = header('mcp-protocol-version');
  if (version === undefined) return 'the MCP-Protocol-Version header is missing';
  if (version !== meta[PROTOCOL_VERSION_META]) return `the MCP-Protocol-Version header does not match params._meta["${PROTOCOL_VERSION_META}"]`;
  const method = header('mcp-method');
  if (method === undefined) return 'the Mcp-Method header is missing';
  if (method !== message.method) return 'the Mcp-Method header does not match the method';
  const field = typeof message.method === 'string' ? NAME_FIELD[message.method] : undefined;
  if (field) {
    const name = header('mcp-name');
    if (name === undefined) return 'the Mcp-Name header is missing';
    const decoded = decodeHeaderValue(name);
    if (decoded === undefined) return 'the Mcp-Name header has invalid characters or encoding';
    if (decoded !== params[field]) return `the Mcp-Name header does not match params.${field}`;
  }
  if (message.method !== 'tools/call' || !tool) return undefined;
  const found = cachedFields(tool.inputSchema);
  if ('problem' in found) return `the tool's definition is invalid: ${found.problem}`;
  for (const f of found.fields) {
    const body = valueAt(params.arguments, f.path);
    const text = argumentText(body);
    if (text === undefined) continue; // absent or null: no header is expected (one sent anyway is ignored)
    const name = `Mcp-Param-${f.name}`;
    const raw = header(`mcp-param-${f.name.toLowerCase()}`);
    if (raw === undefined) return `the ${name} header is missing`;
    const decoded = decodeHeaderValue(raw);
    if (decoded === undefined) return `the ${name} header has invalid characters or encoding`;
    const equal = f.type === 'integer' && typeof body === 'number' ? DECIMAL_INTEGER.test(decoded) && Number(decoded) === body : decoded === text;
    if (!equal) return `the ${name} header does not match the argument ${f.path.join('.')}`;
  }
  return undefined;
}
