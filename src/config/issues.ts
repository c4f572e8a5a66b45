// Schema errors as sentences a user understands: which field, what was expected, what was found,
// and for a misspelt key the nearest valid one. Custom messages (CEL, patterns) pass unchanged.
import type { z } from 'zod';

type Issue = z.core.$ZodIssue;

/** The sentence for one issue; `keysAt` lists the valid keys of the object at a path (for suggestions). */
export function describeIssue(issue: Issue, value: unknown, keysAt: (path: PropertyKey[]) => string[]): string {
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys
        .map((k) => {
          const near = nearest(k, keysAt(issue.path));
          return `unknown field "${k}"${near ? ` (did you mean "${near}"?)` : ''}`;
        })
        .join('; ');
    case 'invalid_type': {
      const found = valueAt(value, issue.path);
      if (found === undefined) return `is required (${article(issue.expected)})`;
      return `must be ${article(issue.expected)}, not ${describe(found)}`;
    }
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, not ${describe(valueAt(value, issue.path))}`;
    case 'too_small':
      if (issue.origin === 'string' && Number(issue.minimum) === 1) return 'must not be empty';
      if (issue.origin === 'array') return `must have at least ${issue.minimum} item${Number(issue.minimum) === 1 ? '' : 's'}`;
      return `must be at least ${issue.minimum}`;
    case 'too_big':
      return `must be at most ${issue.maximum}`;
    default:
      return issue.message;
  }
}

const ARTICLE: Record<string, string> = { object: 'a mapping (key: value)', array: 'a list', string: 'a string', number: 'a number', boolean: 'true or false', int: 'a whole number' };
const article = (type: string) => ARTICLE[type] ?? type;

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  const text = JSON.stringify(v);
  return `${typeof v === 'string' ? 'the string' : typeof v === 'number' ? 'the number' : ''} ${text.length > 40 ? `${text.slice(0, 37)}…` : text}`.trim();
}

function valueAt(value: unknown, path: PropertyKey[]): unknown {
  let v = value;
  for (const p of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

/** The valid key closest to `key` by edit distance, when it is close enough to be a typo. */
export function nearest(key: string, valid: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const v of valid) {
    const d = distance(key.toLowerCase(), v.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [v, d];
  }
  return best !== undefined && bestDistance <= Math.max(1, Math.floor(key.length / 3)) ? best : undefined;
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

/**
 * The keys an object schema accepts at `path`, through the public zod API (optional, default,
 * pipe, union, record, array, lazy). Unions contribute the keys of every option.
 */
export function schemaKeysAt(schema: z.ZodType, path: PropertyKey[]): string[] {
  let nodes: z.ZodType[] = [schema];
  for (const step of [...path, undefined]) {
    nodes = nodes.flatMap(unwrap);
    if (step === undefined) break;
    nodes = nodes.flatMap((n) => {
      const def = n.def as { type: string; shape?: Record<string, z.ZodType>; valueType?: z.ZodType; element?: z.ZodType };
      if (def.type === 'object') return def.shape?.[String(step)] ? [def.shape[String(step)]] : [];
      if (def.type === 'record') return def.valueType ? [def.valueType] : [];
      if (def.type === 'array') return def.element ? [def.element] : [];
      return [];
    });
  }
  return [...new Set(nodes.flatMap((n) => (n.def.type === 'object' ? Object.keys((n.def as unknown as { shape: object }).shape) : [])))];
}

function unwrap(n: z.ZodType): z.ZodType[] {
  const def = n.def as { type: string; innerType?: z.ZodType; in?: z.ZodType; options?: z.ZodType[]; getter?: () => z.ZodType };
  switch (def.type) {
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
    case 'catch':
      return unwrap(def.innerType!);
    case 'pipe':
      return unwrap(def.in!);
    case 'union':
      return def.options!.flatMap(unwrap);
    case 'lazy':
      return unwrap(def.getter!());
    default:
      return [n];
  }
}
