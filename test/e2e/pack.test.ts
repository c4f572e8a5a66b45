// The package as a user gets it: this checkout packed (`npm pack`, whose prepare builds dist/), the
// README's install block run as written in an empty folder beside it, then `init`, the `lint` and
// `test` that init suggests, `serve`, and an SDK client with the API key init printed calling
// tools. Also: the packed file list, and the library API (types and runtime) from the package name.
//
// Installing the tarball builds better-sqlite3 from source (a minute or two; the whole file takes
// 2.5–3 minutes here, hence npm test's --test-timeout of 7 minutes per file). Packages come from
// the npm cache (`prefer-offline`): the machine's installs (npm ci in CI) already put them there;
// only what the cache lacks (a package's metadata, for resolving a range) asks the registry.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { CLIENT_INFO, freePort, ROOT, tempDir, waitFor } from './harness.js';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
const TARBALL = `${pkg.name}-${pkg.version}.tgz`;
const dir = tempDir('pcl-pack-');
const CLONE = join(dir.path, 'portcullis'); // where the README's first line packs (a clone named portcullis)
const PROJECT = join(dir.path, 'my-gateway');
const HOME = join(dir.path, 'home');

// A user's environment on this machine: npm reads $HOME/.npmrc. The machine's npm cache first; for
// the native build, the headers of the Node running the tests, from its install prefix (/usr for
// the machine's, as the project's own .npmrc says; the package folder for one scripts/test-node.ts
// installs). No npm_* variables from an enclosing `npm test`: they would point npm at this checkout.
const npmCache = spawnSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' }).stdout.trim();
const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
Object.assign(env, { HOME });

function sh(script: string, cwd: string, timeoutMs = 60_000): SpawnSyncReturns<string> {
  return spawnSync('bash', ['-euo', 'pipefail', '-c', script], { cwd, env, encoding: 'utf8', timeout: timeoutMs });
}
const ok = (r: SpawnSyncReturns<string>, what: string) => assert.equal(r.status, 0, `${what} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);

/** The README's install block: its command lines, comments stripped. */
function readmeInstall(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const block = /<!-- install: run by test\/e2e\/pack\.test\.ts -->\s*```sh\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block, 'README.md has the install block');
  return block
    .split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l && !l.startsWith('#'));
}

let packed: { path: string }[] = [];
let installLog = '';
let key = '';
let initOut = '';
let serve: ChildProcess | undefined;

before(async () => {
  mkdirSync(CLONE, { recursive: true });
  mkdirSync(HOME, { recursive: true });
  writeFileSync(join(HOME, '.npmrc'), `cache=${npmCache}\nprefer-offline=true\nnodedir=${dirname(dirname(process.execPath))}\nfund=false\naudit=false\nupdate-notifier=false\n`);
});

after(async () => {
  if (serve?.pid && serve.exitCode === null) {
    try {
      process.kill(-serve.pid, 'SIGTERM'); // npx, the gateway and its upstreams: one process group
    } catch {}
    await waitFor('serve to stop', () => serve!.exitCode !== null || serve!.signalCode !== null, 15_000).catch(() => process.kill(-serve!.pid!, 'SIGKILL'));
  }
  dir.remove();
});

