import assert from 'node:assert/strict';
import { tempDir } from '../../test/support/temp-dir.js';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PortcullisError, type Problem } from '../errors.js';
import { bundleVersion, compileBundle, loadBundle } from './compile.js';
import { policyJsonSchema } from './schema.js';

function problemsOf(files: Record<string, string>): Problem[] {
  try {
    compileBundle(files);
  } catch (e) {
    assert.ok(e instanceof PortcullisError);
    assert.equal(e.code, 'PCL_POLICY_INVALID');
    return e.problems;
  }
  assert.fail('the bundle compiled');
}

const head = 'apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: p }\nserver: db\n';

describe('invalid bundles are rejected with file, line and field', () => {
  it('malformed YAML', () => {
    const [p] = problemsOf({ 'bad.yaml': `${head}rules:\n  - name: x\n    effect: [allow\n` });
    assert.equal(p.file, 'bad.yaml');
    assert.ok(p.line! >= 7, `line ${p.line}`);
  });
  it('unknown fields, with the line of the field', () => {
    const ps = problemsOf({ 'a.yaml': `${head}rules:\n  - name: x\n    effect: allow\n    tool: [query]\n` });
    assert.equal(ps.length, 1);
    assert.deepEqual([ps[0].file, ps[0].line, ps[0].field], ['a.yaml', 8, 'rules.0']);
    assert.match(ps[0].message, /unknown field "tool"/);
  });
  it('wrong types and values', () => {
    const ps = problemsOf({ 'a.yaml': `${head}default: maybe\nrules:\n  - name: x\n    effect: permit\n    tools: query\n` });
    const fields = ps.map((p) => `${p.line}:${p.field}`).sort();
    assert.deepEqual(fields, ['5:default', '8:rules.0.effect', '9:rules.0.tools']);
  });
  it('wrong apiVersion or kind', () => {
    const ps = problemsOf({ 'a.json': JSON.stringify({ apiVersion: 'v2', kind: 'Policy', metadata: { name: 'p' }, server: 'db' }, null, 2) });
    assert.deepEqual(ps.map((p) => [p.line, p.field]), [[2, 'apiVersion']]);
  });
  it('CEL syntax and type errors, and every error at once across files and documents', () => {
    const ps = problemsOf({
      'a.yaml': `${head}rules:\n  - name: x\n    effect: allow\n    when: "args.sql.matches("\n  - name: y\n    effect: allow\n    when: tool + 1 == 2\n`,
      'b.yaml': `${head.replace('name: p', 'name: q')}rules:\n  - { name: z, effect: deny, when: 'nosuchvar == 1' }\n---\n${head.replace('name: p', 'name: r')}rules:\n  - { name: w, effect: deny, when: 'size(args)' }\n`,
    });
    const summary = ps.map((p) => `${p.file}:${p.line}:${p.field}`);
    assert.deepEqual(summary, ['a.yaml:8:rules.0.when', 'a.yaml:11:rules.1.when', 'b.yaml:6:rules.0.when', 'b.yaml:13:rules.0.when']);
    assert.match(ps[0].message, /^CEL: /);
    assert.match(ps[1].message, /no such overload: string \+ int/);
    assert.match(ps[2].message, /Unknown variable: nosuchvar/);
  });
  it('a when that is not a bool', () => {
    const ps = problemsOf({ 'a.yaml': `${head}rules:\n  - { name: x, effect: allow, when: '"text"' }\n` });
    assert.match(ps[0].message, /must be a bool/);
  });
  it('a regular expression that would not compile inside matches', () => {
    const ps = problemsOf({ 'a.yaml': `${head}rules:\n  - { name: x, effect: allow, when: 'args.sql.matches("(unclosed")' }\n  - { name: y, effect: allow, when: 'matches(tool, "(?=x)")' }\n` });
    assert.deepEqual(ps.map((p) => [p.line, p.field]), [[6, 'rules.0.when'], [7, 'rules.1.when']]);
    assert.match(ps[0].message, /invalid regular expression "\(unclosed"/);
    assert.match(ps[1].message, /invalid regular expression "\(\?=x\)": invalid or unsupported Perl syntax/);
  });
  it('duplicate rule, mask and policy names', () => {
    const ps = problemsOf({
      'a.yaml': `${head}rules:\n  - { name: x, effect: allow }\n  - { name: x, effect: deny }\nmasks:\n  - { name: m, detectors: [email] }\n  - { name: m, detectors: [email] }\n`,
      'b.yaml': `${head}`,
    });
    assert.deepEqual(ps.map((p) => `${p.file}:${p.line}:${p.field}`), ['a.yaml:7:rules.1.name', 'a.yaml:10:masks.1.name', 'b.yaml:3:metadata.name']);
  });
  it('masks: unknown detectors and bad custom patterns', () => {
    const ps = problemsOf({ 'a.yaml': `${head}masks:\n  - name: m\n    detectors: [emails]\n    custom: [{ name: ticket, pattern: "TKT-(" }]\n` });
    assert.deepEqual(ps.map((p) => p.field).sort(), ['masks.0.custom.0.pattern', 'masks.0.detectors.0']);
  });
  it('custom detectors are RE2 (linear time on upstream results): lookaround is refused, (?i) and (?P<name> work', () => {
    const ps = problemsOf({ 'a.yaml': `${head}masks:\n  - { name: m, custom: [{ name: a, pattern: "x(?=y)" }, { name: b, pattern: "(a*)*" }] }\n` });
    assert.deepEqual(ps.map((p) => [p.field, p.message.split(':')[0]]), [['masks.0.custom.0.pattern', 'invalid regular expression "x(?=y)"'], ['masks.0.custom.1.pattern', 'pattern matches the empty string, so it would mask nothing useful']]);
    const b = compileBundle({ 'a.yaml': `${head}masks:\n  - { name: m, custom: [{ name: ticket, pattern: "(?i)(?P<id>tkt-[0-9]{6})" }] }\n` });
    const [{ detector }] = b.documents[0].masks[0].rules.detectors;
    assert.deepEqual(detector.find('see TKT-123456'), [{ start: 4, end: 14, kind: 'ticket' }]);
    const t0 = performance.now();
    assert.deepEqual(compileBundle({ 'a.yaml': `${head}masks:\n  - { name: m, custom: [{ name: x, pattern: "(a+)+$" }] }\n` }).documents[0].masks[0].rules.detectors[0].detector.find(`${'a'.repeat(100_000)}!`), []);
    assert.ok(performance.now() - t0 < 1000);
  });
  it('a server that is not a name or glob, and an empty bundle', () => {
    assert.equal(problemsOf({ 'a.yaml': head.replace('server: db', 'server: "db "') })[0].field, 'server');
    assert.match(problemsOf({ 'a.yaml': '# nothing\n' })[0].message, /no policy documents/);
  });
  it('a rule name with "/" is refused', () => {
    assert.equal(problemsOf({ 'a.yaml': `${head}rules:\n  - { name: a/b, effect: allow }\n` })[0].field, 'rules.0.name');
  });
});

