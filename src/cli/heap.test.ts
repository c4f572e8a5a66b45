import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import { runPortcullis, upstreams, waitFor, writeConfig } from '../../test/e2e/harness.js';
import { growthTuned, HEAP_GROWING_PERCENT, missingServeFlags, SERVE_NODE_FLAGS, tuneHeap } from './heap.js';

test("serve's heap growth is left alone when the operator set one, on the command line or in NODE_OPTIONS", () => {
  assert.equal(tuneHeap(['--heap-growing-percent=20'], ''), undefined);
  assert.equal(tuneHeap(['--heap_growing_percent=20'], ''), undefined);
  assert.equal(tuneHeap([], '--max-semi-space-size=4 --heap-growing-percent=80'), undefined);
  assert.equal(tuneHeap(['--max-semi-space-size=4'], '--max-old-space-size=400', '12.4.254.21-node.33'), `--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  assert.equal(tuneHeap([], '', '13.6.233.17-node.37'), undefined, "Node 24's V8 bounds the heap by itself");
});

test('with the growth set, the old generation stays near 1.5 times what lives through a burst of promoted garbage', { skip: growthTuned() ? false : 'V8 13 (Node 24): serve leaves the growth to V8' }, () => {
  // A child process: V8 flags are per process. Every object lives through two scavenges (a list
  // of up to 100,000 is kept), so garbage reaches the old generation, as a gateway's calls do under load.
  const burst = `let keep = [], peak = 0; const v8 = require('node:v8');
    for (let i = 0; i < 4e6; i++) { keep.push({ a: i, b: 'x' + i }); if (keep.length > 100000) keep = [];
      if (i % 1000 === 0) peak = Math.max(peak, v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space').space_size); }
    process.stdout.write(String(peak / 1048576));`;
  const peakMb = (tuned: boolean) => Number(execFileSync(process.execPath, ['-e', `${tuned ? `require('node:v8').setFlagsFromString('--heap-growing-percent=${HEAP_GROWING_PERCENT}');` : ''}${burst}`], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } }));
  const [untuned, tuned] = [peakMb(false), peakMb(true)];
  // Measured on Node 20 and 22: 48-55 MB without the setting, 31-34 MB with it.
  assert.ok(tuned < untuned * 0.8, `old space peak ${tuned.toFixed(1)} MB with the growth set, ${untuned.toFixed(1)} MB without`);
});

test('the serve flags the process lacks: what the command line and NODE_OPTIONS do not give, - and _ alike', () => {
  assert.deepEqual(missingServeFlags([], ''), [...SERVE_NODE_FLAGS]);
  assert.deepEqual(missingServeFlags(['--max-semi-space-size=4'], '--max_old_space_size=512'), []);
  assert.deepEqual(missingServeFlags(['--import', 'tsx'], '--max-old-space-size=2048'), ['--max-semi-space-size=8']);
});

const canExecve = typeof (process as { execve?: unknown }).execve === 'function';

test('a bare `portcullis serve` runs with the serve flags, as the same process; an operator-given flag is kept', { skip: process.platform !== 'linux' && 'reads /proc' }, async () => {
  const { file, dir } = writeConfig({ listen: { host: '127.0.0.1', port: 0 }, servers: { raw: upstreams.raw() }, auth: { anonymous: true }, logging: { level: 'info' } });
  try {
    for (const nodeOptions of ['', '--max-old-space-size=512']) {
      const serve = runPortcullis(['serve', '-c', file], { env: { NODE_OPTIONS: nodeOptions } });
      try {
        await waitFor('serve to listen', () => /listening; MCP endpoints/.test(serve.output()), 20_000, 50);
        const args = readFileSync(`/proc/${serve.pid}/cmdline`, 'utf8').split('\0');
        const expected = canExecve ? missingServeFlags([], nodeOptions) : [];
        // Node 20 has no process.execve: there the operator passes them (docs/operations.md).
        for (const flag of SERVE_NODE_FLAGS) assert.equal(args.includes(flag), expected.includes(flag), `${flag} in ${JSON.stringify(args.slice(0, 4))} with NODE_OPTIONS="${nodeOptions}"`);
      } finally {
        serve.child.kill('SIGTERM');
        await serve.exited;
      }
    }
  } finally {
    dir.remove();
  }
});
