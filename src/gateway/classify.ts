// Classifies one parsed JSON-RPC message: its kind, and for client requests what policy must
// decide on (tool, arguments, resource, prompt). A message whose shape does not fit its method
// is refused here, so later stages only ever see well-formed messages, and what they decide on
// is the very object that is forwarded (nothing is normalised or copied in between).
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import { templateProblem, uriProblem } from '../policy/uri.js';

export const INVALID_REQUEST = -32600;
export const METHOD_NOT_FOUND = -32601;
export const INVALID_PARAMS = -32602;
export const INTERNAL_ERROR = -32603;
export const PARSE_ERROR = -32700;
export const FORBIDDEN_BY_POLICY = -32003;
/** Upstream failures: exited, unreachable, timed out, oversized answer. */
export const UPSTREAM_ERROR = -32010;

type Obj = Record<string, unknown>;

/**
 * What policy governs about a request; `housekeeping` is protocol plumbing that is always allowed.
 * `serverRequest` is a request the upstream sends to the client (sampling, elicitation, roots…).
 */
export type Action =
  | { kind: 'housekeeping' }
  | { kind: 'serverRequest' }
  | { kind: 'list'; list: 'tools' | 'resources' | 'resourceTemplates' | 'prompts' }
  | { kind: 'tool'; tool: string; args: Obj }
  | { kind: 'resource'; resource: string }
  | { kind: 'prompt'; prompt: string; args: Obj }
  | { kind: 'completion'; prompt?: string; resource?: string; args: Obj; argument: string; context: Record<string, string> }
  /** 2026-07-28 subscriptions/listen: change notifications, and updates of these resources. */
  | { kind: 'subscription'; resources: string[] }
  | { kind: 'other' };

export type Classified =
  | { type: 'request'; id: RequestId; method: string; params: Obj | undefined; action: Action; message: JSONRPCMessage }
  | { type: 'notification'; method: string; params: Obj | undefined; message: JSONRPCMessage }
  | { type: 'response'; id: RequestId; message: JSONRPCMessage };

export class ShapeError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly id: RequestId | null,
  ) {
    super(message);
  }
}

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

const LISTS: Record<string, Extract<Action, { kind: 'list' }>['list']> = {
  'tools/list': 'tools',
  'resources/list': 'resources',
  'resources/templates/list': 'resourceTemplates',
  'prompts/list': 'prompts',
};

/**
 * Requests a client may send that carry nothing for policy to decide on. tasks/* are not among
 * them: a task's result is the answer to a call that policy decided, so reading it is decided too.
 */
const CLIENT_HOUSEKEEPING = new Set(['initialize', 'ping', 'logging/setLevel']);

/** Validates the JSON-RPC envelope. `fromClient` selects which request methods are expected. */
export function classify(raw: unknown, fromClient: boolean): Classified {
  if (Array.isArray(raw)) throw new ShapeError(INVALID_REQUEST, 'JSON-RPC batches are not accepted: send one message per request', null);
  if (!isObj(raw)) throw new ShapeError(INVALID_REQUEST, 'a JSON-RPC message must be an object', null);
  const message = raw as JSONRPCMessage;
  const hasId = 'id' in raw;
  const id = raw.id;
  if (hasId && !(typeof id === 'string' || (typeof id === 'number' && Number.isSafeInteger(id)))) {
    throw new ShapeError(INVALID_REQUEST, 'id must be a string or an integer', null);
  }
  if (raw.jsonrpc !== '2.0') throw new ShapeError(INVALID_REQUEST, 'jsonrpc must be "2.0"', hasId ? (id as RequestId) : null);

  if (!('method' in raw)) {
    if (!hasId) throw new ShapeError(INVALID_REQUEST, 'a message needs a method or an id', null);
    const hasResult = 'result' in raw;
    const hasError = 'error' in raw;
    if (hasResult === hasError) throw new ShapeError(INVALID_REQUEST, 'a response carries exactly one of result and error', id as RequestId);
    if (hasResult && !isObj(raw.result)) throw new ShapeError(INVALID_REQUEST, 'result must be an object', id as RequestId);
    if (hasError && !(isObj(raw.error) && Number.isSafeInteger(raw.error.code) && typeof raw.error.message === 'string')) {
      throw new ShapeError(INVALID_REQUEST, 'error must be an object with an integer code and a string message', id as RequestId);
    }
    const problem = extraMember(raw, RESPONSE_MEMBERS) ?? (hasResult ? metaProblem('result', raw.result as Obj) : undefined);
    if (problem) throw new ShapeError(INVALID_REQUEST, problem, id as RequestId);
    return { type: 'response', id: id as RequestId, message };
  }

  const method = raw.method;
  if (typeof method !== 'string') throw new ShapeError(INVALID_REQUEST, 'method must be a string', hasId ? (id as RequestId) : null);
  const params = raw.params;
  if (params !== undefined && !isObj(params)) throw new ShapeError(INVALID_PARAMS, 'params must be an object', hasId ? (id as RequestId) : null);
  if ('result' in raw || 'error' in raw) throw new ShapeError(INVALID_REQUEST, 'a request carries no result or error', hasId ? (id as RequestId) : null);
  const problem = extraMember(raw, REQUEST_MEMBERS) ?? (params && metaProblem('params', params));
  if (problem) throw new ShapeError(INVALID_REQUEST, problem, hasId ? (id as RequestId) : null);

  const isNotificationMethod = method.startsWith('notifications/');
  if (!hasId) {
    if (!isNotificationMethod) throw new ShapeError(INVALID_REQUEST, `${method} is a request: it needs an id`, null);
    return { type: 'notification', method, params, message };
  }
  if (isNotificationMethod) throw new ShapeError(INVALID_REQUEST, `${method} is a notification: it must not carry an id`, id as RequestId);
  const action: Action = fromClient ? clientAction(method, params, id as RequestId) : { kind: method === 'ping' ? 'housekeeping' : 'serverRequest' };
  return { type: 'request', id: id as RequestId, method, params, action, message };
}

