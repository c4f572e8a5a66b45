// Every regular expression that policy applies to request or response data (CEL `matches`,
// custom mask detectors) runs on re2js, a port of RE2: matching time is linear in the input
// whatever the pattern, so an argument the agent controls cannot make a decision take
// exponential time. The dialect is RE2's (https://github.com/google/re2/wiki/Syntax): inline
// flags "(?i)", "(?s)", "(?m)", "(?U)" anywhere, "(?P<name>…)", "\A", "\z", no backreferences or
// lookaround. Patterns are code points, as in RE2.
import { RE2JS } from 're2js';

export type Pattern = RE2JS;

const cache = new Map<string, RE2JS>();

/** Compiles an RE2 pattern (cached); throws a plain Error saying what is wrong when invalid. */
export function compileRe2(pattern: string): Pattern {
  const hit = cache.get(pattern);
  if (hit) return hit;
  let re: RE2JS;
  try {
    re = RE2JS.compile(pattern);
  } catch (e) {
    throw new Error(`invalid regular expression ${JSON.stringify(pattern)}: ${(e as Error).message.replace(/^error parsing regexp: /, '')}`);
  }
  if (cache.size >= 10_000) cache.clear(); // bounded, whatever a reload cycle brings
  cache.set(pattern, re);
  return re;
}
