import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileCel, type CelContext } from './cel.js';

function ctx(args: Record<string, unknown> = {}, tool = 'query'): CelContext {
  return { identity: { sub: 'alice', groups: ['analysts'], claims: {} }, server: 'db', method: 'tools/call', tool, args, resource: '', prompt: '', time: new Date('2026-03-02T10:00:00Z') };
}

function evaluate(source: string, c: CelContext): boolean {
  const { compiled, problems } = compileCel(source);
  assert.deepEqual(problems, [], `${source} did not compile`);
  return compiled!.evaluate(c);
}

// `(?i)` is RE2 syntax JavaScript's RegExp refuses: any call left to cel-js's built-in matches
// throws "Invalid regular expression" at runtime. Each expression is checked both ways, so a call
// the rewrite misses fails the test (it throws) rather than passing by accident.
describe('matches is ours wherever it appears', () => {
  const cases: Array<[string, Record<string, unknown>, boolean, Record<string, unknown>, boolean]> = [
    ['!args.sql.matches("(?i)\\\\bdrop\\\\b")', { sql: 'select 1' }, true, { sql: 'DROP table' }, false],
    ['!(args.sql.matches("(?i)drop"))', { sql: 'select' }, true, { sql: 'Drop' }, false],
    ['(args.sql.matches("(?i)^select"))', { sql: 'SELECT 1' }, true, { sql: 'update' }, false],
    ['has(args.sql) && !args.sql.matches("(?i)drop")', { sql: 'select' }, true, { sql: 'dRoP' }, false],
    ['args.a.matches("(?i)^x$") || args.b.matches("(?i)^y$")', { a: 'q', b: 'Y' }, true, { a: 'q', b: 'z' }, false],
    ['!!args.sql.matches("(?i)select")', { sql: 'SELECT' }, true, { sql: 'x' }, false],
    ['args.items.exists(i, i.matches("(?i)^secret"))', { items: ['a', 'SECRET-1'] }, true, { items: ['a', 'b'] }, false],
    ['args.items.all(i, !i.matches("(?i)^secret"))', { items: ['a', 'b'] }, true, { items: ['Secret'] }, false],
    ['args.items.filter(i, i.matches("(?i)^a")).size() == 1', { items: ['A', 'b'] }, true, { items: ['b'] }, false],
    ['args.items.map(i, i.matches("(?i)^a")).exists(b, b)', { items: ['A'] }, true, { items: ['b'] }, false],
    ['[args.sql.matches("(?i)x")][0]', { sql: 'X' }, true, { sql: 'y' }, false],
    ['{"k": args.sql.matches("(?i)x")}["k"]', { sql: 'X' }, true, { sql: 'y' }, false],
    ['args.sql.matches("(?i)x") ? true : false', { sql: 'X' }, true, { sql: 'y' }, false],
    ['true ? !args.sql.matches("(?i)x") : false', { sql: 'y' }, true, { sql: 'X' }, false],
    ['!matches(args.sql, "(?i)x")', { sql: 'y' }, true, { sql: 'X' }, false],
    ['args.sql . matches ( "(?i)x" )', { sql: 'X' }, true, { sql: 'y' }, false],
    ['args.sql.\n  // a comment that says matches\n  matches("(?i)x")', { sql: 'X' }, true, { sql: 'y' }, false],
    ['"matches".matches("(?i)MATCHES") && !args.sql.matches("(?i)x")', { sql: 'y' }, true, { sql: 'X' }, false],
  ];
  for (const [source, yesArgs, yes, noArgs, no] of cases) {
    it(source.replace(/\n/g, '\\n'), () => {
      assert.equal(evaluate(source, ctx(yesArgs)), yes);
      assert.equal(evaluate(source, ctx(noArgs)), no);
    });
  }

  it('a bad literal pattern under ! (or in a macro) is found at load, with its column', () => {
    for (const source of ['!args.sql.matches("(unclosed")', 'args.items.exists(i, i.matches("(?=x)"))']) {
      const { compiled, problems } = compileCel(source);
      assert.equal(compiled, undefined, source);
      assert.equal(problems.length, 1, source);
      assert.match(problems[0]!.message, /^invalid regular expression "\(/);
      assert.equal(problems[0]!.column, source.indexOf('"(') + 1);
    }
  });

  it('error messages still say matches, not the internal name', () => {
    const { problems } = compileCel('!tool.matches(1)');
    assert.equal(problems.length, 1);
    assert.match(problems[0]!.message, /matches/);
    assert.doesNotMatch(problems[0]!.message, /pcl_re2/);
  });

  it('strings that mention matches are left alone', () => {
    assert.equal(evaluate('args.s == "x.matches(\\"(?i)a\\")" && !args.s.matches("(?i)^Y")', ctx({ s: 'x.matches("(?i)a")' })), true);
  });
});

describe('matches is RE2, in linear time', () => {
  const holds = (source: string, s: string) => evaluate(source, ctx({ s }));
  it('speaks the RE2 dialect natively: inline flags anywhere, (?P<name>, \\A, \\z, code points', () => {
    assert.equal(holds('args.s.matches("^select (?i)FROM$")', 'select from'), true);
    assert.equal(holds('args.s.matches("^select (?i)FROM$")', 'SELECT from'), false);
    assert.equal(holds('args.s.matches("(?P<verb>get|put)_x")', 'a put_x'), true);
    assert.equal(holds('args.s.matches("\\\\Aab\\\\z")', 'ab'), true);
    assert.equal(holds('args.s.matches("\\\\Aab\\\\z")', 'ab\n'), false);
    assert.equal(holds('args.s.matches("ab$")', 'ab\n'), false); // RE2: "$" is the end of the text unless (?m)
    assert.equal(holds('args.s.matches("^.$")', '😀'), true);
    assert.equal(holds('args.s.matches("(?s)a.b")', 'a\nb'), true);
    assert.equal(holds('args.s.matches("a.b")', 'a\nb'), false);
  });

  it('a pattern that is not a string literal is refused at load, however it is spelt', () => {
    for (const source of ['args.sql.matches(args.re)', 'matches(tool, "^" + args.x)', 'args.items.exists(i, tool.matches(i))', 'tool.pcl_re2(args.re)', 'tool.matches(dyn("a"))']) {
      const { compiled, problems } = compileCel(source);
      assert.equal(compiled, undefined, source);
      assert.match(problems.map((p) => p.message).join('; '), /must be a string literal|unknown function/, source);
    }
  });

  it('what only a backtracking engine has (lookaround, backreferences) is refused at load', () => {
    for (const re of ['(?=a)b', '(a)\\\\1', '(?<!a)b']) {
      const { compiled, problems } = compileCel(`tool.matches("${re}")`);
      assert.equal(compiled, undefined, re);
      assert.match(problems[0]!.message, /^invalid regular expression/);
    }
  });
});
