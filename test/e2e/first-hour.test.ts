// What a new user meets in the first hour with `portcullis serve` (from the sources; the packed
// package is test/e2e/pack.test.ts): a config nobody can connect to is said at start, an upstream
// that cannot start is named in the log and in /readyz until it answers, logs read well in a
// terminal, and the /mcp/<server>/mcp form that some MCP Inspector versions produce works.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ALLOW_ALL_POLICY, connectHttp, freePort, raw, runPortcullis, upstreams, waitFor, writeConfig, type Proc } from './harness.js';

const procs: Proc[] = [];
const dirs: { remove(): void }[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  for (const d of dirs) d.remove();
});

async function serve(config: Parameters<typeof writeConfig>[0], extra: string[] = []): Promise<{ proc: Proc; base: string; dir: string }> {
  const port = await freePort();
  const { file, dir } = writeConfig({ ...config, listen: { host: '127.0.0.1', port } }, { 'allow-all.yaml': ALLOW_ALL_POLICY });
  dirs.push(dir);
  const proc = runPortcullis(['serve', '-c', file, ...extra]);
  procs.push(proc);
  await waitFor('serve to listen', () => proc.output().includes('portcullis: listening'), 30_000, 50);
  return { proc, base: `http://127.0.0.1:${port}`, dir: dir.path };
}

describe('serve, as a new user meets it', () => {
  test('nobody can connect: said at start, in a readable line when asked for pretty logs', async () => {
    const { proc } = await serve({ servers: { everything: upstreams.everything() } }, ['--log-format', 'pretty']);
    const line = await waitFor('the warning', () => proc.output().split('\n').find((l) => l.includes('nobody can connect')), 10_000);
    assert.match(line, /^\d\d:\d\d:\d\d WARN +nobody can connect: auth has no oidc, no apiKeys and anonymous is false.*portcullis keys new --id <name>/);
    assert.match(proc.output(), /^\d\d:\d\d:\d\d INFO +gateway listening {2}address=http:\/\/127\.0\.0\.1:\d+ servers=\["everything"\]$/m);
  });

  test('anonymous off loopback is warned about; logs are JSON when not in a terminal', async () => {
    const port = await freePort();
    const { file, dir } = writeConfig({ servers: { everything: upstreams.everything() }, auth: { anonymous: true }, listen: { host: '0.0.0.0', port } });
    dirs.push(dir);
    const proc = runPortcullis(['serve', '-c', file]);
    procs.push(proc);
    const line = await waitFor('the warning', () => proc.output().split('\n').find((l) => l.includes('anonymous is true')), 30_000);
    const record = JSON.parse(line) as { level: number; msg: string };
    assert.equal(record.level, 40);
    assert.match(record.msg, /listens on 0\.0\.0\.0, not on loopback: anyone who can reach 0\.0\.0\.0:\d+ gets the anonymous identity/);
    await proc.stop();
  });

  test('an upstream that cannot start: its first session fails, the log and /readyz say why until it answers; the others serve meanwhile', async () => {
    const { proc, base, dir } = await serve({
      servers: { files: upstreams.filesystem('./shared'), everything: upstreams.everything() },
      auth: { anonymous: true },
    });
    // The filesystem server exits at once: its folder is missing (what `init` used to leave behind).
    await assert.rejects(connectHttp(`${base}/mcp/files`));
    const warning = await waitFor('the warning', () => proc.output().split('\n').find((l) => l.includes('went away before it answered')), 10_000);
    assert.match(JSON.parse(warning).msg, /^upstream files went away before it answered anything \(upstream "files" exited \(code 1\)[^)]*\)\): sessions on \/mcp\/files fail until it can start/);
    assert.match(proc.output(), /"upstream":"files".*"stderr":"Error: None of the specified directories are accessible"/);
    const ready = await raw(base, '/readyz', { method: 'GET' });
    assert.equal(ready.status, 503);
    // /readyz is public: the state only; why is in the log.
    assert.equal(ready.json.checks['upstream:files'], 'cannot start');
    await waitFor('the readiness change in the log', () => /"check":"upstream:files","state":"cannot start","detail":"upstream \\"files\\" exited \(code 1\)[^"]*before it answered"/.test(proc.output()), 5_000);
    assert.equal(ready.json.checks['upstream:everything'], 'ok');

    // The rest of the gateway serves; once the folder exists, a session works and so does /readyz, without a restart.
    await (await connectHttp(`${base}/mcp/everything`)).close();
    mkdirSync(join(dir, 'shared'));
    await (await connectHttp(`${base}/mcp/files`)).close();
    assert.equal((await raw(base, '/readyz', { method: 'GET' })).status, 200);
  });

  test('/mcp/<server>/mcp is the same endpoint as /mcp/<server> (MCP Inspector versions that append /mcp)', async () => {
    const { base } = await serve({ servers: { everything: upstreams.everything() }, auth: { anonymous: true } });
    const client = await connectHttp(`${base}/mcp/everything/mcp`);
    try {
      const echo = await client.callTool({ name: 'echo', arguments: { message: 'through the alias' } });
      assert.match(JSON.stringify(echo.content), /through the alias/);
    } finally {
      await client.close();
    }
    // Only a configured server's name takes the suffix.
    assert.equal((await raw(base, '/mcp/nope/mcp', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status, 404);
  });
});
