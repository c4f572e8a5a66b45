// Glob matchers, compiled once when a bundle loads. Comparison is exact, code unit by code unit
// (so code point by code point): no case folding, no Unicode normalisation, no trimming. A name
// that differs in any character is another name.
//
// Names (servers, tools, prompts, methods): "*" matches any run of characters, "/" included.
// Resource URIs: "*" matches any run of characters within one path segment (no "/"), "**" any
// run across segments. A URI holding a dot segment ("." or "..", also percent-encoded, also
// between backslashes) never matches a pattern with a wildcard: upstream servers resolve such
// segments, so "file:///srv/data/../secret" must not pass for "file:///srv/data/**". (Policy
// decides on canonical URIs only, see uri.ts, so this is a second line.) A pattern without "?" is
// matched against the URI without its query: a query parameterises a resource (a file server
// ignores it), so a deny on "file:///x" holds for "file:///x?v=1".
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

// A fixed pattern whose every match is at most 4 characters long: linear in the URI's length.
const DOT_SEGMENT = /(?:^|[/\\])\.{1,2}(?:[/\\?#]|$)/;
/** True when the URI has a "." or ".." segment, spelled plainly or percent-encoded. */
export function hasDotSegment(uri: string): boolean {
  const decoded = uri.includes('%') ? uri.replace(/%2e/gi, '.').replace(/%2f/gi, '/').replace(/%5c/gi, '\\') : uri;
  return DOT_SEGMENT.test(decoded);
}

const SEG = -1; // "*": any run without "/"
const ANY = -2; // "**" (or more stars): any run

/** A resource URI glob; the query is set aside unless the pattern has one (see the top). */
export function compileUriGlob(pattern: string): Matcher {
  const match = compileUriPattern(pattern);
  if (pattern.includes('?')) return match;
  return (v) => {
    const q = v.indexOf('?');
    return match(q < 0 ? v : v.slice(0, q));
  };
}

/**
 * A resource URI pattern: "*" within a segment, "**" across segments. Every string is a valid
 * pattern, and matching needs no regular expression: the literal prefix and suffix are compared
 * directly and the part between them runs as a set of pattern positions advanced once per code
 * unit, so time is linear in the URI's length (times the pattern's length / 32), whatever either
 * holds.
 */
function compileUriPattern(pattern: string): Matcher {
  if (!hasWildcard(pattern)) return (v) => v === pattern;
  const prefix = pattern.slice(0, pattern.indexOf('*'));
  const suffix = pattern.slice(pattern.lastIndexOf('*') + 1);
  const core = pattern.slice(prefix.length, pattern.length - suffix.length);
  const tokens: number[] = [];
  for (let i = 0; i < core.length; ) {
    if (core[i] === '*') {
      let j = i;
      while (core[j] === '*') j++;
      tokens.push(j - i > 1 ? ANY : SEG);
      i = j;
    } else tokens.push(core.charCodeAt(i++));
  }
  const min = prefix.length + suffix.length + tokens.filter((t) => t >= 0).length;
  let inner: (v: string, from: number, to: number) => boolean;
  if (tokens.every((t) => t === ANY)) inner = () => true;
  else if (tokens.every((t) => t === SEG)) inner = (v, from, to) => { const s = v.indexOf('/', from); return s < 0 || s >= to; };
  else inner = simulate(Int32Array.from(tokens));
  return (v) => v.length >= min && v.startsWith(prefix) && v.endsWith(suffix) && inner(v, prefix.length, v.length - suffix.length) && !hasDotSegment(v);
}

const SLASH = 47;

// The set of pattern positions as a bit set (bit i: token i is next; bit m: the end), advanced
// once per code unit with shifts and masks over ceil((m + 1) / 32) words (Shift-And). Stars are
// never adjacent (a run of stars is one token), so "a star may match nothing" is one shift.
function simulate(tokens: Int32Array): (v: string, from: number, to: number) => boolean {
  const m = tokens.length;
  const words = (m >> 5) + 1;
  const any = new Int32Array(words);
  const seg = new Int32Array(words);
  const lit = new Map<number, Int32Array>();
  const none = new Int32Array(words);
  for (let i = 0; i < m; i++) {
    const t = tokens[i]!;
    const mask = t === ANY ? any : t === SEG ? seg : (lit.get(t) ?? lit.set(t, new Int32Array(words)).get(t)!);
    mask[i >> 5]! |= 1 << (i & 31);
  }
  const endWord = m >> 5;
  const endBit = 1 << (m & 31);
  return (v, from, to) => {
    const cur = new Int32Array(words);
    cur[0] = 1;
    closeOverStars(cur, any, seg);
    for (let p = from; p < to; p++) {
      const c = v.charCodeAt(p);
      const l = lit.get(c) ?? none;
      const slash = c === SLASH;
      let carry = 0;
      let alive = 0;
      for (let w = 0; w < words; w++) {
        const x = cur[w]!;
        const moved = x & l[w]!;
        const next = (moved << 1) | carry | (x & (slash ? any[w]! : any[w]! | seg[w]!));
        carry = moved >>> 31;
        cur[w] = next;
        alive |= next;
      }
      if (!alive) return false;
      closeOverStars(cur, any, seg);
    }
    return (cur[endWord]! & endBit) !== 0;
  };
}

function closeOverStars(set: Int32Array, any: Int32Array, seg: Int32Array): void {
  let carry = 0;
  for (let w = 0; w < set.length; w++) {
    const stars = set[w]! & (any[w]! | seg[w]!);
    set[w] = set[w]! | (stars << 1) | carry;
    carry = stars >>> 31;
  }
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
