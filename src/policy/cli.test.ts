// lint, test and explain through the real CLI, as a user (or CI) runs them.
import assert from 'node:assert/strict';
import { tempDir } from '../../test/support/temp-dir.js';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [join(root, 'test/support/portcullis-from-sources.js'), ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
function folder(files: Record<string, string>): string {
  const dir = tempDir('pcl-cli-');
  for (const [n, t] of Object.entries(files)) writeFileSync(join(dir, n), t);
  return dir;
}
const head = (name: string, server = 'db') => `apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: ${name} }\nserver: ${server}\n`;

const warnings = folder({
  'db.yaml': `${head('db')}rules:
  - name: everyone-everything
    effect: allow
    tools: ["*"]
  - name: engineers-query
    effect: allow
    who: { groups: [engineers] }
    tools: [query]
  - name: writes
    effect: approve
    tools: [execute]
masks:
  - name: nothing
    tools: ["*"]
  - name: unreachable
    tools: [export]
    detectors: [email]
`,
  'crm.yaml': `${head('crm', 'crmm')}rules:\n  - { name: reads, effect: allow, who: { groups: [sales] }, tools: ["get_*"] }\n  - { name: get-contact, effect: allow, who: { groups: [sales] }, tools: [get_contact] }\n  - { name: block, effect: deny, tools: [get_contact] }\n`,
});

describe('portcullis lint', () => {
  it('reports warnings with file, line and rule id; exit 0, or 1 with --strict', () => {
    const r = cli('lint', warnings);
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trim().split('\n');
    const ids = lines.slice(0, -1).map((l) => /\[([a-z-]+)\]/.exec(l)?.[1]);
    assert.deepEqual(ids.sort(), ['allow-all', 'approve-without-approvers', 'mask-matches-nothing', 'shadowed-rule', 'shadowed-rule'].sort());
    assert.match(r.out, /db\.yaml:9: warning \[shadowed-rule\] rules\.1: db\/engineers-query: never decides: db\/everyone-everything/);
    assert.match(r.out, /crm\.yaml:7: warning \[shadowed-rule\] .*crm\/get-contact: never decides: crm\/block .* deny beats allow/);
    assert.match(r.out, /db\.yaml:6: warning \[allow-all\]/);
    assert.equal(lines.at(-1), '0 errors, 5 warnings');
    assert.equal(cli('lint', '--strict', warnings).code, 1);
  });
  it('the unreachable mask is found once the allow-all rule is gone', () => {
    const dir = folder({ 'db.yaml': `${head('db')}rules:\n  - { name: q, effect: allow, tools: [query] }\nmasks:\n  - { name: unreachable, tools: [export], detectors: [email] }\n` });
    const r = cli('lint', dir);
    assert.match(r.out, /db\.yaml:8: warning \[mask-matches-nothing\] .*never applies/);
  });
  it('unknown servers, with a config', () => {
    const cfg = join(folder({}), 'portcullis.yaml');
    writeFileSync(cfg, 'servers:\n  db: { transport: stdio, command: "true" }\n  crm: { transport: stdio, command: "true" }\n');
    const r = cli('lint', warnings, '-c', cfg, '--format', 'json');
    const report = JSON.parse(r.out) as { findings: { ruleId: string; file: string; line: number }[]; errors: number; warnings: number };
    const unknown = report.findings.filter((f) => f.ruleId === 'unknown-server');
    assert.equal(unknown.length, 1);
    assert.ok(unknown[0].file.endsWith('crm.yaml'));
    assert.equal(unknown[0].line, 1);
    assert.equal(report.warnings, 6);
  });
  it('errors exit 1, in every format; SARIF has the 2.1.0 shape', () => {
    const dir = folder({ 'bad.yaml': `${head('bad')}rules:\n  - { name: x, effect: allow, when: 'args.sql.matches("(")' }\n  - { name: y, effect: allow, tools: query }\n` });
    const text = cli('lint', dir);
    assert.equal(text.code, 1);
    assert.match(text.out, /bad\.yaml:6: error \[regex\] rules\.0\.when: invalid regular expression/);
    assert.match(text.out, /bad\.yaml:7: error \[schema\] rules\.1\.tools/);
    const sarif = cli('lint', dir, '--format', 'sarif');
    assert.equal(sarif.code, 1);
    const s = JSON.parse(sarif.out);
    assert.equal(s.version, '2.1.0');
    assert.equal(s.runs[0].tool.driver.name, 'portcullis');
    const results = s.runs[0].results as { ruleId: string; level: string; message: { text: string }; locations: { physicalLocation: { artifactLocation: { uri: string }; region: { startLine: number } } }[] }[];
    assert.equal(results.length, 2);
    for (const res of results) {
      assert.equal(res.level, 'error');
      assert.ok(res.message.text.length > 0);
      assert.ok(res.locations[0].physicalLocation.artifactLocation.uri.endsWith('bad.yaml'));
      assert.ok(res.locations[0].physicalLocation.region.startLine >= 1);
      assert.ok(s.runs[0].tool.driver.rules.some((d: { id: string }) => d.id === res.ruleId));
    }
  });
  it('bad usage exits 2', () => {
    assert.equal(cli('lint', warnings, '--format', 'xml').code, 2);
  });
  it("init's suggested lint command checks the policies against the config's servers", () => {
    const dir = join(folder({}), 'project');
    const init = cli('init', dir);
    assert.equal(init.code, 0, init.err);
    const next = /^next: portcullis (lint [^&]+?) &&/m.exec(init.out)?.[1];
    assert.ok(next, init.out);
    const lint = next.split(' ');
    assert.deepEqual([lint[1], lint.length], ['-c', 3]);
    assert.deepEqual([cli(...lint).code, cli(...lint).out], [0, '0 errors, 0 warnings\n']);
    writeFileSync(join(dir, 'policies', 'db.yaml'), `${head('db')}rules:\n  - { name: q, effect: allow, who: { groups: [a] }, tools: [query] }\n`);
    const r = cli(...lint);
    assert.match(r.out, /db\.yaml:1: warning \[unknown-server\] server: policy db: server "db" is not a configured server \(files, everything\)/);
  });
  it('the shipped examples lint clean with --strict', () => {
    const r = cli('lint', '--strict', 'examples/policies');
    assert.equal(r.code, 0, r.out + r.err);
    assert.equal(r.out, '0 errors, 0 warnings\n');
  });
});

describe('portcullis test', () => {
  it('passes on the shipped examples', () => {
    const r = cli('test', 'examples/policies');
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, /^\d+ passed, 0 failed\n$/);
  });
  it('one line per failure with why, a last line N passed, N failed, exit 1; result tests check masking', () => {
    const dir = folder({
      'db.yaml': `${head('db')}rules:\n  - { name: q, effect: allow, tools: [query] }\nmasks:\n  - { name: pii, tools: [query], detectors: [email], who: { groups: [analysts] } }\n`,
      'db.test.yaml': `tests:
  - { name: query ok, server: db, tool: query, expect: allow }
  - { name: wrong expectation, server: db, tool: drop, expect: allow }
  - { name: wrong rule, server: db, tool: query, expect: allow, rule: other }
  - name: emails are masked
    identity: { sub: alice, groups: [analysts] }
    server: db
    tool: query
    result: { content: [ { type: text, text: "mail bob@example.com" } ] }
    expectResult: { content: [ { type: text, text: "mail [REDACTED:email]" } ] }
  - name: not for others
    server: db
    tool: query
    expect: allow
    result: { content: [ { type: text, text: "mail bob@example.com" } ] }
    expectResult: { content: [ { type: text, text: "mail [REDACTED:email]" } ] }
`,
    });
    const r = cli('test', dir);
    assert.equal(r.code, 1);
    const lines = r.out.trim().split('\n');
    assert.equal(lines.length, 4);
    assert.match(lines[0], /db\.test\.yaml:3 wrong expectation: expected allow, got deny by db\/default/);
    assert.match(lines[1], /db\.test\.yaml:4 wrong rule: expected rule other, got allow by db\/q/);
    assert.match(lines[2], /db\.test\.yaml:\d+ not for others: expected result .*got .*mail bob@example\.com/);
    assert.equal(lines[3], '2 passed, 3 failed');
  });
  it('an invalid test file is an error with file and line', () => {
    const dir = folder({ 'db.yaml': `${head('db')}`, 'db.test.yaml': 'tests:\n  - { name: x, server: db, tool: q, expect: alow }\n' });
    const r = cli('test', join(dir, 'db.yaml'));
    assert.equal(r.code, 1);
    assert.match(r.err, /db\.test\.yaml:2: tests\.0\.expect/);
  });
});

