// Glob matchers, compiled once when a bundle loads. Comparison is exact, code unit by code unit
// (so code point by code point): no case folding, no Unicode normalisation, no trimming. A name
// that differs in any character is another name.
//
// Names (servers, tools, prompts, methods): "*" matches any run of characters, "/" included.
// Resource URIs: "*" matches any run of characters within one path segment (no "/"), "**" any
// run across segments. Policy decides on canonical URIs only (uri.ts refuses dot segments, odd
// encodings, case that servers fold…), so what a glob matches is what the upstream serves. A
// pattern without "?" is matched against the URI without its query: a query parameterises a
// resource (a file server ignores it), so a deny on "file:///x" holds for "file:///x?v=1".
//
// There is no escape for a literal "*" and no "?" wildcard: a policy never needs to name a tool
// with a "*" in it, and fewer metacharacters means fewer surprises.

export type Matcher = (value: string) => boolean;

export const hasWildcard = (pattern: string): boolean => pattern.includes('*');

const always: Matcher = () => true;

/** A name glob: "*" matches any run of characters (including none). */
export function compileNameGlob(pattern: string): Matcher {
  if (!hasWildcard(pattern)) return (v) => v === pattern;
  const parts = pattern.split('*');
  if (parts.every((p) => p === '')) return always;
  const first = parts[0];
  const last = parts[parts.length - 1];
  if (parts.length === 2) {
    if (last === '') return (v) => v.startsWith(first);
    if (first === '') return (v) => v.endsWith(last);
    const min = first.length + last.length;
    return (v) => v.length >= min && v.startsWith(first) && v.endsWith(last);
  }
  const middle = parts.slice(1, -1).filter((p) => p !== '');
  const min = parts.reduce((n, p) => n + p.length, 0);
  // Prefix and suffix are anchored; middle parts are found leftmost-first, which is exact for
  // patterns whose only metacharacter is "*".
  return (v) => {
    if (v.length < min || !v.startsWith(first) || !v.endsWith(last)) return false;
    let at = first.length;
    const end = v.length - last.length;
    for (const part of middle) {
      const i = v.indexOf(part, at);
      if (i < 0 || i + part.length > end) return false;
      at = i + part.length;
    }
    return true;
  };
}

const escapeRegExp = (s: string) => s.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&');

/** A resource URI glob: "*" within a segment, "**" across segments; the query aside unless the pattern has one. */
export function compileUriGlob(pattern: string): Matcher {
  const match = compileUriPattern(pattern);
  if (pattern.includes('?')) return match;
  return (v) => {
    const q = v.indexOf('?');
    return match(q < 0 ? v : v.slice(0, q));
  };
}

function compileUriPattern(pattern: string): Matcher {
  if (!hasWildcard(pattern)) return (v) => v === pattern;
  let source = '';
  for (let i = 0; i < pattern.length; ) {
    if (pattern.startsWith('**', i)) {
      source += '[^]*';
      while (pattern[i] === '*') i++;
    } else if (pattern[i] === '*') {
      source += '[^/]*';
      i++;
    } else {
      const next = pattern.indexOf('*', i);
      const literal = next < 0 ? pattern.slice(i) : pattern.slice(i, next);
      source += escapeRegExp(literal);
      i += literal.length;
    }
  }
  const re = new RegExp(`^${source}$`, 'u');
  return (v) => re.test(v);
}

/**
 * Whether every value matched by `inner` is also matched by `outer` (used by lint to find
 * shadowed rules). Conservative: answers true only when it is sure.
 */
export function globCovers(outer: string, inner: string, uri: boolean): boolean {
  if (outer === inner) return true;
  if (uri ? outer === '**' || /^\*\*+$/.test(outer) : /^\*+$/.test(outer)) return true;
  if (!hasWildcard(inner)) return (uri ? compileUriGlob(outer) : compileNameGlob(outer))(inner);
  // Both globs: a pure prefix pattern "p*" covers "q…" when q starts with p.
  if (!uri && /^[^*]*\*$/.test(outer)) return inner.startsWith(outer.slice(0, -1));
  if (uri && /^[^*]*\*\*$/.test(outer)) return inner.startsWith(outer.slice(0, -2));
  return false;
}

/** Whether two globs could match a common value (conservative: true when unsure). */
export function globsOverlap(a: string, b: string, uri: boolean): boolean {
  if (!hasWildcard(a)) return (uri ? compileUriGlob(b) : compileNameGlob(b))(a);
  if (!hasWildcard(b)) return (uri ? compileUriGlob(a) : compileNameGlob(a))(b);
  const pa = a.slice(0, a.indexOf('*'));
  const pb = b.slice(0, b.indexOf('*'));
  return pa.startsWith(pb) || pb.startsWith(pa);
}