/**
 * The envelope is closed and `_meta` has a shape: receivers validate both (the SDKs' schemas are
 * strict), so a message the gateway passed must not be one the upstream drops unanswered.
 */
const REQUEST_MEMBERS = new Set(['jsonrpc', 'id', 'method', 'params']);
const RESPONSE_MEMBERS = new Set(['jsonrpc', 'id', 'result', 'error']);
const RELATED_TASK = 'io.modelcontextprotocol/related-task';

function extraMember(raw: Obj, allowed: Set<string>): string | undefined {
  for (const key in raw) if (!allowed.has(key)) return `unexpected member ${JSON.stringify(key.slice(0, 64))}: a JSON-RPC message has only ${[...allowed].join(', ')}`;
  return undefined;
}

function metaProblem(where: string, holder: Obj): string | undefined {
  const meta = holder._meta;
  if (meta === undefined) return undefined;
  if (!isObj(meta)) return `${where}._meta must be an object`;
  const token = meta.progressToken;
  if (token !== undefined && typeof token !== 'string' && !(typeof token === 'number' && Number.isSafeInteger(token))) return `${where}._meta.progressToken must be a string or an integer`;
  const task = meta[RELATED_TASK];
  if (task !== undefined && !(isObj(task) && typeof task.taskId === 'string')) return `${where}._meta["${RELATED_TASK}"] must be an object with a string taskId`;
  return undefined;
}

