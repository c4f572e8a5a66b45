import assert from 'node:assert/strict';
import { tempDir } from '../../test/support/temp-dir.js';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { PortcullisError } from '../errors.js';
import type { CompiledBundle } from './compile.js';
import { decide } from './decide.js';
import { PolicySource } from './watch.js';

const doc = (effect: string) => `apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: db }\nserver: db\nrules:\n  - { name: q, effect: ${effect}, tools: [query] }\n`;
const input = { identity: { sub: 'a', groups: [], claims: {}, via: 'local' as const }, server: 'db', method: 'tools/call', tool: 'query', args: {}, time: new Date() };

function until<T>(get: () => T | undefined, ms = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = () => {
      const v = get();
      if (v !== undefined) return resolve(v);
      if (Date.now() - start > ms) return reject(new Error('timed out'));
      setTimeout(tick, 20);
    };
    tick();
  });
}

describe('PolicySource', () => {
  it('an edit puts a new version in force; a broken edit keeps the old one and reports every error', async () => {
    const dir = tempDir('pcl-watch-');
    writeFileSync(join(dir, 'db.yaml'), doc('allow'));
    const reloads: CompiledBundle[] = [];
    const invalid: PortcullisError[] = [];
    const source = new PolicySource(dir, { debounceMs: 30, onReload: (b) => reloads.push(b), onInvalid: (e) => invalid.push(e) });
    try {
      const first = source.current();
      assert.equal(decide(first, input).effect, 'allow');

      writeFileSync(join(dir, 'db.yaml'), doc('deny'));
      const second = await until(() => reloads[0]);
      assert.notEqual(second.version, first.version);
      assert.equal(source.current(), second);
      assert.equal(decide(source.current(), input).effect, 'deny');
      // A bundle taken before the swap keeps deciding under its own version.
      assert.equal(decide(first, input).effect, 'allow');
      assert.equal(decide(first, input).bundleVersion, first.version);

      writeFileSync(join(dir, 'db.yaml'), doc('alow') + '    when: "nope("\n');
      const error = await until(() => invalid[0]);
      assert.equal(error.code, 'PCL_POLICY_INVALID');
      assert.ok(error.problems.length >= 1);
      assert.ok(error.problems.every((p) => p.file?.endsWith('db.yaml') && p.line !== undefined));
      assert.equal(source.current(), second);
      assert.equal(decide(source.current(), input).effect, 'deny');

      // Editors that save by rename are seen too.
      writeFileSync(join(dir, '.db.yaml.tmp'), doc('approve').replace('tools: [query]', 'tools: [query], approvers: { sub: [x] }'));
      renameSync(join(dir, '.db.yaml.tmp'), join(dir, 'db.yaml'));
      const third = await until(() => reloads[1]);
      assert.equal(decide(third, input).effect, 'approve');
    } finally {
      source.close();
    }
  });

  it('a rejected edit that is undone says the version in force is valid again', async () => {
    const dir = tempDir('pcl-watch-');
    writeFileSync(join(dir, 'db.yaml'), doc('allow'));
    const events: string[] = [];
    const source = new PolicySource(dir, {
      watch: false,
      onReload: (b) => events.push(`reload ${b.version}`),
      onInvalid: () => events.push('invalid'),
      onRecovered: (b) => events.push(`recovered ${b.version}`),
    });
    try {
      const version = source.current().version;
      writeFileSync(join(dir, 'db.yaml'), doc('alow'));
      source.reload();
      writeFileSync(join(dir, 'db.yaml'), doc('allow'));
      source.reload();
      source.reload(); // nothing changed and nothing was rejected: no news
      assert.deepEqual(events, ['invalid', `recovered ${version}`]);
    } finally {
      source.close();
    }
  });

  it('watches a single file', async () => {
    const dir = tempDir('pcl-watch-');
    const file = join(dir, 'db.yaml');
    writeFileSync(file, doc('allow'));
    const reloads: CompiledBundle[] = [];
    const source = new PolicySource(file, { debounceMs: 30, onReload: (b) => reloads.push(b) });
    try {
      writeFileSync(file, doc('deny'));
      await until(() => reloads[0]);
      assert.equal(decide(source.current(), input).effect, 'deny');
    } finally {
      source.close();
    }
  });

  it('refuses to start on an invalid bundle', () => {
    const dir = tempDir('pcl-watch-');
    writeFileSync(join(dir, 'db.yaml'), doc('nope'));
    assert.throws(() => new PolicySource(dir, { watch: false }), (e: PortcullisError) => e.code === 'PCL_POLICY_INVALID' && e.problems[0].line === 6);
  });
});
