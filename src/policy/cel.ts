// CEL for `when` conditions: one environment with the policy variables, expressions compiled
// (parsed and type-checked) once when a bundle loads.
//
// `matches` follows CEL's RE2 dialect where JavaScript differs: a leading inline flag group
// such as "(?i)", "(?s)", "(?m)" or "(?is)" becomes a RegExp flag, "(?P<name>" becomes
// "(?<name>", "\A" and "\z" anchor the whole input. Patterns are compiled with the "u" flag (code
// points, strict escapes). cel-js's built-in `matches` does none of this and builds a RegExp on
// every call, so expressions are rewritten to call our own `matches` under a same-length name
// (columns in error messages stay right). Literal patterns are compiled at load, so a bad regex
// rejects the bundle instead of denying at runtime.
import { Environment, type ASTNode, type ParseResult } from '@marcbachmann/cel-js';

const MATCHES = 'matches';
const OURS = 'pcl_re2'; // same length as "matches"

const cache = new Map<string, RegExp>();

/** Translates an RE2-style pattern into a JavaScript RegExp; throws a plain Error when invalid. */
export function compileRe2(pattern: string): RegExp {
  const hit = cache.get(pattern);
  if (hit) return hit;
  let source = pattern;
  let flags = 'u';
  const inline = /^\(\?([a-zA-Z]+)\)/.exec(source);
  if (inline) {
    for (const f of inline[1]) {
      if (f === 'i' || f === 'm' || f === 's') {
        if (!flags.includes(f)) flags += f;
      } else throw new Error(`unsupported inline flag "${f}" in (?${inline[1]}) (use i, m or s)`);
    }
    source = source.slice(inline[0].length);
  }
  // Only unescaped sequences: an even run of backslashes before them is literal backslashes.
  source = source
    .replace(/(?<!\\)((?:\\\\)*)\(\?P</g, '$1(?<')
    .replace(/(?<!\\)((?:\\\\)*)\\A/g, '$1(?<![^])')
    .replace(/(?<!\\)((?:\\\\)*)\\z/g, '$1(?![^])');
  let re: RegExp;
  try {
    re = new RegExp(source, flags);
  } catch (e) {
    throw new Error(`invalid regular expression "${pattern}": ${(e as Error).message.replace(/^Invalid regular expression: \/.*\/[a-z]*: /, '')}`);
  }
  if (cache.size > 10_000) cache.clear(); // patterns built at runtime must not grow memory without bound
  cache.set(pattern, re);
  return re;
}

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

/** Finds the calls to `matches` (receiver and global style) and their pattern arguments. */
function findMatchesCalls(ast: ASTNode, text: string): { nameAt: number[]; patterns: Node[] } {
  const nameAt: number[] = [];
  const patterns: Node[] = [];
  const walk = (n: unknown): void => {
    if (Array.isArray(n)) return n.forEach(walk);
    if (!isNode(n)) return;
    const a = n.args as unknown[];
    if (n.op === 'rcall' && a[0] === MATCHES && isNode(a[1])) {
      const at = text.indexOf(MATCHES, a[1].end);
      if (at >= 0) nameAt.push(at);
      if (Array.isArray(a[2]) && a[2].length === 1) patterns.push(a[2][0] as Node);
    } else if (n.op === 'call' && a[0] === MATCHES) {
      const at = text.indexOf(MATCHES, n.start);
      if (at >= 0) nameAt.push(at);
      if (Array.isArray(a[1]) && a[1].length === 2) patterns.push(a[1][1] as Node);
    }
    if (Array.isArray(n.args)) n.args.forEach(walk);
  };
  walk(ast);
  return { nameAt, patterns };
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
  const { nameAt, patterns } = findMatchesCalls(first.ast, source);
  let text = source;
  for (const at of nameAt.sort((a, b) => b - a)) text = text.slice(0, at) + OURS + text.slice(at + MATCHES.length);
  let parsed: ParseResult;
  try {
    parsed = text === source ? first : env.parse(text);
  } catch (e) {
    return { problems: [describe(e)] };
  }
  const problems: CelProblem[] = [];
  const checked = parsed.check();
  if (!checked.valid) problems.push(describe(checked.error));
  else if (checked.type !== 'bool' && checked.type !== 'dyn') problems.push({ message: `a when expression must be a bool, this one is a ${checked.type}` });
  for (const p of patterns) {
    if (p.op !== 'value' || typeof p.args !== 'string') continue;
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
