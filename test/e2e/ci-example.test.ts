// The CI example's staging step (examples/ci/staging.mjs), run as the workflow runs it: the real
// binary, the example policies pushed through the admin API, real calls, assertions on the audit
// log. One check is given a wrong expectation, so the run proves it fails as well as passes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { BIN, ROOT, tempDir } from './harness.js';

test('the staging step passes the example checks and fails a wrong expectation, naming it', async (t) => {
  const dir = tempDir('pcl-ci-');
  t.after(() => dir.remove());
  const checks = JSON.parse(readFileSync(join(ROOT, 'examples/ci/staging-checks.json'), 'utf8'));
  checks.push({ name: 'a wrong expectation', server: 'everything', tool: 'get-env', args: {}, expect: 'allow' });
  const checksFile = join(dir.path, 'checks.json');
  writeFileSync(checksFile, JSON.stringify(checks));
  const child = spawn(process.execPath, ['examples/ci/staging.mjs', 'examples/policies', 'examples/ci/staging.yaml', checksFile], {
    cwd: ROOT,
    env: { ...process.env, PORTCULLIS: `${process.execPath} ${BIN}` },
  });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', () => {});
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  assert.equal(code, 1, stdout);
  for (const c of checks.slice(0, -1)) assert.ok(stdout.includes(`ok   ${c.name}`), stdout);
  assert.match(stdout, /FAIL a wrong expectation: expected allow, decided deny by everything\/never-read-env/);
  assert.match(stdout, new RegExp(`${checks.length - 1} passed, 1 failed`));
});
