import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { Identity } from '../auth/identity.js';
import { compileBundle } from './compile.js';
import { decide, MALFORMED, visible } from './decide.js';
import type { DecisionInput } from './decision.js';

const alice: Identity = { sub: 'alice', groups: ['analysts'], claims: { dept: 'finance', roles: ['reader', 'auditor'] }, via: 'oidc' };
const bob: Identity = { sub: 'bob', groups: ['engineers'], claims: { dept: 'it' }, via: 'oidc' };
const time = new Date('2026-03-02T10:00:00Z');

function policy(server: string, rules: string, extra = ''): string {
  return `apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: p-${server.replace(/\*/g, 'star')}${extra ? '-' + extra.length : ''} }\nserver: "${server}"\n${extra}rules:\n${rules}`;
}
const tool = (t: string, args: Record<string, unknown> = {}, identity = alice, server = 'db'): DecisionInput => ({
  identity, server, method: 'tools/call', tool: t, args, time,
});

describe('decision table', () => {
  const effects = ['allow', 'deny', 'approve'] as const;
  // Every subset of {allow, deny, approve} matching rules, with either default.
  for (const def of ['allow', 'deny'] as const) {
    for (let mask = 0; mask < 8; mask++) {
      const present = effects.filter((_, i) => mask & (1 << i));
      const expected = present.includes('deny') ? 'deny' : present.includes('approve') ? 'approve' : present.includes('allow') ? 'allow' : def;
      it(`rules {${present.join(', ') || 'none'}} with default ${def} → ${expected}`, () => {
        const rules = present.map((e) => `  - { name: r-${e}, effect: ${e}, tools: [query]${e === 'approve' ? ', approvers: { groups: [dba] }' : ''} }\n`).join('') || '  []\n';
        const bundle = compileBundle({ 'p.yaml': policy('db', rules, `default: ${def}\n`) });
        const d = decide(bundle, tool('query'));
        assert.equal(d.effect, expected);
        assert.equal(d.rule, present.length ? `p-db-${`default: ${def}\n`.length}/r-${expected}` : `p-db-${`default: ${def}\n`.length}/default`);
        assert.equal(d.bundleVersion, bundle.version);
        if (expected === 'approve') assert.deepEqual(d.approvers, { groups: ['dba'] });
      });
    }
  }

  it('default is deny when absent', () => {
    const b = compileBundle({ 'p.yaml': policy('db', '  - { name: a, effect: allow, tools: [query] }\n') });
    assert.deepEqual([decide(b, tool('other')).effect, decide(b, tool('other')).rule], ['deny', 'p-db/default']);
  });

  it('a request no document covers is denied', () => {
    const b = compileBundle({ 'p.yaml': policy('db', '  - { name: a, effect: allow }\n', 'default: allow\n') });
    const d = decide(b, tool('query', {}, alice, 'crm'));
    assert.equal(d.effect, 'deny');
    assert.equal(d.rule, '(no policy covers this request)');
  });

  it('several documents covering a server pool their rules with the same precedence', () => {
    const b = compileBundle({
      'a.yaml': policy('db', '  - { name: analysts, effect: allow, tools: [query] }\n', 'default: allow\n'),
      'b.yaml': policy('*', '  - { name: no-drop, effect: deny, tools: ["*"], when: \'args.sql.contains("drop")\' }\n  - { name: exec-approve, effect: approve, tools: [execute], approvers: { sub: [carol] } }\n'),
    });
    assert.equal(decide(b, tool('query', { sql: 'select' })).effect, 'allow');
    const dropped = decide(b, tool('query', { sql: 'drop table' }));
    assert.deepEqual([dropped.effect, dropped.rule], ['deny', 'p-star/no-drop']);
    assert.equal(decide(b, tool('execute', { sql: 'x' })).effect, 'approve');
    // No rule matches: the defaults combine, and one deny (b.yaml's implicit default) wins.
    const fallback = decide(b, tool('unknown', { sql: 'x' }));
    assert.deepEqual([fallback.effect, fallback.rule], ['deny', 'p-star/default']);
    // A server only the "*" document covers.
    assert.equal(decide(b, tool('execute', { sql: 'x' }, alice, 'crm')).effect, 'approve');
  });

  it('ties go to the first rule in bundle order, across files sorted by name', () => {
    const b = compileBundle({
      'z.yaml': policy('db', '  - { name: second, effect: deny, tools: [q] }\n'),
      'a.yaml': policy('db', '  - { name: first, effect: deny, tools: ["*"] }\n', 'default: deny\n'),
    });
    assert.equal(decide(b, tool('q')).rule, `p-db-${'default: deny\n'.length}/first`);
  });

  it('who: sub, groups and claims (all must hold; lists are alternatives)', () => {
    const b = compileBundle({
      'p.yaml': policy(
        'db',
        [
          '  - { name: by-sub, effect: allow, who: { sub: alice }, tools: [t1] }',
          '  - { name: by-group, effect: allow, who: { groups: [engineers, ops] }, tools: [t2] }',
          '  - { name: by-claim, effect: allow, who: { claims: { dept: finance } }, tools: [t3] }',
          '  - { name: by-array-claim, effect: allow, who: { claims: { roles: [auditor] } }, tools: [t4] }',
          '  - { name: both, effect: allow, who: { sub: [alice], groups: [engineers] }, tools: [t5] }',
          '',
        ].join('\n'),
      ),
    });
    const effect = (t: string, who: Identity) => decide(b, tool(t, {}, who)).effect;
    assert.deepEqual(['t1', 't2', 't3', 't4', 't5'].map((t) => effect(t, alice)), ['allow', 'deny', 'allow', 'allow', 'deny']);
    assert.deepEqual(['t1', 't2', 't3', 't4', 't5'].map((t) => effect(t, bob)), ['deny', 'allow', 'deny', 'deny', 'deny']);
    // Claims compare exactly, and a claim named like an Object.prototype member is not "present".
    const odd: Identity = { sub: 'x', groups: [], claims: { dept: 'Finance' }, via: 'oidc' };
    assert.equal(effect('t3', odd), 'deny');
  });

  it('an unknown method is denied unless a methods rule allows it; defaults do not apply to it', () => {
    const b = compileBundle({ 'p.yaml': policy('db', '  - { name: tasks, effect: allow, methods: ["tasks/*"] }\n  - { name: all-kinds, effect: allow }\n', 'default: allow\n') });
    const call = (method: string) => decide(b, { identity: alice, server: 'db', method, time });
    assert.deepEqual([call('tasks/get').effect, call('tasks/get').rule], ['allow', `p-db-${'default: allow\n'.length}/tasks`]);
    assert.deepEqual([call('x/unknown').effect, call('x/unknown').rule], ['deny', '(no rule allows this method)']);
  });

  it('a request the server sends to the client is governed only by serverRequests rules; methods and defaults do not reach it', () => {
    const b = compileBundle({
      'p.yaml': policy(
        'db',
        [
          '  - { name: every-method, effect: allow, methods: ["*"] }',
          '  - { name: all-kinds, effect: allow }',
          '  - { name: roots, effect: allow, serverRequests: [roots/list] }',
          '  - { name: analysts-sample, effect: allow, who: { groups: [analysts] }, serverRequests: ["sampling/*"], when: "args.maxTokens <= 100" }',
          '  - { name: no-elicit, effect: deny, serverRequests: ["elicitation/*"], message: servers do not question our users }',
          '',
        ].join('\n'),
        'default: allow\n',
      ),
    });
    const asked = (method: string, args: Record<string, unknown> = {}, identity = alice) => decide(b, { identity, server: 'db', method, from: 'server', args, time });
    const doc = `p-db-${'default: allow\n'.length}`;
    assert.deepEqual([asked('roots/list').effect, asked('roots/list').rule], ['allow', `${doc}/roots`]);
    assert.deepEqual([asked('sampling/createMessage', { maxTokens: 50 }).effect, asked('sampling/createMessage', { maxTokens: 50 }).rule], ['allow', `${doc}/analysts-sample`]);
    assert.equal(asked('sampling/createMessage', { maxTokens: 500 }).effect, 'deny', 'when is evaluated on the params');
    assert.equal(asked('sampling/createMessage', { maxTokens: 50 }, bob).effect, 'deny', 'who is the client being asked');
    assert.deepEqual(asked('elicitation/create'), { effect: 'deny', rule: `${doc}/no-elicit`, message: 'servers do not question our users', bundleVersion: b.version });
    // methods: ["*"] and the allow default govern client requests only.
    assert.deepEqual([asked('tasks/get').effect, asked('tasks/get').rule], ['deny', '(no rule allows this server request)']);
    assert.equal(decide(b, { identity: alice, server: 'db', method: 'tasks/get', time }).effect, 'allow', 'the same method from the client is a methods matter');
    assert.equal(decide(b, { identity: alice, server: 'db', method: 'roots/list', time }).rule, `${doc}/every-method`);
    // Names compare exactly here too.
    assert.equal(asked('Roots/list').effect, 'deny');
    assert.equal(asked('roots/list ').effect, 'deny');
  });

  it('a server request is allowed only under its exact name: every other spelling is denied', () => {
    const b = compileBundle({ 'p.yaml': policy('db', '  - { name: s, effect: allow, serverRequests: [sampling/createMessage, "roots/*"] }\n', 'default: allow\n') });
    const name = 'sampling/createMessage';
    // Near spellings (case, whitespace, Unicode look-alikes, NUL, prefixes) and arbitrary strings.
    const near = fc.tuple(fc.nat(name.length - 1), fc.constantFrom('S', 'A', ' ', '\u0000', '\u0430', '\u200b', '/', 'e\u0301', '')).map(([i, c]) => name.slice(0, i) + c + name.slice(i + 1));
    fc.assert(
      fc.property(fc.oneof(near, fc.string(), fc.string({ unit: 'grapheme' })), (method) => {
        const d = decide(b, { identity: alice, server: 'db', method, from: 'server', args: {}, time });
        const allowed = method === name || method.startsWith('roots/');
        return (d.effect === 'allow') === allowed;
      }),
      { numRuns: 2000 },
    );
  });

  it('resources, prompts and completion map to the right selectors', () => {
    const b = compileBundle({
      'p.yaml': policy(
        'db',
        '  - { name: docs, effect: allow, resources: ["demo://docs/*.md"] }\n  - { name: greet, effect: allow, prompts: [greeting] }\n  - { name: tools-only, effect: allow, tools: ["*"] }\n',
      ),
    });
    const req = (method: string, extra: Partial<DecisionInput>) => decide(b, { identity: alice, server: 'db', method, time, ...extra }).effect;
    assert.equal(req('resources/read', { resource: 'demo://docs/a.md' }), 'allow');
    assert.equal(req('resources/subscribe', { resource: 'demo://docs/a.md' }), 'allow');
    assert.equal(req('resources/read', { resource: 'demo://docs/sub/a.md' }), 'deny');
    assert.equal(req('prompts/get', { prompt: 'greeting' }), 'allow');
    assert.equal(req('prompts/get', { prompt: 'other' }), 'deny');
    assert.equal(req('completion/complete', { prompt: 'greeting', args: { name: 'a' } }), 'allow');
    assert.equal(req('completion/complete', { resource: 'demo://docs/x.md', args: {} }), 'allow');
    assert.equal(req('completion/complete', { prompt: 'other', args: {} }), 'deny');
    // tools: ["*"] does not reach resources.
    assert.equal(req('resources/read', { resource: 'demo://other' }), 'deny');
    // A tools/call without a tool name is malformed and denied.
    assert.equal(decide(b, { identity: alice, server: 'db', method: 'tools/call', time }).rule, '(malformed request)');
  });

  it('a rule with no selector governs tools, resources and prompts', () => {
    const b = compileBundle({ 'p.yaml': policy('db', '  - { name: everything, effect: deny, who: { sub: bob } }\n', 'default: allow\n') });
    assert.equal(decide(b, tool('q', {}, bob)).effect, 'deny');
    assert.equal(decide(b, { identity: bob, server: 'db', method: 'prompts/get', prompt: 'p', time }).effect, 'deny');
    assert.equal(decide(b, { identity: bob, server: 'db', method: 'resources/read', resource: 'x://y', time }).effect, 'deny');
    assert.equal(decide(b, tool('q', {}, alice)).effect, 'allow');
  });
});

