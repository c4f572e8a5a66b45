// Nothing accepted that is not in force: config sections whose capability this version lacks
// are refused at load, one line each (file:line: field: message), never silently ignored.
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

describe('config: settings not in force are refused', () => {
  test('a config without them loads', () => {
    assert.deepEqual(problems(BASE), []);
  });

  test('admin (tokens, groups): the admin API is not available', () => {
    assert.deepEqual(problems(`${BASE}admin:\n  tokens: [ { id: ops, sha256: "${'a'.repeat(64)}" } ]\n`), [
      'portcullis.yaml:6: admin: the admin API is not available in this version, so this setting would do nothing: remove it',
    ]);
    assert.equal(problems(`${BASE}admin: {}\n`).length, 1, 'even an empty section says it would do nothing');
  });

  test('approvals (timeout, webhooks): holding calls for approval is not available', () => {
    assert.deepEqual(problems(`${BASE}approvals:\n  timeout: 5m\n  webhooks: [ { url: "https://hooks.example.com/a" } ]\n`), [
      'portcullis.yaml:6: approvals: holding calls for approval is not available in this version, so this setting would do nothing: remove it',
    ]);
  });

  test('policy.source: store is refused at load, with its line, not at start', () => {
    assert.deepEqual(problems('servers:\n  files: { transport: stdio, command: node }\npolicy:\n  source: store\n'), [
      'portcullis.yaml:4: policy.path: is required (a string)',
      'portcullis.yaml:4: policy.source: policy pushed through the admin API (source: store) is not available in this version, so this setting would do nothing: remove it',
    ]);
  });

  test('each refusal is reported with every other config error at once', () => {
    const found = problems(`${BASE}admin: { groups: [ops] }\napprovals: { timeout: 1m }\nlimits: { maxBodyBytes: big }\n`);
    assert.deepEqual(found.map((p) => p.split(': ').slice(0, 2).join(': ')), ['portcullis.yaml:7: limits.maxBodyBytes', 'portcullis.yaml:5: admin', 'portcullis.yaml:6: approvals']);
  });
});
