import fc from 'fast-check';
import assert from 'node:assert/strict';
import { posix } from 'node:path';
import { describe, it } from 'node:test';
import type { Identity } from '../auth/identity.js';
import { compileBundle } from './compile.js';
import { decide, MALFORMED, visible } from './decide.js';
import { NAME, resolved, uriSpellings } from '../../test/support/uri-spellings.js';
import { templateProblem, uriProblem } from './uri.js';

const alice: Identity = { sub: 'alice', groups: [], claims: {}, via: 'api-key' };
const time = new Date('2026-03-02T10:00:00Z');
const doc = (name: string, def: string, rules: string) =>
  `apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: ${name} }\nserver: ${name}\ndefault: ${def}\nrules:\n${rules}`;
const bundle = compileBundle({
  'open.yaml': doc('open', 'allow', '  - { name: secret, effect: deny, resources: ["file:///srv/secret/**", "demo://host/secret/**"] }\n'),
  'closed.yaml': doc('closed', 'deny', '  - { name: public, effect: allow, resources: ["file:///srv/public/**", "demo://host/public/**"] }\n'),
});
const read = (server: string, uri: string) => decide(bundle, { identity: alice, server, method: 'resources/read', resource: uri, time });

const BASES = [
  { scheme: 'file', host: '', root: ['srv'] },
  { scheme: 'demo', host: 'host', root: [] },
];
const spellings = (dir: string) => uriSpellings(BASES, dir);
const under = (uri: string | undefined, dir: string) => uri !== undefined && (uri.startsWith(`file:///srv/${dir}/`) || uri.startsWith(`demo://host/${dir}/`));
const RUNS = { numRuns: 3000 };

describe('one resource, one decision: every spelling', () => {
  it('a deny rule under default: allow holds for every spelling that resolves into its subtree', () => {
    let refused = 0;
    fc.assert(
      fc.property(spellings('secret'), (uri) => {
        if (!under(resolved(uri), 'secret')) return;
        const problem = uriProblem(uri);
        if (problem) refused++;
        const d = read('open', uri);
        assert.equal(d.effect, 'deny', `${JSON.stringify(uri)} resolves to ${resolved(uri)} and was ${d.effect} by ${d.rule}`);
        assert.equal(d.rule, problem ? MALFORMED : 'open/secret', JSON.stringify(uri));
      }),
      RUNS,
    );
    assert.ok(refused > 300, `the generator makes non-canonical spellings (${refused})`);
  });

  it('under default: deny, nothing that resolves outside the allowed subtree is allowed', () => {
    fc.assert(
      fc.property(fc.oneof(spellings('secret'), spellings('public')), (uri) => {
        if (under(resolved(uri), 'public')) return;
        const d = read('closed', uri);
        assert.equal(d.effect, 'deny', `${JSON.stringify(uri)} resolves to ${resolved(uri)} and was allowed by ${d.rule}`);
      }),
      RUNS,
    );
  });

  it('a URI that passes is one the upstream reads as spelled: new URL() keeps it and no path resolution changes it', () => {
    let canonical = 0;
    fc.assert(
      fc.property(fc.oneof(spellings('secret'), spellings('public')), (uri) => {
        if (uriProblem(uri)) return;
        canonical++;
        const u = new URL(uri);
        assert.equal(u.href, uri);
        assert.equal(u.hostname, u.hostname.toLowerCase(), uri);
        const path = decodeURIComponent(u.pathname);
        if (path.startsWith('/')) assert.equal(posix.normalize(path.replace(/\\/g, '/')), path, uri);
      }),
      RUNS,
    );
    assert.ok(canonical > 100, `some spellings are canonical (${canonical})`);
  });

  it('canonical URIs decide as the rules say, in both schemes', () => {
    fc.assert(
      fc.property(fc.constantFrom('file:///srv/', 'demo://host/'), fc.constantFrom('public', 'secret'), fc.array(NAME, { minLength: 1, maxLength: 3 }), (base, dir, names) => {
        const uri = `${base}${dir}/${names.join('/')}`;
        assert.equal(uriProblem(uri), undefined, uri);
        assert.equal(read('open', uri).effect, dir === 'secret' ? 'deny' : 'allow', uri);
        assert.equal(read('closed', uri).effect, dir === 'public' ? 'allow' : 'deny', uri);
      }),
      { numRuns: 500 },
    );
  });
});