describe('names are compared exactly', () => {
  const b = compileBundle({
    'p.yaml': policy('db', '  - { name: echo, effect: allow, tools: [echo] }\n  - { name: prefix, effect: allow, tools: ["read_*"] }\n  - { name: middle, effect: allow, tools: ["a*b*c"] }\n'),
  });
  const effect = (t: string) => decide(b, tool(t)).effect;
  it('case, whitespace and lookalikes are other names', () => {
    assert.equal(effect('echo'), 'allow');
    for (const other of ['Echo', 'ECHO', 'echo ', ' echo', 'echo\n', 'ech\u043e' /* Cyrillic o */, 'e\u0301cho', 'echo\u200b', '\uff45cho' /* fullwidth e */, '']) {
      assert.equal(effect(other), 'deny', JSON.stringify(other));
    }
  });
  it('"*" matches any run, prefixes anchor', () => {
    assert.equal(effect('read_'), 'allow');
    assert.equal(effect('read_file'), 'allow');
    assert.equal(effect('read_a/b'), 'allow');
    assert.equal(effect('xread_file'), 'deny');
    assert.equal(effect('Read_file'), 'deny');
    assert.equal(effect('abc'), 'allow');
    assert.equal(effect('a-b-c'), 'allow');
    assert.equal(effect('acb'), 'deny');
    assert.equal(effect('abcx'), 'deny');
  });
  it('server names are exact too', () => {
    assert.equal(decide(b, tool('echo', {}, alice, 'DB')).effect, 'deny');
    assert.equal(decide(b, tool('echo', {}, alice, 'db ')).effect, 'deny');
  });
  it('resource globs: "*" stays in a segment, "**" crosses; a URI that is not canonical is denied as malformed', () => {
    const r = compileBundle({ 'p.yaml': policy('fs', '  - { name: data, effect: allow, resources: ["file:///srv/data/**", "demo://doc/*.md", "file:///exact/../x"] }\n') });
    const decision = (uri: string) => decide(r, { identity: alice, server: 'fs', method: 'resources/read', resource: uri, time });
    const read = (uri: string) => decision(uri).effect;
    assert.equal(read('file:///srv/data/a/b/c.txt'), 'allow');
    assert.equal(read('file:///srv/data/'), 'allow');
    assert.equal(read('file:///srv/data'), 'deny');
    assert.equal(read('file:///srv/data/..hidden'), 'allow');
    assert.equal(read('demo://doc/a.md'), 'allow');
    assert.equal(read('demo://doc/a/b.md'), 'deny');
    assert.equal(read('demo://doc/a.MD'), 'deny');
    for (const uri of ['file:///srv/data/../secret', 'file:///srv/data/%2e%2E/secret', 'file:///srv/data/..%2fsecret', 'file:///srv/data/a/./b', 'file:///exact/../x', 'FILE:///srv/data/a', 'file:///srv/data/a\tb']) {
      const d = decision(uri);
      assert.equal(d.effect, 'deny', uri);
      assert.equal(d.rule, MALFORMED, uri);
      assert.match(d.message!, /^the URI is not canonical: /, uri);
    }
  });
});

