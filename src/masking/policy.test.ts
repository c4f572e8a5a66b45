// Masks as policy: compiled at load (bad paths and patterns are load errors with their line),
// chosen per server, target and identity, and checked by lint.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Identity } from '../auth/identity.js';
import { PortcullisError } from '../errors.js';
import { compileBundle, usesHash } from '../policy/compile.js';
import { explain, formatExplanation } from '../policy/explain.js';
import { lintFiles } from '../policy/lint.js';
import { maskerFor } from './select.js';

const head = 'apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: p }\nserver: db\ndefault: allow\n';
const who = (sub: string, groups: string[] = []): Identity => ({ sub, groups, claims: {}, via: 'local' });
const tool = (name: string) => ({ kind: 'tool' as const, name });

describe('masks compiled from policy', () => {
  it('chosen by server, target, who and exempt', () => {
    const bundle = compileBundle({
      'p.yaml': `${head}masks:
  - { name: staff, who: { groups: [staff] }, exempt: { sub: boss }, tools: [query], detectors: [email] }
  - { name: everyone, tools: [report], detectors: [us_ssn] }
`,
    });
    const text = { content: [{ type: 'text', text: 'bob@example.com 123-45-6789' }] };
    const seen = (id: Identity, t: string, server = 'db') => maskerFor(bundle, id, server, tool(t))?.envelope(text) ?? text;
    assert.deepEqual(seen(who('amy', ['staff']), 'query'), { content: [{ type: 'text', text: '[REDACTED:email] 123-45-6789' }] });
    assert.deepEqual(seen(who('boss', ['staff']), 'query'), text);
    assert.deepEqual(seen(who('eve'), 'query'), text);
    assert.deepEqual(seen(who('eve'), 'report'), { content: [{ type: 'text', text: 'bob@example.com [REDACTED:us_ssn]' }] });
    assert.deepEqual(seen(who('amy', ['staff']), 'query', 'other'), text);
  });
  it('per-detector strategies; the first mask listing a detector decides its strategy', () => {
    const bundle = compileBundle({
      'p.yaml': `${head}masks:
  - { name: a, detectors: [email, { name: credit_card, strategy: partial }] }
  - { name: b, detectors: [email], strategy: hash }
`,
    });
    assert.equal(usesHash(bundle), true);
    const m = maskerFor(bundle, who('x'), 'db', tool('q'))!;
    assert.equal(m.plain('a@example.com 4111-1111-1111-1111'), '[REDACTED:email] [REDACTED:credit_card]1111');
  });
  it('field paths and custom patterns are checked at load, with their line', () => {
    try {
      compileBundle({ 'p.yaml': `${head}masks:\n  - name: m\n    fields: ["$.a[", "$..9"]\n    custom: [{ name: x, pattern: "(a)\\\\1" }]\n` });
      assert.fail('compiled');
    } catch (e) {
      assert.ok(e instanceof PortcullisError);
      const ps = e.problems.map((p) => `${p.line} ${p.field} ${p.message}`);
      assert.equal(ps.length, 3, ps.join('\n'));
      assert.ok(ps.some((p) => /^8 masks\.0\.fields\.0 JSONPath/.test(p)), ps.join('\n'));
      assert.ok(ps.some((p) => /masks\.0\.custom\.0\.pattern invalid regular expression/.test(p)), ps.join('\n'));
    }
  });
});

describe('lint: masks that match nothing', () => {
  const ids = (text: string) => lintFiles({ 'p.yaml': text }).filter((f) => f.ruleId === 'mask-matches-nothing').map((f) => f.message);
  it('an exempt that covers who', () => {
    assert.match(ids(`${head}masks:\n  - { name: m, detectors: [email], who: { groups: [a] }, exempt: { groups: [a, b] } }\n`)[0], /applies to nobody/);
    assert.deepEqual(ids(`${head}masks:\n  - { name: m, detectors: [email], who: { groups: [a, b] }, exempt: { groups: [a] } }\n`), []);
  });
  it('a mask for everything on a server where nothing is allowed', () => {
    const denyAll = head.replace('default: allow', 'default: deny');
    assert.match(ids(`${denyAll}rules:\n  - { name: no, effect: deny, tools: ["*"] }\nmasks:\n  - { name: m, detectors: [email] }\n`)[0], /never applies/);
    assert.deepEqual(ids(`${denyAll}rules:\n  - { name: yes, effect: allow, tools: [q] }\nmasks:\n  - { name: m, detectors: [email] }\n`), []);
  });
});

describe('explain names the masks a result gets', () => {
  it('for this identity and target only', () => {
    const bundle = compileBundle({ 'p.yaml': `${head}masks:\n  - { name: staff, who: { groups: [staff] }, tools: [query], detectors: [email, { name: phone, strategy: partial }] }\n  - { name: other, tools: [report], fields: ["$.ssn"] }\n` });
    const input = (groups: string[]) => ({ identity: who('amy', groups), server: 'db', method: 'tools/call', tool: 'query', args: {}, time: new Date() });
    assert.deepEqual(explain(bundle, input(['staff'])).masks.map((m) => [m.mask, m.detectors]), [['p/staff', ['email', 'phone (partial)']]]);
    assert.deepEqual(explain(bundle, input([])).masks, []);
    assert.match(formatExplanation(explain(bundle, input(['staff']))), /^masks: \n {2}p\/staff \(p\.yaml:7\): email, phone \(partial\); redact$/m);
  });
});
