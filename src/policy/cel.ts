// CEL for `when` conditions: one environment with the policy variables, expressions compiled
// (parsed and type-checked) once when a bundle loads.
//
// `matches` is RE2, as CEL specifies, on the linear-time engine of re2.ts. cel-js's built-in
// `matches` builds a JavaScript RegExp (backtracking, another dialect) on every call, and it
// cannot be overridden (cel-js refuses an overlapping overload), so every `matches` call in the
// parsed expression (under any operator, inside macros and literals) is renamed in the source to
// our own function under a same-length name (columns in error messages stay right), and the
// result is checked to hold no call to the built-in one. The pattern must be a string literal,
// compiled at load: a bad one rejects the bundle instead of denying at runtime, and a pattern
// built at runtime (from arguments the agent chooses) could cost seconds to compile.
import { Environment, type ASTNode, type ParseResult } from '@marcbachmann/cel-js';
import { compileRe2 } from './re2.js';

const MATCHES = 'matches';
const OURS = 'pcl_re2'; // same length as "matches"

// Only literal patterns reach this (checked at load), so the cache holds policy, not requests.
function re2Matches(text: string, pattern: string): boolean {
  return compileRe2(pattern).test(text);
}

/** The variables a `when` expression sees. */
export const CEL_VARIABLES = {
  identity: 'map',
  server: 'string',
  method: 'string',
  tool: 'string',
  args: 'map',
  resource: 'string',
  prompt: 'string',
  time: 'google.protobuf.Timestamp',
} as const;

const env = new Environment({ homogeneousAggregateLiterals: false });
for (const [n, type] of Object.entries(CEL_VARIABLES)) env.registerVariable(n, type);
env.registerFunction(`string.${OURS}(string): bool`, re2Matches);
env.registerFunction(`${OURS}(string, string): bool`, re2Matches);

export interface CelContext {
  identity: { sub: string; groups: string[]; claims: Record<string, unknown>; via?: string };
  server: string;
  method: string;
  tool: string;
  args: Record<string, unknown>;
  resource: string;
  prompt: string;
  time: Date;
}

export interface CelProblem {
  message: string;
  /** 1-based column in the expression, when known. */
  column?: number;
}

export interface CompiledCel {
  source: string;
  evaluate(ctx: CelContext): boolean;
}

const renamed = (s: string) => s.split(OURS).join(MATCHES);

function describe(e: unknown): CelProblem {
  const err = e as { summary?: string; message?: string; range?: { start: number } };
  const message = renamed(err.summary ?? (err.message ?? String(e)).split('\n')[0]);
  return { message, column: err.range ? err.range.start + 1 : undefined };
}

/** A runtime failure of a `when`, as one line for a decision's reason. */
export function celErrorMessage(e: unknown): string {
  const p = describe(e);
  return p.column ? `${p.message} (column ${p.column})` : p.message;
}

type Node = { op: string; args: unknown; start: number; end: number };
const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null && typeof (v as Node).op === 'string' && 'args' in v;

/**
 * Visits every node of a parsed expression. A node's `args` is a node (`!x`, `-x`), a list (of
 * nodes, names and nested lists: calls, operators, list and map literals, macros) or a scalar;
 * everything that is an object is searched, so no operator or nesting can hide a call.
 */
function eachNode(root: unknown, visit: (n: Node) => void): void {
  const stack: unknown[] = [root];
  const seen = new Set<object>();
  while (stack.length) {
    const v = stack.pop();
    if (typeof v !== 'object' || v === null || seen.has(v)) continue;
    seen.add(v);
    if (Array.isArray(v)) {
      for (const child of v) stack.push(child);
    } else if (isNode(v)) {
      visit(v);
      stack.push(v.args);
    } else {
      for (const child of Object.values(v)) stack.push(child);
    }
  }
}

/** Skips whitespace and `//` comments from `i`; returns the next significant offset. */
function skipBlank(text: string, i: number): number {
  for (;;) {
    while (i < text.length && /\s/.test(text[i]!)) i++;
    if (text.startsWith('//', i)) {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl + 1;
    } else return i;
  }
}

/** Where the name `fn` of a call is in the source: after the receiver's `.` for `x.fn(…)`, at the start for `fn(…)`. */
function nameOffset(n: Node, fn: string, text: string): number {
  const a = n.args as unknown[];
  let at: number;
  if (n.op === 'rcall' && isNode(a[1])) {
    at = skipBlank(text, a[1].end);
    if (text[at] !== '.') return -1;
    at = skipBlank(text, at + 1);
  } else at = skipBlank(text, n.start);
  return text.startsWith(fn, at) ? at : -1;
}

/** The calls to `fn` (receiver and global style) and their pattern arguments. */
function findCalls(ast: ASTNode, fn: string): { calls: Node[]; patterns: Node[] } {
  const calls: Node[] = [];
  const patterns: Node[] = [];
  eachNode(ast, (n) => {
    const a = n.args as unknown[];
    if (n.op === 'rcall' && a[0] === fn) {
      calls.push(n);
      if (Array.isArray(a[2]) && a[2].length === 1) patterns.push(a[2][0] as Node);
    } else if (n.op === 'call' && a[0] === fn) {
      calls.push(n);
      if (Array.isArray(a[1]) && a[1].length === 2) patterns.push(a[1][1] as Node);
    }
  });
  return { calls, patterns };
}

const ORDERING = new Set(['<', '<=', '>', '>=']);
const JSON_NUMBER = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$/;

/** Whether a node reads from `args` (`args.x`, `args["x"].y`): a JSON value the type check sees as dyn. */
function readsArgs(n: unknown): n is Node {
  while (isNode(n) && (n.op === '.' || n.op === '[]')) n = (n.args as unknown[])[0];
  return isNode(n) && n.op === 'id' && n.args === 'args';
}