describe('when conditions', () => {
  const b = compileBundle({
    'p.yaml': policy(
      'db',
      [
        '  - name: analysts-select',
        '    effect: allow',
        '    who: { groups: [analysts] }',
        '    tools: [query]',
        '    when: \'args.sql.matches("(?i)^\\\\s*select\\\\b")\'',
        '  - name: limit',
        '    effect: deny',
        '    tools: [query]',
        '    when: has(args.limit) && args.limit > 1000',
        '    message: at most 1000 rows',
        '  - name: business-hours',
        '    effect: allow',
        '    tools: [report]',
        '    when: time.getHours("UTC") >= 8 && time.getHours("UTC") < 18 && identity.claims.dept == "finance"',
        '',
      ].join('\n'),
    ),
  });
  it('allows on args that satisfy the condition, including RE2 (?i)', () => {
    assert.equal(decide(b, tool('query', { sql: '  SELECT * from t' })).effect, 'allow');
    assert.equal(decide(b, tool('query', { sql: 'delete from t' })).rule, 'p-db/default');
  });
  it('deny rules carry their message', () => {
    const d = decide(b, tool('query', { sql: 'select 1', limit: 5000 }));
    assert.deepEqual([d.effect, d.rule, d.message], ['deny', 'p-db/limit', 'at most 1000 rows']);
  });
  it('a missing argument is a runtime error: deny naming the rule and the error', () => {
    const d = decide(b, tool('query', {}));
    assert.equal(d.effect, 'deny');
    assert.equal(d.rule, 'p-db/analysts-select');
    assert.match(d.message!, /could not be evaluated: .*No such key: sql/);
  });
  it('a wrong argument type is a runtime error too', () => {
    const d = decide(b, tool('query', { sql: 42 }));
    assert.deepEqual([d.effect, d.rule], ['deny', 'p-db/analysts-select']);
  });
  it('time and identity are available', () => {
    assert.equal(decide(b, tool('report')).effect, 'allow');
    assert.equal(decide(b, { ...tool('report'), time: new Date('2026-03-02T22:00:00Z') }).effect, 'deny');
    assert.equal(decide(b, tool('report', {}, bob)).effect, 'deny');
  });
  it('a failing allow rule denies even when another rule would approve', () => {
    const c = compileBundle({
      'p.yaml': policy('db', '  - { name: ok, effect: approve, tools: [t], approvers: { groups: [x] } }\n  - { name: broken, effect: allow, tools: [t], when: "args.n > 1" }\n'),
    });
    const d = decide(c, tool('t', {}));
    assert.deepEqual([d.effect, d.rule], ['deny', 'p-db/broken']);
  });
  it('a when on another identity is not evaluated', () => {
    const c = compileBundle({ 'p.yaml': policy('db', '  - { name: eng, effect: allow, who: { groups: [engineers] }, tools: [t], when: "args.n > 1" }\n  - { name: all, effect: allow, tools: [t] }\n') });
    assert.equal(decide(c, tool('t', {}, alice)).effect, 'allow');
  });
});