function clientAction(method: string, params: Obj | undefined, id: RequestId): Action {
  const bad = (what: string): never => {
    throw new ShapeError(INVALID_PARAMS, `${method}: ${what}`, id);
  };
  const p = params ?? {};
  // One resource, one spelling: a URI that servers would read differently is refused, not rewritten.
  const canonical = (uri: string, where: string, problem: (uri: string) => string | undefined): string => {
    const why = problem(uri);
    return why ? bad(`${where} is not a canonical URI: ${why}`) : uri;
  };
  const objectArgs = (v: unknown, what: string): Obj => {
    if (v === undefined) return {};
    if (!isObj(v)) return bad(`${what} must be an object`);
    const problem = unrepresentable(v);
    if (problem) bad(`${what} holds ${problem}`);
    return v;
  };
  switch (method) {
    case 'tools/call':
      if (typeof p.name !== 'string') bad('params.name must be a string');
      return { kind: 'tool', tool: p.name as string, args: objectArgs(p.arguments, 'params.arguments') };
    case 'resources/read':
    case 'resources/subscribe':
    case 'resources/unsubscribe':
      if (typeof p.uri !== 'string') bad('params.uri must be a string');
      return { kind: 'resource', resource: canonical(p.uri as string, 'params.uri', uriProblem) };
    case 'prompts/get': {
      if (typeof p.name !== 'string') bad('params.name must be a string');
      const args = objectArgs(p.arguments, 'params.arguments');
      for (const v of Object.values(args)) if (typeof v !== 'string') bad('prompt arguments must be strings');
      return { kind: 'prompt', prompt: p.name as string, args };
    }
    case 'completion/complete': {
      const ref = p.ref;
      const arg = p.argument;
      if (!isObj(ref)) return bad('params.ref must be an object');
      if (!isObj(arg) || typeof arg.name !== 'string' || typeof arg.value !== 'string') bad('params.argument needs a string name and value');
      const argument = (arg as Obj).name as string;
      const args = { [argument]: (arg as Obj).value };
      // The other arguments the client has filled in, which steer the upstream's completer.
      const context = p.context === undefined ? {} : isObj(p.context) ? objectArgs(p.context.arguments, 'params.context.arguments') : bad('params.context must be an object');
      for (const v of Object.values(context)) if (typeof v !== 'string') bad('params.context.arguments must hold strings');
      const base = { args, argument, context: context as Record<string, string> };
      if (ref.type === 'ref/prompt' && typeof ref.name === 'string') return { kind: 'completion', prompt: ref.name, ...base };
      if (ref.type === 'ref/resource' && typeof ref.uri === 'string') return { kind: 'completion', resource: canonical(ref.uri, 'params.ref.uri', templateProblem), ...base };
      return bad('params.ref must be {type: "ref/prompt", name} or {type: "ref/resource", uri}');
    }
    case 'initialize':
      if (typeof p.protocolVersion !== 'string' || !isObj(p.capabilities) || !isObj(p.clientInfo)) {
        bad('needs protocolVersion (string), capabilities and clientInfo (objects)');
      }
      return { kind: 'housekeeping' };
    case 'logging/setLevel':
      if (typeof p.level !== 'string') bad('params.level must be a string');
      return { kind: 'housekeeping' };
    case 'subscriptions/listen': {
      const filter = p.notifications === undefined ? {} : isObj(p.notifications) ? p.notifications : bad('params.notifications must be an object');
      const uris = filter.resourceSubscriptions ?? [];
      if (!Array.isArray(uris) || !uris.every((u): u is string => typeof u === 'string')) return bad('params.notifications.resourceSubscriptions must be an array of URIs');
      return { kind: 'subscription', resources: uris.map((u) => canonical(u, 'a resourceSubscriptions URI', uriProblem)) };
    }
    case 'tasks/get':
    case 'tasks/result':
    case 'tasks/cancel':
      if (typeof p.taskId !== 'string') bad('params.taskId must be a string');
      return { kind: 'other' };
    case 'tasks/list':
      if (p.cursor !== undefined && typeof p.cursor !== 'string') bad('params.cursor must be a string');
      return { kind: 'other' };
  }
  const list = LISTS[method];
  if (list) {
    if (p.cursor !== undefined && typeof p.cursor !== 'string') bad('params.cursor must be a string');
    return { kind: 'list', list };
  }
  if (CLIENT_HOUSEKEEPING.has(method)) return { kind: 'housekeeping' };
  return { kind: 'other' };
}

/**
 * What JSON cannot carry out unchanged: a number that parsed to Infinity (1e400) would be sent on
 * as null, a lone surrogate cannot be hashed canonically. Policy must not decide on a value the
 * upstream would never receive, so such arguments are refused.
 */
export function unrepresentable(value: unknown): string | undefined {
  const stack: unknown[] = [value];
  while (stack.length) {
    const v = stack.pop();
    if (typeof v === 'number' && !Number.isFinite(v)) return 'a number out of range';
    if (typeof v === 'string' && !(v as string & { isWellFormed(): boolean }).isWellFormed()) return 'a string with a lone surrogate';
    if (typeof v === 'object' && v !== null) {
      for (const [k, child] of Object.entries(v)) {
        if (!(k as string & { isWellFormed(): boolean }).isWellFormed()) return 'a key with a lone surrogate';
        stack.push(child);
      }
    }
  }
  return undefined;
}

/** The depth of nested objects and arrays, without recursion (a hostile body must not blow the stack). */
export function depthExceeds(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (d > max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (typeof child === 'object' && child !== null) stack.push([child, d + 1]);
    }
  }
  return false;
}

export function errorResponse(id: RequestId | null, code: number, message: string, data?: unknown): JSONRPCMessage {
  return { jsonrpc: '2.0', id, error: data === undefined ? { code, message } : { code, message, data } } as unknown as JSONRPCMessage;
}
