// Generated spellings of resource URIs, for property tests (src/policy/uri.test.ts) and the
// end-to-end URI tests: dot segments (plain and percent-encoded) with detours through other
// directories, percent-encodings in either hex case, "\\" and encoded separators, empty segments,
// case of scheme and host, userinfo, ports, "localhost", whitespace and controls anywhere,
// trailing "?", "#", "/.". Most choices are usually the canonical one, so some spellings are
// canonical and the rest differ in a few places.
import fc from 'fast-check';
import { posix } from 'node:path';

/**
 * What an upstream makes of a URI, at its most lenient: the SDK's `new URL()`, then a file system
 * that decodes every percent-encoding ("%2F" included), takes "\" for "/", merges "//" and
 * resolves dot segments, with the host's case folded. Undefined: no upstream could parse it.
 */
export function resolved(uri: string): string | undefined {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    return undefined;
  }
  let path = u.pathname;
  try {
    path = decodeURIComponent(path);
  } catch {
    // left encoded
  }
  return `${u.protocol}//${u.hostname.toLowerCase()}${posix.normalize(path.replace(/\\/g, '/'))}`;
}

export const NAME = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,6}$/).filter((s) => s !== '.' && s !== '..');
const DOT = fc.constantFrom('.', '%2e', '%2E');
const DOTDOT = fc.constantFrom('..', '.%2e', '%2e.', '%2E%2E', '%2e%2e', '.%2E');
/** Mostly the canonical choice, sometimes one of the others. */
const mostly = <T,>(canonical: T, ...others: T[]) => fc.oneof({ weight: 6, arbitrary: fc.constant(canonical) }, { weight: 1, arbitrary: fc.constantFrom(...others) });
const SEPARATOR = mostly('/', '\\', '%2F', '%2f', '%5C', '//');
const NOISE = fc.constantFrom('\t', '\n', '\r', ' ', '\0', '\x1f', '\x7f', '\u00a0', '\u200b', '\u2028', '\ufeff');
const TRAILING = mostly('', '?', '#', '?q=1', '#top', '/', '/.', '/..', '%20');

/** A path to `dir/<name>` with detours: dot segments, another directory and back, empty segments. */
const segments = (dir: string, root: readonly string[]) =>
  fc
    .record({
      names: fc.array(NAME, { minLength: 1, maxLength: 2 }),
      detours: fc.array(fc.tuple(fc.nat(4), fc.oneof(DOT.map((d) => [d]), fc.tuple(fc.constantFrom('public', 'secret', 'x'), DOTDOT).map(([a, b]) => [a, b]))), { maxLength: 3, size: 'xsmall' }),
    })
    .map(({ names, detours }) => {
      const path = [...root, dir, ...names];
      for (const [at, detour] of detours) path.splice(Math.min(at, path.length - 1), 0, ...detour);
      return path;
    });

/** Percent-encodes some characters of a segment, in either hex case. */
const encoded = (segment: string) =>
  fc.array(fc.tuple(fc.boolean(), fc.boolean()), { minLength: segment.length, maxLength: segment.length }).map((flags) =>
    [...segment]
      .map((c, i) => {
        if (!flags[i]![0] || c === '%') return c;
        const h = c.charCodeAt(0).toString(16).padStart(2, '0');
        return `%${flags[i]![1] ? h.toUpperCase() : h}`;
      })
      .join(''),
  );

/** Upper-cases some letters. */
const recased = (s: string) =>
  fc.array(fc.boolean(), { minLength: s.length, maxLength: s.length }).map((flags) => [...s].map((c, i) => (flags[i] ? c.toUpperCase() : c)).join(''));

export interface UriBase {
  scheme: string;
  /** "" for file: */
  host: string;
  /** Segments between the host and the directory. */
  root: string[];
}

/** Many spellings of a resource `<scheme>://<host>/<root…>/<dir>/<names…>`, for each base. */
export function uriSpellings(bases: UriBase[], dir: string): fc.Arbitrary<string> {
  return fc.constantFrom(...bases).chain(({ scheme, host, root }) => {
    return segments(dir, root).chain((path) =>
      fc
        .record({
          scheme: fc.oneof({ weight: 6, arbitrary: fc.constant(scheme) }, recased(scheme)),
          authority: host ? mostly(host, 'HOST', 'Host', `user@${host}`, `${host}:`, `${host}:080`, `${host}.`) : mostly('', 'localhost', 'LOCALHOST'),
          slashes: mostly('//', '/', '///'),
          segments: fc.tuple(...path.map((s) => fc.oneof({ weight: 8, arbitrary: fc.constant(s) }, { weight: 1, arbitrary: encoded(s) }))),
          separators: fc.array(SEPARATOR, { minLength: path.length, maxLength: path.length }),
          trailing: TRAILING,
          noise: fc.array(fc.tuple(fc.nat(200), NOISE), { maxLength: 2, size: 'xsmall' }),
        })
        .map((p) => {
          let uri = `${p.scheme}:${p.slashes}${p.authority}${p.segments.map((s, i) => p.separators[i] + s).join('')}${p.trailing}`;
          for (const [at, c] of p.noise) {
            const i = at % (uri.length + 1);
            uri = uri.slice(0, i) + c + uri.slice(i);
          }
          return uri;
        }),
    );
  });
}