describe('visible', () => {
  const b = compileBundle({
    'p.yaml': policy(
      'db',
      [
        '  - { name: echo, effect: allow, tools: [echo, get-sum] }',
        '  - { name: env, effect: deny, tools: [get-env] }',
        '  - { name: big, effect: deny, tools: ["*"], when: "size(args) > 10" }',
        '  - { name: exec, effect: approve, who: { groups: [engineers] }, tools: [execute], approvers: { groups: [dba] } }',
        '  - { name: hide-from-bob, effect: deny, who: { sub: bob }, tools: [echo] }',
        '  - { name: docs, effect: allow, resources: ["demo://doc/*"] }',
        '',
      ].join('\n'),
    ),
  });
  it('shows what an allow or approve rule could let the caller use, hides unconditional denies', () => {
    assert.equal(visible(b, alice, 'db', 'tool', 'echo'), true);
    assert.equal(visible(b, bob, 'db', 'tool', 'echo'), false);
    assert.equal(visible(b, alice, 'db', 'tool', 'get-env'), false);
    assert.equal(visible(b, alice, 'db', 'tool', 'execute'), false);
    assert.equal(visible(b, bob, 'db', 'tool', 'execute'), true);
    assert.equal(visible(b, alice, 'db', 'tool', 'Echo'), false);
    assert.equal(visible(b, alice, 'db', 'resource', 'demo://doc/a'), true);
    assert.equal(visible(b, alice, 'db', 'prompt', 'echo'), false);
    assert.equal(visible(b, alice, 'other', 'tool', 'echo'), false);
  });
  it('a default allow makes unnamed items visible', () => {
    const c = compileBundle({ 'p.yaml': policy('db', '  - { name: env, effect: deny, tools: [get-env] }\n', 'default: allow\n') });
    assert.equal(visible(c, alice, 'db', 'tool', 'anything'), true);
    assert.equal(visible(c, alice, 'db', 'tool', 'get-env'), false);
  });
});

