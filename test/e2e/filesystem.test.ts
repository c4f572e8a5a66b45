// The real @modelcontextprotocol/server-filesystem (stdio, a temp directory) through the
// gateway's HTTP front: its tools work on real files, and its roots round trip works.
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { ListRootsRequestSchema, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { connectHttp, startTestGateway, tempDir, upstreams, waitFor, type TestGateway } from './harness.js';

const text = (r: unknown) => ((r as CallToolResult).content as Array<{ text?: string }>).map((c) => c.text ?? '').join('\n');

let gw: TestGateway;
const dir = tempDir('pcl-fs-');
const root = realpathSync(dir.path);
const other = join(root, 'other-root');
mkdirSync(other);

before(async () => {
  gw = await startTestGateway({ files: upstreams.filesystem(root) });
});
after(async () => {
  await gw?.close();
  dir.remove();
});

describe('server-filesystem through /mcp/files', () => {
  let client: Client;
  before(async () => {
    client = await connectHttp(gw.url('files'));
  });
  after(async () => {
    await client?.close();
  });

  test('list_allowed_directories names the temp directory', async () => {
    const r = (await client.callTool({ name: 'list_allowed_directories', arguments: {} })) as CallToolResult;
    assert.equal(text(r), `Allowed directories:\n${root}`);
    assert.deepEqual(r.structuredContent, { content: `Allowed directories:\n${root}` });
  });

  test('write_file then read_text_file: the file is really written, and read back', async () => {
    const path = join(root, 'notes', 'hello.txt');
    mkdirSync(join(root, 'notes'));
    const content = 'first line\nzweite Zeile — ünïcödé ✓\n{"json": [1, 2, 3]}\n';
    const w = await client.callTool({ name: 'write_file', arguments: { path, content } });
    assert.equal(text(w), `Successfully wrote to ${path}`);
    assert.equal(readFileSync(path, 'utf8'), content);
    const r = (await client.callTool({ name: 'read_text_file', arguments: { path } })) as CallToolResult;
    assert.equal(text(r), content);
    assert.deepEqual(r.structuredContent, { content });
    const head = await client.callTool({ name: 'read_text_file', arguments: { path, head: 1 } });
    assert.equal(text(head), 'first line');
  });

  test('a path outside the allowed directory is refused by the server, and the session goes on', async () => {
    const r = (await client.callTool({ name: 'read_text_file', arguments: { path: '/etc/hostname' } })) as CallToolResult;
    assert.equal(r.isError, true);
    assert.match(text(r), /outside allowed directories|Access denied/i);
    writeFileSync(join(root, 'after.txt'), 'ok');
    assert.equal(text(await client.callTool({ name: 'read_text_file', arguments: { path: join(root, 'after.txt') } })), 'ok');
  });
});

describe('roots through /mcp/files', () => {
  test('a client that declares roots is asked roots/list; the server then allows exactly those roots', async () => {
    let asked = 0;
    const client = await connectHttp(gw.url('files'), { capabilities: { roots: { listChanged: true } } }, (c) =>
      c.setRequestHandler(ListRootsRequestSchema, async () => {
        asked++;
        return { roots: [{ uri: pathToFileURL(other).href, name: 'other' }] };
      }),
    );
    try {
      // The server asks right after notifications/initialized; the client keeps its GET stream open for it.
      const listed = await waitFor(
        'the server to adopt the client\'s roots',
        async () => {
          const t = text(await client.callTool({ name: 'list_allowed_directories', arguments: {} }));
          return t === `Allowed directories:\n${other}` && t;
        },
        8_000,
        100,
      );
      assert.equal(listed, `Allowed directories:\n${other}`);
      assert.ok(asked >= 1);
    } finally {
      await client.close();
    }
  });
});