/** What a literal operand is, for the comparisons below; undefined when it is not a literal. */
function literalKind(n: Node): string | undefined {
  if (n.op === 'call') {
    const [fn] = n.args as unknown[];
    return fn === 'timestamp' || fn === 'duration' ? fn : undefined;
  }
  if (n.op !== 'value') return undefined;
  const v = n.args;
  if (v === null) return 'null';
  if (v instanceof Uint8Array) return 'bytes';
  return typeof v === 'bigint' || typeof v === 'number' ? 'number' : typeof v;
}

/**
 * Comparisons of an argument with a literal that are wrong whatever the caller sends. `args` is a
 * map of dyn (JSON values: null, bool, number, string, list, map), so the type check passes them
 * all; these fail at runtime (a deny) or never hold, which in a deny rule means it never denies.
 */
function argumentComparisons(ast: ASTNode, text: string): CelProblem[] {
  const problems: CelProblem[] = [];
  eachNode(ast, (n) => {
    if (n.op !== '==' && n.op !== '!=' && !ORDERING.has(n.op)) return;
    const [l, r] = n.args as [Node, Node];
    const arg = readsArgs(l) ? l : readsArgs(r) ? r : undefined;
    const lit = arg === l ? r : l;
    if (!arg || !isNode(lit)) return;
    const kind = literalKind(lit);
    if (!kind) return;
    const path = renamed(text.slice(arg.start, arg.end));
    const at = { column: lit.start + 1 };
    if (kind === 'bytes' || kind === 'timestamp' || kind === 'duration') {
      const always = n.op === '==' ? 'always false' : n.op === '!=' ? 'always true' : 'always an error at runtime (a deny)';
      problems.push({ message: `${path} is a JSON value, never a ${kind}, so comparing it with one (${n.op}) is ${always}`, ...at });
    } else if (ORDERING.has(n.op) && kind === 'string' && JSON_NUMBER.test(lit.args as string)) {
      const num = lit.args as string;
      problems.push({
        message: `${path} is compared (${n.op}) with the string "${num}": a number argument makes that an error at runtime (a deny), a string one compares character by character ("10" < "5"); compare with the number ${num}`,
        ...at,
      });
    }
  });
  return problems;
}

/**
 * Compiles a `when` expression. Returns the compiled expression or every problem found:
 * syntax errors, type errors (unknown variables, wrong operand types, a result that is not a
 * bool) and literal regular expressions that would not compile.
 */
export function compileCel(source: string): { compiled?: CompiledCel; problems: CelProblem[] } {
  // Compiled expressions hold no state, so one per source text serves every bundle (and the
  // schema's check and the compiler share the work).
  const hit = compiledCache.get(source);
  if (hit) return hit;
  const result = compileUncached(source);
  if (compiledCache.size > 10_000) compiledCache.clear();
  compiledCache.set(source, result);
  return result;
}

const compiledCache = new Map<string, { compiled?: CompiledCel; problems: CelProblem[] }>();

function compileUncached(source: string): { compiled?: CompiledCel; problems: CelProblem[] } {
  let first: ParseResult;
  try {
    first = env.parse(source);
  } catch (e) {
    return { problems: [describe(e)] };
  }
  const { calls, patterns } = findCalls(first.ast, MATCHES);
  const nameAt = calls.map((n) => nameOffset(n, MATCHES, source));
  let text = source;
  for (const at of nameAt.filter((at) => at >= 0).sort((a, b) => b - a)) text = text.slice(0, at) + OURS + text.slice(at + MATCHES.length);
  let parsed: ParseResult;
  try {
    parsed = text === source ? first : env.parse(text);
  } catch (e) {
    return { problems: [describe(e)] };
  }
  const problems: CelProblem[] = [];
  // Our function is reachable only through `matches`, where its pattern is checked.
  for (const n of findCalls(first.ast, OURS).calls) problems.push({ message: `unknown function ${OURS}`, column: n.start + 1 });
  // Every `matches` must now call ours: cel-js's own would take the RE2 pattern as a JavaScript
  // one. Should one be left (a spelling the rewrite does not know), the bundle is refused at load
  // rather than failing (and denying) at runtime.
  for (const n of findCalls(parsed.ast, MATCHES).calls) problems.push({ message: 'this call to matches could not be prepared; write it as x.matches("…") or matches(x, "…")', column: n.start + 1 });
  const checked = parsed.check();
  if (!checked.valid) problems.push(describe(checked.error));
  else if (checked.type !== 'bool' && checked.type !== 'dyn') problems.push({ message: `a when expression must be a bool, this one is a ${checked.type}` });
  if (checked.valid) problems.push(...argumentComparisons(parsed.ast, text));
  for (const p of patterns) {
    if (p.op !== 'value') {
      problems.push({ message: 'invalid regular expression: the pattern of matches must be a string literal, so that it is checked at load and no caller can choose it', column: p.start + 1 });
      continue;
    }
    if (typeof p.args !== 'string') continue; // the type check has said so
    try {
      compileRe2(p.args);
    } catch (e) {
      problems.push({ message: (e as Error).message, column: p.start + 1 });
    }
  }
  if (problems.length) return { problems };
  return {
    problems,
    compiled: {
      source,
      evaluate(ctx) {
        const v = parsed(ctx as unknown as Record<string, unknown>);
        if (typeof v !== 'boolean') throw new Error(`when must evaluate to a bool, got ${v === null ? 'null' : typeof v}`);
        return v;
      },
    },
  };
}
