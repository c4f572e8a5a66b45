// Config sections load only when they can be in force: the admin API needs a way in, policy from
// the store needs nothing else, approvals take a timeout and signed webhooks. Every problem is
// one line (file:line: field: message), reported with every other config error at once.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatProblem, PortcullisError } from '../errors.js';
import { parseConfig } from './load.js';

const BASE = 'servers:\n  files: { transport: stdio, command: node }\npolicy:\n  path: ./policies\n';

function problems(text: string): string[] {
  try {
    parseConfig(text, 'portcullis.yaml', {});
  } catch (e) {
    assert.ok(e instanceof PortcullisError && e.code === 'PCL_CONFIG_INVALID', String(e));
    return e.problems.map(formatProblem);
  }
  return [];
}

describe('config: admin, policy source and approvals', () => {
  test('a config without them loads, and the admin API is off', () => {
    assert.deepEqual(problems(BASE), []);
    assert.equal(parseConfig(BASE, 'portcullis.yaml', {}).config.admin, undefined);
  });

  test('admin with a token or a group loads, on loopback port 8081 by default', () => {
    const { config } = parseConfig(`${BASE}admin:\n  tokens: [ { id: ops, sha256: "${'a'.repeat(64)}" } ]\n`, 'portcullis.yaml', {});
    assert.deepEqual(config.admin?.listen, { host: '127.0.0.1', port: 8081, allowedOrigins: [], allowedHosts: [] });
    assert.deepEqual(problems(`${BASE}admin: { groups: [ops] }\n`), []);
  });

  test('admin without a way in is refused, with its line', () => {
    assert.deepEqual(problems(`${BASE}admin: {}\n`), ['portcullis.yaml:5: admin: the admin API needs a way in: add tokens (id, sha256) or groups']);
    assert.equal(problems(`${BASE}admin:\n  tokens: [ { id: ops, sha256: short } ]\n`).length, 1);
  });

  test('share: credential on a stdio server; shareIdle only with it', () => {
    const shared = (extra: string) => `servers:\n  files: { transport: stdio, command: node${extra} }\npolicy:\n  path: ./policies\n`;
    const files = (extra: string) => parseConfig(shared(extra), 'portcullis.yaml', {}).config.servers.files as { share: string; shareIdle?: number };
    assert.deepEqual([files('').share, files('').shareIdle], ['none', undefined]);
    assert.deepEqual([files(', share: credential').share, files(', share: credential, shareIdle: 2m').shareIdle, files(', share: credential, shareIdle: 0').shareIdle], ['credential', 120_000, 0]);
    assert.deepEqual(problems(shared(', shareIdle: 2m')), ['portcullis.yaml:2: servers.files.shareIdle: shareIdle applies only with share: credential']);
    assert.equal(problems(shared(', share: everyone')).length, 1);
  });

  test('policy.source: store needs no path; a folder needs one', () => {
    assert.deepEqual(problems('servers:\n  files: { transport: stdio, command: node }\npolicy:\n  source: store\n'), []);
    assert.equal(problems('servers:\n  files: { transport: stdio, command: node }\npolicy:\n  source: folder\n').length, 1);
  });

  test('approvals: a timeout and webhooks (http or https, a signing secret of 16 characters or more)', () => {
    assert.deepEqual(problems(`${BASE}approvals:\n  timeout: 5m\n  webhooks: [ { url: "https://hooks.example.com/a", secret: "0123456789abcdef" } ]\n`), []);
    assert.deepEqual(
      problems(`${BASE}approvals:\n  timeout: soon\n  webhooks: [ { url: "ftp://hooks.example.com/a", secret: short } ]\n`).map((p) => p.split(': ').slice(0, 2).join(': ')),
      ['portcullis.yaml:6: approvals.timeout', 'portcullis.yaml:7: approvals.webhooks.0.url', 'portcullis.yaml:7: approvals.webhooks.0.secret'],
    );
  });
});
