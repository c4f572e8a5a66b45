import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compileNameGlob, compileUriGlob, hasDotSegment } from './glob.js';

// The documented semantics, written as directly as possible (exponential, fine for short
// strings): a run of two or more "*" matches anything, one "*" anything without "/", every other
// character itself; a pattern with a wildcard never matches a URI with a dot segment; a pattern
// without "?" sees the URI without its query.
function reference(pattern: string, full: string): boolean {
  const uri = pattern.includes('?') || !full.includes('?') ? full : full.slice(0, full.indexOf('?'));
  if (!pattern.includes('*')) return pattern === uri;
  if (hasDotSegment(uri)) return false;
  const go = (i: number, j: number): boolean => {
    if (i === pattern.length) return j === uri.length;
    if (pattern[i] !== '*') return uri[j] === pattern[i] && go(i + 1, j + 1);
    let k = i;
    while (pattern[k] === '*') k++;
    const any = k - i > 1;
    for (let end = j; end <= uri.length; end++) {
      if (go(k, end)) return true;
      if (!any && uri[end] === '/') return false;
    }
    return false;
  };
  return go(0, 0);
}

// Characters that make globs interesting: separators, wildcards, dots and escapes, regex
// metacharacters (which must stay literal), and both halves of a surrogate pair.
const unit = fc.constantFrom('a', 'b', '-', '/', '*', '.', '%', '2', 'e', ':', '\\', '[', ']', '^', '$', '(', '+', '?', '|', '{', '}', '\ud83d', '\ude00');
const short = fc.string({ unit, maxLength: 10 });

/** A URI that the pattern probably matches: each run of stars replaced by a random string. */
const near = (pattern: string) => fc.array(short, { minLength: 8, maxLength: 8 }).map((fills) => {
  let n = 0;
  return pattern.replace(/\*+/g, () => fills[n++ % fills.length]!.replace(/\*/g, ''));
});

describe('URI globs', () => {
  it('every string compiles, and matching never throws (any characters)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }), (pattern, uri) => {
        assert.equal(typeof compileUriGlob(pattern)(uri), 'boolean');
        assert.equal(typeof compileNameGlob(pattern)(uri), 'boolean');
      }),
      { numRuns: 2000 },
    );
  });

  it('matches exactly what the documented semantics say', () => {
    fc.assert(
      fc.property(
        short.chain((p) => fc.tuple(fc.constant(p), fc.oneof(short, near(p)))),
        ([pattern, uri]) => assert.equal(compileUriGlob(pattern)(uri), reference(pattern, uri), `${JSON.stringify(pattern)} on ${JSON.stringify(uri)}`),
      ),
      { numRuns: 20_000 },
    );
  });

  it('patterns with "-" and other regex metacharacters are literal', () => {
    const m = compileUriGlob('file:///my-data/**');
    assert.equal(m('file:///my-data/a/b.txt'), true);
    assert.equal(m('file:///myXdata/a'), false);
    const n = compileUriGlob('db://x(1)+[a-z]|y/*.{json}');
    assert.equal(n('db://x(1)+[a-z]|y/t.{json}'), true);
    assert.equal(n('db://x1[a-z]|y/t.{json}'), false);
  });

  it('stays linear: a 100 KB URI against a pattern of many stars', () => {
    const uri = `file:///${'a/'.repeat(50_000)}c`;
    const m = compileUriGlob(`file:///${'**a*'.repeat(20)}**b*c`);
    const t0 = performance.now();
    assert.equal(m(uri), false);
    assert.ok(performance.now() - t0 < 200, `took ${performance.now() - t0} ms`);
  });
});