describe('uriProblem names the problem', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['file:///srv/public/../secret/a', /dot segment "\.\."/],
    ['file:///srv/./secret/a', /dot segment "\."/],
    ['urn:a/../b', /dot segment/],
    ['file:///srv/public/%2e%2e/secret', /%2e: write %2E \(uppercase hex\)/],
    ['file:///srv/public/%2E%2E/secret', /%2E, an encoded "\."/],
    ['file:///srv/%73ecret/a', /%73, an encoded "s"/],
    ['file:///srv/public/..%2Fsecret', /encoded "\/"/],
    ['file:///srv/public/..%5Csecret', /encoded "\\"/],
    ['file:///srv/a%c3%a9', /write %C3 \(uppercase hex\)/],
    ['file:///srv/public/%252E%252E/secret', /%252E, a "\." or separator encoded twice/],
    ['file:///srv/public/..%252Fsecret', /%252F/],
    ['file:///srv/a%C0%AE', /not UTF-8/],
    ['file:///srv/a%0A', /encoded control/],
    ['file:///srv/a%zz', /not followed by two hex digits/],
    ['file:///srv/sec\tret', /control character \(U\+0009\)/],
    ['file:///srv/secret\n', /control character \(U\+000A\)/],
    [' file:///srv/secret', /whitespace \(U\+0020\)/],
    ['file:///srv/se cret', /whitespace/],
    ['file:///srv/secret\u00a0', /whitespace \(U\+00A0\)/],
    ['file:///srv/public\\..\\secret', /backslash/],
    ['file:///srv/caf\u00e9', /non-ASCII character \(U\+00E9\)/],
    ['file:///srv/a"b', /"""/],
    ['file:///srv//secret/a', /empty path segment/],
    ['FILE:///srv/secret', /scheme must be lowercase \(file:, not FILE:\)/],
    ['demo://HOST/secret', /host must be lowercase \(host\)/],
    ['demo://user@host/secret', /userinfo/],
    ['demo://host:/secret', /empty port/],
    ['demo://host:080/secret', /leading zeros/],
    ['http://example.com:80/x', /servers read it as http:\/\/example.com\/x/],
    ['http://example.com', /servers read it as http:\/\/example.com\//],
    ['file://localhost/srv/secret', /servers read it as file:\/\/\/srv\/secret/],
    ['file:/srv/secret', /servers read it as file:\/\/\/srv\/secret/],
    ['file:///srv/secret?', /empty query/],
    ['file:///srv/secret#', /fragment/],
    ['file:///srv/secret#top', /fragment/],
    ['/srv/secret', /not an absolute URI/],
    ['secret.txt', /not an absolute URI/],
  ];
  for (const [uri, why] of cases) {
    it(JSON.stringify(uri), () => assert.match(uriProblem(uri) ?? 'no problem', why));
  }

  it('accepts the URIs real servers use', () => {
    for (const uri of [
      'demo://resource/static/document/architecture.md',
      'demo://resource/dynamic/text/1',
      'file:///srv/data/',
      'file:///srv/data/report%202026.txt',
      'file:///srv/caf%C3%A9',
      'file:///srv/data/..hidden',
      'file:///',
      'urn:isbn:0451450523',
      'mailto:ops@example.com',
      'https://example.com/a/b?x=1&y=%2F',
      'db://host:5432/table?limit=10',
      'http://[::1]:8080/x',
    ]) {
      assert.equal(uriProblem(uri), undefined, uri);
    }
  });

  it('templates: expressions stand for values; the literal parts must be canonical', () => {
    for (const t of ['demo://resource/dynamic/text/{resourceId}', 'file:///tree/{+path}', 'tree://host/{dir}/{name}', 'db://host/t{?limit,offset}']) assert.equal(templateProblem(t), undefined, t);
    assert.match(templateProblem('file:///tree/../{+path}')!, /dot segment/);
    assert.match(templateProblem('FILE:///tree/{+path}')!, /lowercase/);
    assert.match(templateProblem('file:///tree/{path')!, /not a URI template/);
    assert.match(templateProblem('file:///tree/{a}}')!, /"\}"/);
  });

  it('a pattern without "?" holds for the URI with any query; one with "?" matches it whole', () => {
    const b = compileBundle({
      'q.yaml': doc('q', 'allow', '  - { name: top, effect: deny, resources: ["file:///srv/top.txt", "file:///srv/d/*.txt", "file:///srv/q.txt?v=1"] }\n'),
    });
    const effect = (uri: string) => decide(b, { identity: alice, server: 'q', method: 'resources/read', resource: uri, time }).effect;
    for (const uri of ['file:///srv/top.txt', 'file:///srv/top.txt?v=1', 'file:///srv/top.txt?a/b', 'file:///srv/d/x.txt?raw', 'file:///srv/q.txt?v=1']) assert.equal(effect(uri), 'deny', uri);
    for (const uri of ['file:///srv/top.txt2', 'file:///srv/d/x.md?.txt', 'file:///srv/q.txt', 'file:///srv/q.txt?v=2']) assert.equal(effect(uri), 'allow', uri);
  });

  it('lists hide what no request could name', () => {
    const v = (uri: string) => visible(bundle, alice, 'open', 'resource', uri);
    assert.equal(v('file:///srv/public/a'), true);
    assert.equal(v('file:///srv/public/../secret/a'), false);
    assert.equal(v('FILE:///srv/public/a'), false);
    assert.equal(v('file:///srv/{+path}'), true);
  });
});
