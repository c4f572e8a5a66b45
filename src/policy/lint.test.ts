import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compileBundle } from './compile.js';
import { compileUriGlob } from './glob.js';
import { decide } from './decide.js';
import { lintFiles, uriPatternProblem, type Finding } from './lint.js';

const head = 'apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: p }\nserver: db\n';
const brief = (fs: Finding[]) => fs.map((f) => `${f.line}:${f.level}:${f.ruleId}:${f.field}`);

describe('every glob compiles; a problem is a finding, never a throw', () => {
  it('patterns with "-" and regex metacharacters load and decide (issue 9)', () => {
    const files = { 'p.yaml': `${head}rules:\n  - { name: r, effect: allow, resources: ["file:///my-data/**", "db://x/(1)+[a-z]/*"] }\n` };
    assert.deepEqual(lintFiles(files), []);
    const b = compileBundle(files);
    const read = (uri: string) => decide(b, { identity: { sub: 'a', groups: [], claims: {}, via: 'api-key' }, server: 'db', method: 'resources/read', resource: uri, args: {}, time: new Date() }).effect;
    assert.equal(read('file:///my-data/a/b.txt'), 'allow');
    assert.equal(read('file:///my-datb/a'), 'deny');
    assert.equal(read('db://x/(1)+[a-z]/t'), 'allow');
    assert.equal(read('db://x(1)+[a-z]/t'), 'deny'); // not a URL servers parse: refused as not canonical (uri.ts)
  });

  it('random patterns in every selector field (any characters): lint never throws, every finding has file, line and field', () => {
    const fields = ['tools', 'resources', 'prompts', 'methods'] as const;
    fc.assert(
      fc.property(fc.constantFrom(...fields), fc.array(fc.string({ unit: 'binary', maxLength: 30 }), { minLength: 1, maxLength: 3 }), fc.boolean(), (field, patterns, inMask) => {
        const doc = inMask && field !== 'methods'
          ? { apiVersion: 'portcullis/v1', kind: 'Policy', metadata: { name: 'p' }, server: 'db', masks: [{ name: 'm', detectors: ['email'], [field]: patterns }] }
          : { apiVersion: 'portcullis/v1', kind: 'Policy', metadata: { name: 'p' }, server: 'db', rules: [{ name: 'r', effect: 'deny', [field]: patterns }] };
        const findings = lintFiles({ 'p.json': JSON.stringify(doc, null, 2) });
        for (const f of findings) {
          assert.equal(f.file, 'p.json');
          assert.ok(f.line >= 1);
          assert.ok(f.field, JSON.stringify(f));
        }
        // Every non-empty string is a legal glob: the only error can be the empty one.
        const errors = findings.filter((f) => f.level === 'error');
        assert.equal(errors.length, patterns.filter((p) => p === '').length, JSON.stringify(findings));
      }),
      { numRuns: 500 },
    );
  });
});