describe('conditions take linear time in what the agent sends', () => {
  // Patterns that make a backtracking engine take exponential time on a near-miss input.
  const catastrophic = ['(a+)+$', '(a|aa)*b', '(a*)*c', '^(\\\\w+\\\\s?)*$', '(x+x+)+y'];
  const b = compileBundle({
    'p.yaml': policy('db', catastrophic.map((re, i) => `  - { name: r${i}, effect: deny, tools: [t${i}], when: 'args.s.matches("${re}")' }\n  - { name: ok${i}, effect: allow, tools: [t${i}] }\n`).join('')),
  });
  const inputs = ['a'.repeat(100_000) + '!', 'a'.repeat(100_000) + '!', 'a'.repeat(100_000) + '!', 'ab '.repeat(33_333) + '!', 'x'.repeat(100_000)];

  for (const [i, re] of catastrophic.entries()) {
    it(`${re.replaceAll("\\\\", "\\")} against a 100 KB argument is decided within 50 ms`, () => {
      decide(b, tool(`t${i}`, { s: 'warm up' }));
      // The best of three decide calls: the pattern's cost, not the shared machine's scheduling.
      let best = Infinity;
      let effect = '';
      for (let run = 0; run < 3; run++) {
        const t0 = performance.now();
        effect = decide(b, tool(`t${i}`, { s: inputs[i] })).effect;
        best = Math.min(best, performance.now() - t0);
      }
      assert.equal(effect, 'allow'); // the near miss does not match
      assert.ok(best < 50, `took ${best.toFixed(1)} ms`);
      assert.equal(decide(b, tool(`t${i}`, { s: inputs[i].slice(0, -1) + (i === 1 ? 'b' : i === 2 ? 'c' : i === 4 ? 'y' : '') })).effect, 'deny');
    });
  }
});
