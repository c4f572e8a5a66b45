// The tests on another Node release than the machine's:
//
//   npm run test:node -- 22                    # the whole suite (npm test) on Node 22
//   npm run test:node -- 24 src/x.test.ts …    # these test files on Node 24
//   npm run test:node -- 22,24 src/x.test.ts … # on each in turn (both prepared at once)
//
// Node comes from the npm registry (test/fixtures/node-release.ts pins the release per major),
// and better-sqlite3 is built for it: a native addon's ABI differs per Node major. The project's
// node_modules holds the build for the machine's Node, so the tests run from a copy of this
// checkout (its files as `git ls-files` lists them, uncommitted changes included, and dist/) whose
// node_modules links every package of the project's, except better-sqlite3, which links the
// build for that Node. The copy is made afresh on every run in $TMPDIR/portcullis-test-node/ (test
// output names files there); not under node_modules, where the program takes itself for an
// installed package (init suggests `npx portcullis`). That Node's bin comes first in PATH, so
// `npm` and `npx` started by a test run on it too. The exit status is the tests'.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, realpathSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, delimiter, dirname, join } from 'node:path';
import { betterSqlite3For, isNodeMajor, NODE_RELEASES, nodeRelease, ROOT, withLock, type NodeRelease } from '../test/fixtures/node-release.js';

const seconds = (since: number) => `${((performance.now() - since) / 1000).toFixed(0)} s`;

/** The node flags of package.json's test script, so that both run the tests the same way. */
async function testFlags(): Promise<string[]> {
  const { scripts } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const m = /&& node ([^$&|;]+) \$\(find src test -name '\*\.test\.ts' \| sort\)$/.exec(scripts.test ?? '');
  if (!m) throw new Error(`test-node: package.json's test script is not "… && node <flags> $(find src test -name '*.test.ts' | sort)" any more; update scripts/test-node.ts`);
  return m[1]!.trim().split(/\s+/);
}

/** Copies the checkout's files into `copy` (replacing what was there) and links its node_modules. */
async function syncCopy(copy: string, sqlite: string): Promise<void> {
  const listed = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (listed.status !== 0) throw new Error(`test-node: \`git ls-files\` failed in ${ROOT} (a git checkout is needed): ${listed.stderr || listed.error?.message}`);
  await rm(copy, { recursive: true, force: true });
  for (const file of listed.stdout.split('\0').filter(Boolean)) {
    const from = join(ROOT, file);
    if (existsSync(from)) await cp(from, join(copy, file)); // a deleted file is still listed until committed
  }
  // dist/ is ignored but built (npm install's prepare); tests that run bin/portcullis.js use it
  if (existsSync(join(ROOT, 'dist'))) await cp(join(ROOT, 'dist'), join(copy, 'dist'), { recursive: true });
  // Symbolic links, so nothing run in the copy can write into the project's packages; a package
  // resolves its own dependencies from where it really is, the project's node_modules.
  const modules = join(ROOT, 'node_modules');
  await mkdir(join(copy, 'node_modules'));
  for (const entry of await readdir(modules)) {
    if (entry === '.package-lock.json') continue; // describes the project's tree, not this one
    const target = entry === 'better-sqlite3' ? sqlite : realpathSync(join(modules, entry));
    await symlink(target, join(copy, 'node_modules', entry));
  }
}

async function runTests(release: NodeRelease, copy: string, files: string[]): Promise<number> {
  // No npm_* of an enclosing `npm run`: they name this checkout (npm_config_local_prefix) and
  // the machine's Node headers (npm_config_nodedir).
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
  env.PATH = `${dirname(release.node)}${delimiter}${process.env.PATH ?? ''}`;
  const [command, args] = files.length ? [release.node, [...(await testFlags()), ...files]] : ['npm', ['test']];
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: copy, env, stdio: 'inherit' });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

async function main(): Promise<number> {
  const [list, ...files] = process.argv.slice(2);
  const majors = (list ?? '').split(',');
  if (!majors.every(isNodeMajor)) {
    process.stderr.write(`usage: npm run test:node -- <${Object.keys(NODE_RELEASES).join('|')}>[,…] [test files…]\n`);
    return 2;
  }
  const missing = files.filter((f) => !/\.test\.ts$/.test(f) || !existsSync(join(ROOT, f)));
  if (missing.length) {
    process.stderr.write(`test-node: not test files of this checkout (paths relative to ${ROOT}): ${missing.join(' ')}\n`);
    return 2;
  }
  const started = performance.now();
  // Every release's install and build at once (a build is mostly one compiler process: SQLite),
  // then the tests on each in turn, all of them whatever the first gives.
  const ready = await Promise.all(majors.map(async (major) => {
    const release = await nodeRelease(major);
    return { release, sqlite: await betterSqlite3For(release) };
  }));
  process.stdout.write(`test-node: Node ${ready.map((r) => r.release.version).join(', ')} and better-sqlite3 for each ready (${seconds(started)})\n`);
  let status = 0;
  for (const { release, sqlite } of ready) {
    const copy = join(tmpdir(), 'portcullis-test-node', `${basename(ROOT)}-${createHash('sha256').update(ROOT).digest('hex').slice(0, 8)}-node${release.version}`);
    // one run per checkout and release at a time: a second would replace the files under the first
    const code = await withLock(
      copy,
      async () => {
        await syncCopy(copy, sqlite);
        const testsStarted = performance.now();
        process.stdout.write(`test-node: ${files.length ? `${files.length} test files` : 'npm test'} on Node ${release.version}, in ${copy}\n`);
        const code = await runTests(release, copy, files);
        process.stdout.write(`test-node: ${files.length ? `${files.length} test files` : 'npm test'} on Node ${release.version}: exit ${code}, ${seconds(testsStarted)}\n`);
        return code;
      },
      0,
    );
    status ||= code;
  }
  return status;
}

process.exitCode = await main().catch((e: Error) => {
  process.stderr.write(`${e.message}\n`);
  return 1;
});
