// The JSONPath subset field masks use: `$` (the root), `.name` and `['name']` (a member),
// `[*]` and `.*` (every element or member), `[n]` (an array element, from 0) and `..name` (a
// member at any depth). Parsed when the bundle loads; applied copy-on-write, so the message the
// upstream sent (and the arguments it received) are never changed in place.

export type Segment = { t: 'member'; name: string } | { t: 'all' } | { t: 'index'; n: number } | { t: 'deep'; name: string };

export class PathError extends Error {}

const NAME = /^[A-Za-z_$][A-Za-z0-9_$-]*/;

/** Parses a path; throws PathError saying what is wrong and where. */
export function parsePath(path: string): Segment[] {
  if (!path.startsWith('$')) throw new PathError('a path starts with "$"');
  const out: Segment[] = [];
  let i = 1;
  const fail = (what: string): never => {
    throw new PathError(`${what} at character ${i + 1} of ${JSON.stringify(path)} (supported: $, .name, ['name'], [*], .*, [n], ..name)`);
  };
  while (i < path.length) {
    const rest = path.slice(i);
    if (rest.startsWith('..')) {
      const m = NAME.exec(rest.slice(2));
      if (!m) fail('expected a name after ".."');
      out.push({ t: 'deep', name: m![0] });
      i += 2 + m![0].length;
    } else if (rest.startsWith('.*')) {
      out.push({ t: 'all' });
      i += 2;
    } else if (rest.startsWith('.')) {
      const m = NAME.exec(rest.slice(1));
      if (!m) fail('expected a name after "."');
      out.push({ t: 'member', name: m![0] });
      i += 1 + m![0].length;
    } else if (rest.startsWith('[*]')) {
      out.push({ t: 'all' });
      i += 3;
    } else if (/^\[[0-9]+\]/.test(rest)) {
      const close = rest.indexOf(']');
      out.push({ t: 'index', n: Number(rest.slice(1, close)) });
      i += close + 1;
    } else if (rest.startsWith("['") || rest.startsWith('["')) {
      const q = rest[1];
      const close = rest.indexOf(`${q}]`, 2);
      if (close < 0) fail(`unclosed [${q}…${q}]`);
      out.push({ t: 'member', name: rest.slice(2, close) });
      i += close + 2;
    } else fail('unexpected character');
  }
  return out;
}

type Json = unknown;
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Deeper than this, masking refuses the message (fail closed) rather than exhaust the stack. */
export const MAX_DEPTH = 512;

/**
 * Replaces every value the path selects with replace(value); returns the same object when
 * nothing was selected, else a copy with only the changed branches copied.
 */
export function applyPath(root: Json, path: readonly Segment[], replace: (v: Json) => Json): Json {
  return step(root, path, 0, replace, 0);
}

function step(v: Json, path: readonly Segment[], i: number, replace: (v: Json) => Json, depth: number): Json {
  if (depth > MAX_DEPTH) throw new PathError('value nested too deeply to mask');
  if (i === path.length) return replace(v);
  const seg = path[i];
  switch (seg.t) {
    case 'member':
      if (!isObj(v) || !Object.hasOwn(v, seg.name)) return v;
      return withChild(v, seg.name, step(v[seg.name], path, i + 1, replace, depth + 1));
    case 'index':
      if (!Array.isArray(v) || seg.n >= v.length) return v;
      return withChild(v, seg.n, step(v[seg.n], path, i + 1, replace, depth + 1));
    case 'all': {
      if (typeof v !== 'object' || v === null) return v;
      let out: Json = v;
      for (const k of Array.isArray(v) ? v.keys() : Object.keys(v)) out = withChild(out, k, step((v as Record<string | number, Json>)[k], path, i + 1, replace, depth + 1));
      return out;
    }
    case 'deep': {
      // The member here (if any), then the same search inside every child.
      let out = v;
      if (isObj(v) && Object.hasOwn(v, seg.name)) out = withChild(out, seg.name, step(v[seg.name], path, i + 1, replace, depth + 1));
      if (typeof out === 'object' && out !== null) {
        const cur = out;
        for (const k of Array.isArray(cur) ? cur.keys() : Object.keys(cur)) {
          if (k === seg.name && !Array.isArray(cur)) continue;
          out = withChild(out, k, step((cur as Record<string | number, Json>)[k], path, i, replace, depth + 1));
        }
      }
      return out;
    }
  }
}

/** A copy of `parent` with `key` set, or `parent` itself when the child did not change. */
function withChild(parent: Json, key: string | number, child: Json): Json {
  const p = parent as Record<string | number, Json>;
  if (p[key] === child) return parent;
  const copy = (Array.isArray(parent) ? [...parent] : { ...p }) as Record<string | number, Json>;
  // defineProperty: a member named "__proto__" (JSON.parse makes it an own property) stays data.
  Object.defineProperty(copy, key, { value: child, writable: true, enumerable: true, configurable: true });
  return copy;
}