describe('lint catches the traps', () => {
  it('a resources pattern that cannot match a URI with a scheme and a path, at the line of the pattern', () => {
    const text = `${head}rules:\n  - name: r\n    effect: deny\n    resources:\n      - "*"\n      - "*.md"\n      - "/srv/data/**"\n      - "file:///srv/*"\n      - "urn:isbn:0451450523"\n      - "**"\nmasks:\n  - { name: m, detectors: [email], resources: ["*"] }\n`;
    const fs = lintFiles({ 'p.yaml': text }).filter((f) => f.ruleId === 'uri-matches-nothing');
    assert.deepEqual(brief(fs), ['9:warning:uri-matches-nothing:rules.0.resources.0', '10:warning:uri-matches-nothing:rules.0.resources.1', '11:warning:uri-matches-nothing:rules.0.resources.2', '16:warning:uri-matches-nothing:masks.0.resources.0']);
    assert.match(fs[0]!.message, /never "\/"; use "\*\*"/);
    assert.match(fs[2]!.message, /does not start with a scheme/);
  });

  it('a finding in the later documents of one file is at its own line (the bundle keeps no YAML tree: lint parses the text again)', () => {
    const doc = (name: string, pattern: string) => `apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: ${name} }\nserver: db\nrules:\n  - name: r\n    effect: deny\n    resources:\n      - "${pattern}"\n`;
    // Three documents; the second's pattern can match, the others' cannot.
    const text = `# three policies\n---\n${doc('a', '*.md')}---\n${doc('b', 'file:///x/**')}---\n${doc('c', '/srv/**')}`;
    const b = compileBundle({ 'p.yaml': text });
    assert.deepEqual(b.documents.map((d) => [d.name, d.rules[0]!.lineOf(['resources', 0])]), [['a', 11], ['b', 21], ['c', 31]]);
    const fs = lintFiles({ 'p.yaml': text }).filter((f) => f.ruleId === 'uri-matches-nothing');
    assert.deepEqual(brief(fs), ['11:warning:uri-matches-nothing:rules.0.resources.0', '31:warning:uri-matches-nothing:rules.0.resources.0']);
  });

  it('a resources pattern that is not canonical matches nothing the gateway lets through: a deny written so would hold nowhere', () => {
    for (const [p, says] of [
      ['FILE:///srv/secret/**', /scheme must be lowercase/],
      ['file:///srv/%2e%2e/x/**', /%2e/],
      ['file:///srv/../secret/**', /dot segment|\.\./],
      ['file:///srv//secret/*', /empty segment|\/\//],
    ] as const) {
      const why = uriPatternProblem(p);
      assert.match(why ?? '', /canonical/, p);
      assert.match(why ?? '', says, `${p}: ${why}`);
    }
    assert.equal(uriPatternProblem('file:///srv/secret/**'), undefined);
  });

  it('the URI check passes what can match a scheme:…/… URI, and only that', () => {
    const can: Array<[string, string]> = [['**', 'a:/'], ['*://*/x', 'f://h/x'], ['file:///**', 'file:///a'], ['a*/**', 'a:/b'], ['demo://resource/static/document/*.md', 'demo://resource/static/document/a.md'], ['s*:/x', 's:/x']];
    for (const [p, uri] of can) {
      assert.equal(uriPatternProblem(p), undefined, p);
      assert.equal(compileUriGlob(p)(uri), true, p);
    }
    for (const p of ['*', '*.md', 'file:*', '/x/**', '1ab:/x/*', 'a/b:**']) assert.ok(uriPatternProblem(p), p);
  });

  it('allow rules for everyone on every resource, prompt or method warn like tools: ["*"]', () => {
    const text = `${head}rules:\n  - { name: t, effect: allow, tools: ["*"] }\n  - { name: r, effect: allow, resources: ["**"] }\n  - { name: p, effect: allow, prompts: ["*"] }\n  - { name: m, effect: allow, methods: ["*"] }\n  - { name: any, effect: allow }\n  - { name: who, effect: allow, who: { groups: [a] }, resources: ["**"] }\n  - { name: some, effect: allow, resources: ["file:///**"] }\n`;
    const fs = lintFiles({ 'p.yaml': text }).filter((f) => f.ruleId === 'allow-all');
    assert.deepEqual(fs.map((f) => f.line), [6, 7, 8, 9, 10]);
    assert.match(fs[1]!.message, /read every resource/);
    assert.match(fs[2]!.message, /get every prompt/);
    assert.match(fs[3]!.message, /use every other method/);
    assert.match(fs[4]!.message, /call every tool, read every resource, get every prompt/);
  });

  it('comparing an argument with a literal of a type it cannot sensibly have is an error at load, with file, line and field', () => {
    const text = `${head}rules:\n  - { name: ok, effect: allow, tools: [t], when: 'args.name > "m" && args.zip == "12345" && args.count > 5' }\n  - name: count\n    effect: deny\n    tools: [t]\n    when: 'args.count > "5"'\n  - { name: bytes, effect: deny, tools: [t], when: 'args["data"] == b"x"' }\n  - { name: time, effect: deny, tools: [t], when: '"1.5" <= args.x.y || args.at < timestamp("2026-01-01T00:00:00Z")' }\n`;
    const fs = lintFiles({ 'p.yaml': text });
    assert.deepEqual(brief(fs), ['10:error:cel:rules.1.when', '11:error:cel:rules.2.when', '12:error:cel:rules.3.when', '12:error:cel:rules.3.when']);
    assert.match(fs[0]!.message, /args\.count is compared \(>\) with the string "5": .*compare with the number 5 \(column 14\)/);
    assert.match(fs[1]!.message, /args\["data"\] is a JSON value, never a bytes, so comparing it with one \(==\) is always false/);
    assert.match(fs[2]!.message + fs[3]!.message, /never a timestamp, so comparing it with one \(<\) is always an error/);
    assert.match(fs[2]!.message + fs[3]!.message, /args\.x\.y is compared \(<=\) with the string "1\.5"/);
    assert.throws(() => compileBundle({ 'p.yaml': text }), /nothing was loaded/);
  });
});