describe('bundles', () => {
  const files = { 'a.yaml': `${head}rules: []\n`, 'b.yaml': `${head.replace('name: p', 'name: q')}` };
  it('the version is stable under file order and changes with content', () => {
    const v1 = compileBundle(files).version;
    const v2 = compileBundle({ 'b.yaml': files['b.yaml'], 'a.yaml': files['a.yaml'] }).version;
    assert.equal(v1, v2);
    assert.match(v1, /^[0-9a-f]{64}$/);
    assert.notEqual(v1, compileBundle({ ...files, 'a.yaml': files['a.yaml'] + '# comment\n' }).version);
    assert.equal(bundleVersion({ ...files, 'x.test.yaml': 'tests: []' }), v1);
  });
  it('loadBundle reads a folder (recursively, skipping tests) and names files by path', () => {
    const dir = tempDir('pcl-');
    mkdirSync(join(dir, 'team'));
    writeFileSync(join(dir, 'a.yaml'), files['a.yaml']);
    writeFileSync(join(dir, 'team', 'b.yml'), files['b.yaml']);
    writeFileSync(join(dir, 'a.test.yaml'), 'not: [a policy');
    writeFileSync(join(dir, 'README.md'), '# not policy');
    const b = loadBundle(dir);
    assert.deepEqual(Object.keys(b.files).sort(), ['a.yaml', 'team/b.yml']);
    assert.equal(b.version, compileBundle({ 'a.yaml': files['a.yaml'], 'team/b.yml': files['b.yaml'] }).version);
    writeFileSync(join(dir, 'team', 'c.yaml'), `${head.replace('name: p', 'name: c')}rules:\n  - { name: x, effect: alow }\n`);
    try {
      loadBundle(dir);
      assert.fail('loaded');
    } catch (e) {
      assert.equal((e as PortcullisError).problems[0].file, join(dir, 'team', 'c.yaml'));
      assert.equal((e as PortcullisError).problems[0].line, 6);
    }
    assert.throws(() => loadBundle(join(dir, 'nope')), /cannot read policy path/);
  });
});

describe('JSON Schema', () => {
  it('the committed schema/policy.schema.json is up to date (regenerate: npx tsx src/policy/generate-schema.ts)', () => {
    const committed = JSON.parse(readFileSync(new URL('../../schema/policy.schema.json', import.meta.url), 'utf8'));
    assert.deepEqual(committed, policyJsonSchema());
  });
});