describe('the package, installed from its tarball into an empty folder', { timeout: 600_000 }, () => {
  test('npm pack builds dist/ and packs only what a user runs and reads', () => {
    const lines = readmeInstall();
    // The README's first line runs in the clone; here the clone is this checkout, packed to CLONE.
    assert.equal(lines[0], 'npm install && npm pack');
    const r = spawnSync('npm', ['pack', '--json', '--pack-destination', CLONE], { cwd: ROOT, env: { ...env, HOME: process.env.HOME }, encoding: 'utf8', timeout: 300_000 });
    ok(r, 'npm pack');
    packed = (JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as [{ files: { path: string }[] }])[0].files;
    const paths = packed.map((f) => f.path).sort();
    assert.ok(existsSync(join(CLONE, TARBALL)));
    for (const must of ['package.json', 'README.md', 'bin/portcullis.js', 'dist/cli/main.js', 'dist/index.js', 'dist/index.d.ts', 'examples/policies/files.yaml', 'schema/policy.schema.json']) {
      assert.ok(paths.includes(must), `${must} is packed`);
    }
    const outside = paths.filter((p) => !/^(package\.json|README\.md|bin\/portcullis\.js|(dist|docs|deploy|examples\/policies|schema)\/.+)$/.test(p));
    assert.deepEqual(outside, [], 'nothing else at the top');
    // (The example policies' tests are shipped on purpose: init copies them into a new project.)
    assert.deepEqual(paths.filter((p) => /\.test\.|testdata|oidc-test-issuer|\.ts$/.test(p) && !p.endsWith('.d.ts') && !p.startsWith('examples/')), [], 'no tests, test data or sources');
    // Every module ships with its types.
    for (const js of paths.filter((p) => p.startsWith('dist/') && p.endsWith('.js'))) assert.ok(paths.includes(js.replace(/\.js$/, '.d.ts')), `${js} has types`);
  });

  test("the README's install block, as written, gives a working `portcullis` command", () => {
    const lines = readmeInstall();
    const serveAt = lines.findIndex((l) => / portcullis serve/.test(l));
    assert.ok(serveAt > 0, 'the block ends with serve');
    // From the line after the clone's, in the clone's folder; serve runs on its own below.
    const r = sh(lines.slice(1, serveAt).join('\n'), CLONE, 400_000);
    ok(r, 'the README install block');
    installLog = r.stdout + r.stderr;
    assert.ok(existsSync(join(PROJECT, 'node_modules/.bin/portcullis')));
    assert.match(r.stdout, new RegExp(`^${pkg.version.replace(/\./g, '\\.')}$`, 'm'), '--version prints the version');
    // tsx and esbuild are for development: a user's install runs built JavaScript.
    assert.equal(existsSync(join(PROJECT, 'node_modules/tsx')), false);
    assert.equal(existsSync(join(PROJECT, 'node_modules/esbuild')), false);
    assert.doesNotMatch(installLog, /EBADENGINE|deprecated/);
    initOut = r.stdout;
    key = /^ {2}(pcl_[A-Za-z0-9_-]+)$/m.exec(initOut)?.[1] ?? '';
    assert.ok(key, `init printed an API key:\n${initOut}`);
    assert.match(initOut, /made data\/files\//);
    assert.ok(existsSync(join(PROJECT, 'data/files')));
  });

  test("init's next steps run: lint and test pass, serve gives a gateway a client can use with the printed key", async () => {
    const next = /^next: (.+)$/m.exec(initOut)?.[1];
    assert.ok(next, initOut);
    const steps = next.split(' && ');
    assert.deepEqual(
      steps.map((s) => s.split(' ').slice(0, 4).join(' ')),
      ['npx --no-install portcullis lint', 'npx --no-install portcullis test', 'npx --no-install portcullis serve'],
    );
    const lint = sh(steps[0], PROJECT);
    ok(lint, steps[0]);
    assert.match(lint.stdout, /^0 errors, 0 warnings$/m);
    const tests = sh(steps[1], PROJECT);
    ok(tests, steps[1]);
    assert.match(tests.stdout, /^\d+ passed, 0 failed$/m);

    // The one change a user makes here: a free port instead of 8080 (tests never use fixed ports).
    const port = await freePort();
    const config = join(PROJECT, 'portcullis.yaml');
    writeFileSync(config, readFileSync(config, 'utf8').replace('port: 8080', `port: ${port}`));
    serve = spawn('bash', ['-c', `exec ${steps[2]}`], { cwd: PROJECT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    serve.stdout!.on('data', (d: Buffer) => (out += d));
    serve.stderr!.on('data', (d: Buffer) => (out += d));
    await waitFor('serve to listen', () => out.includes(`http://127.0.0.1:${port}/mcp/files`) || serve!.exitCode !== null, 60_000, 100);
    assert.equal(serve.exitCode, null, out);
    assert.doesNotMatch(out, /nobody can connect/);
    const base = `http://127.0.0.1:${port}`;
    // Both upstreams start (npx fetches them from the cache), so the gateway turns ready.
    await waitFor('/readyz to be 200', async () => (await fetch(`${base}/readyz`)).status === 200, 120_000, 500).catch(async (e) => {
      throw new Error(`${(e as Error).message}: ${await (await fetch(`${base}/readyz`)).text()}\n${out}`);
    });

    const noKey = await fetch(`${base}/mcp/files`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' });
    assert.equal(noKey.status, 401);

    const connect = async (server: string) => {
      const client = new Client(CLIENT_INFO);
      await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/mcp/${server}`), { requestInit: { headers: { authorization: `Bearer ${key}` } } }));
      return client;
    };
    const files = await connect('files');
    const everything = await connect('everything');
    try {
      const listing = (await files.callTool({ name: 'list_directory', arguments: { path: join(PROJECT, 'data/files') } })) as CallToolResult;
      assert.equal(listing.isError, undefined, JSON.stringify(listing));
      assert.match(JSON.stringify(listing.content), /README\.txt/);
      const echo = (await everything.callTool({ name: 'echo', arguments: { message: 'hello' } })) as CallToolResult;
      assert.match(JSON.stringify(echo.content), /hello/);
      const env_ = (await everything.callTool({ name: 'get-env', arguments: {} })) as CallToolResult;
      assert.equal(env_.isError, true);
      assert.match(JSON.stringify(env_.content), /Denied by policy rule everything\/never-read-env/);
    } finally {
      await files.close();
      await everything.close();
    }
  });

  test('the library API, by the package name: types check and it runs', () => {
    const code = (typed: boolean) => `import { compileBundle, decide, verifyAuditExport${typed ? ', type Decision' : ''} } from 'portcullis';
const bundle = compileBundle({ 'p.yaml': 'apiVersion: portcullis/v1\\nkind: Policy\\nmetadata: { name: p }\\nserver: db\\ndefault: deny\\nrules:\\n  - { name: q, effect: allow, tools: [query] }\\n' });
const d${typed ? ': Decision' : ''} = decide(bundle, { identity: { sub: 'a', groups: [], claims: {}, via: 'api-key' }, server: 'db', method: 'tools/call', tool: 'query', args: {}, time: new Date() });
const report = await verifyAuditExport('');
console.log(d.effect, d.rule, report.ok);
`;
    writeFileSync(join(PROJECT, 'consumer.mts'), code(true));
    writeFileSync(join(PROJECT, 'consumer.mjs'), code(false));
    // A consumer on Node16/NodeNext resolution finds the types through the package's exports.
    const tsc = (file: string) => spawnSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '--noEmit', '--strict', '--skipLibCheck', '--module', 'nodenext', '--target', 'es2022', file], { cwd: PROJECT, encoding: 'utf8' });
    ok(tsc('consumer.mts'), 'tsc on a consumer of the package');
    // The types are real, not `any`: a misuse does not compile.
    writeFileSync(join(PROJECT, 'misuse.mts'), `import { decide, notExported } from 'portcullis';\nconst n: number = decide(null as never, null as never).effect;\n`);
    const misuse = tsc('misuse.mts').stdout;
    assert.match(misuse, /misuse\.mts\(1,18\): error TS2305: Module '"portcullis"' has no exported member 'notExported'/);
    assert.match(misuse, /misuse\.mts\(2,7\): error TS2322: Type '.+' is not assignable to type 'number'/);
    const r = spawnSync(process.execPath, ['consumer.mjs'], { cwd: PROJECT, encoding: 'utf8' });
    ok(r, 'the consumer');
    assert.equal(r.stdout, 'allow p/q true\n');
  });
});