describe('portcullis explain', () => {
  it('prints the decision, the rule and why each rule matched or not', () => {
    const r = cli('explain', '--policy', 'examples/policies', '--identity', 'alice', '--groups', 'analysts', '--server', 'everything', '--tool', 'echo', '--args', '{"message":"my token"}');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^decision: DENY by everything\/no-credentials-in-echo \(echo must not carry credentials\)/);
    assert.match(r.out, /matched {2}everything\/anyone-may-echo-and-add/);
    assert.match(r.out, /no match everything\/never-read-env .*\n.*tool "echo" matches none of tools \["get-env"\]/);
    assert.match(r.out, /policy files .*does not cover this server/);
  });
  it('shows a when that fails at runtime', () => {
    const dir = folder({ 'db.yaml': `${head('db')}rules:\n  - { name: sel, effect: allow, tools: [query], when: 'args.sql.startsWith("select")' }\n` });
    const r = cli('explain', '--policy', dir, '--identity', 'bob', '--server', 'db', '--tool', 'query', '--json');
    const e = JSON.parse(r.out);
    assert.equal(e.decision.effect, 'deny');
    assert.equal(e.decision.rule, 'db/sel');
    assert.match(e.rules[0].when.error, /No such key: sql/);
  });
  it('explains a request the server sends to the client (--server-request), governed only by serverRequests', () => {
    const dir = folder({ 'db.yaml': `${head('db')}default: allow\nrules:\n  - { name: every-method, effect: allow, methods: ["*"] }\n  - { name: small, effect: allow, who: { groups: [analysts] }, serverRequests: [sampling/createMessage], when: 'args.maxTokens <= 100' }\n` });
    const ok = cli('explain', '--policy', dir, '--identity', 'alice', '--groups', 'analysts', '--server', 'db', '--server-request', 'sampling/createMessage', '--args', '{"maxTokens":50}');
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, /^decision: ALLOW by db\/small/);
    assert.match(ok.out, /no match db\/every-method .*\n.*the rule governs only methods, not this server request/);
    const no = cli('explain', '--policy', dir, '--identity', 'alice', '--server', 'db', '--server-request', 'roots/list');
    assert.match(no.out, /^decision: DENY by \(no rule allows this server request\)/);
    assert.equal(cli('explain', '--policy', dir, '--identity', 'a', '--server', 'db', '--server-request', 'roots/list', '--method', 'x').code, 2);
  });
  it('reads the policy path from a config with -c', () => {
    const r = cli('explain', '-c', 'examples/demo/portcullis.yaml', '--identity', 'anonymous', '--server', 'files', '--tool', 'write_file', '--args', '{"path":"a.md","content":"x"}');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^decision: APPROVE by files\/writes-need-a-maintainer/);
    assert.match(r.out, /approvers: group maintainers/);
  });
});
