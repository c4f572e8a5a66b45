// Masking end to end, through the gateway wired as `portcullis serve` wires it (real policy files,
// API-key identities, SQLite store): the real server-filesystem and server-everything, and a
// file-resources fixture that records what it received. The client sees masked values, the
// recording in the SQLite file holds no clear secret, the upstream still receives the client's
// arguments unchanged, and two identities see differently per the masks' `who`/`exempt`.
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult, LoggingMessageNotification } from '@modelcontextprotocol/sdk/types.js';
import { LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import Database from 'better-sqlite3';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestArgs } from '../../src/audit/chain.js';
import { hashApiKey } from '../../src/auth/api-keys.js';
import { openStore } from '../../src/store/open.js';
import { CLIENT_INFO, ROOT, startConfiguredGateway, tempDir, upstreams, waitFor, type ConfiguredGateway } from './harness.js';

const FILE_RESOURCES = join(ROOT, 'test/fixtures/file-resources-server.mjs');
const EMAIL = 'bob.smith@example.com';
const AWS_KEY = 'AKIAIOSFODNN7EXAMPLE';
const GITHUB = 'ghp_' + 'x7Kq2mZ9pL4wR8sT1vY6bN3cF5hJ0dG2aE9u';
const SHA = '3f786850e387550fdab836ed7e6dc881de23001b';
const SECRET_FILE = `owner: ${EMAIL}\naws_access_key_id = ${AWS_KEY}\ngithub: ${GITHUB}\ncommit ${SHA}\n`;
const CLEAR = [EMAIL, AWS_KEY, GITHUB];

const KEYS = { alice: 'alice-key-0123456789abcdef', auditor: 'auditor-key-0123456789abcdef' };
const apiKeys = [
  { id: 'alice', sha256: hashApiKey(KEYS.alice), groups: ['staff'] },
  { id: 'auditor', sha256: hashApiKey(KEYS.auditor), groups: ['auditors'] },
];

async function connect(url: string, key: string): Promise<Client> {
  const client = new Client(CLIENT_INFO);
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${key}` } } }));
  return client;
}
const textOf = (r: unknown) => ((r as CallToolResult).content as Array<{ text?: string }>).map((c) => c.text ?? '').join('\n');
/** Every file of the store (the database and its WAL), as text. */
const storeBytes = (dir: string) => readdirSync(join(dir, 'data')).map((f) => readFileSync(join(dir, 'data', f)).toString('latin1')).join('\n');

const FILES_POLICY = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: files }
server: "*"
default: deny
rules:
  - { name: read, effect: allow, tools: [read_text_file, read_file, note, contact], resources: ["file:///**"] }
masks:
  - name: secrets-and-emails
    exempt: { groups: [auditors] }
    detectors: [secrets, email]
  - name: customer-records
    resources: ["file:///*.json"]
    fields: ["$.customer.ssn", "$..card", "$.orders[*].total"]
  - name: contact-dates
    tools: [contact]
    fields: ["$.since", "$.homepage"]
  - name: no-binaries
    resources: ["file:///*.bin"]
    blobs: drop
`;

describe('masking through the gateway: server-filesystem and file resources', () => {
  let gw: ConfiguredGateway;
  let files: { path: string; remove(): void };
  let record: string;
  let stopped = false;
  before(async () => {
    files = tempDir('pcl-mask-files-');
    writeFileSync(join(files.path, 'secrets.txt'), SECRET_FILE);
    writeFileSync(join(files.path, 'customer.json'), JSON.stringify({ customer: { name: 'Bob', ssn: '123-45-6789', email: EMAIL }, orders: [{ total: 12.5, card: '4111 1111 1111 1111' }, { total: 3 }] }, null, 2));
    writeFileSync(join(files.path, 'key.bin'), Buffer.from([0, 1, 2, 3]));
    record = join(files.path, '..', `${files.path.split('/').pop()}-received.jsonl`);
    gw = await startConfiguredGateway(
      {
        servers: {
          fs: upstreams.filesystem(files.path),
          docs: { transport: 'stdio', command: process.execPath, args: [FILE_RESOURCES], env: { FILES_DIR: files.path, RECORD_FILE: record } },
        },
        auth: { apiKeys },
      },
      { 'files.yaml': FILES_POLICY },
    );
  });
  after(async () => {
    if (stopped) rmSync(gw.dir, { recursive: true, force: true });
    else await gw?.close();
    files?.remove();
    rmSync(record, { force: true });
  });

  it('read_text_file and read_file: the client sees masked text and structuredContent; a git SHA stays', async () => {
    const alice = await connect(gw.url('fs'), KEYS.alice);
    for (const tool of ['read_text_file', 'read_file']) {
      const r = (await alice.callTool({ name: tool, arguments: { path: join(files.path, 'secrets.txt') } })) as CallToolResult;
      const expected = `owner: [REDACTED:email]\naws_access_key_id = [REDACTED:aws_access_key]\ngithub: [REDACTED:github_token]\ncommit ${SHA}\n`;
      assert.equal(textOf(r), expected, tool);
      if (r.structuredContent) assert.deepEqual(r.structuredContent, { content: expected });
    }
    await alice.close();
  });

  it('an auditor (exempt) sees the file in clear', async () => {
    const auditor = await connect(gw.url('fs'), KEYS.auditor);
    const r = await auditor.callTool({ name: 'read_text_file', arguments: { path: join(files.path, 'secrets.txt') } });
    assert.equal(textOf(r), SECRET_FILE);
    await auditor.close();
  });

  it('resources/read: text masked; JSON contents keep valid JSON with fields masked in their type; blobs dropped', async () => {
    const alice = await connect(gw.url('docs'), KEYS.alice);
    const text = await alice.readResource({ uri: 'file:///secrets.txt' });
    assert.equal((text.contents[0] as { text: string }).text, `owner: [REDACTED:email]\naws_access_key_id = [REDACTED:aws_access_key]\ngithub: [REDACTED:github_token]\ncommit ${SHA}\n`);
    const json = await alice.readResource({ uri: 'file:///customer.json' });
    const parsed = JSON.parse((json.contents[0] as { text: string }).text);
    assert.deepEqual(parsed, { customer: { name: 'Bob', ssn: '[REDACTED:ssn]', email: '[REDACTED:email]' }, orders: [{ total: 0, card: '[REDACTED:card]' }, { total: 0 }] });
    const bin = await alice.readResource({ uri: 'file:///key.bin' });
    assert.deepEqual(bin.contents[0], { uri: 'file:///key.bin', mimeType: 'application/octet-stream', text: '[REDACTED:blob]' });
    await alice.close();
  });

  it('structuredContent masked in a string with a format still fits the outputSchema (the SDK client validates it)', async () => {
    const alice = await connect(gw.url('docs'), KEYS.alice);
    await alice.listTools();
    const r = (await alice.callTool({ name: 'contact', arguments: {} })) as CallToolResult;
    assert.deepEqual(r.structuredContent, { email: 'redacted-email@redacted.invalid', since: '1970-01-01', homepage: 'urn:redacted:redacted-homepage' });
    assert.deepEqual(JSON.parse(textOf(r)), { email: '[REDACTED:email]', since: '[REDACTED:since]', homepage: '[REDACTED:homepage]' });
    await alice.close();
  });

  it('arguments reach the upstream unchanged (and are digested as received); the recording holds them masked', async () => {
    const alice = await connect(gw.url('docs'), KEYS.alice);
    const args = { text: `remember ${GITHUB} for ${EMAIL}` };
    assert.equal(textOf(await alice.callTool({ name: 'note', arguments: args })), 'noted');
    await alice.close();
    const received = readFileSync(record, 'utf8');
    assert.ok(received.includes(GITHUB) && received.includes(EMAIL), 'the upstream received the arguments as sent');
    await gw.running.close(); // the recorder flushes; the store stays on disk
    stopped = true;
    const db = new Database(join(gw.dir, 'data/portcullis.db'), { readonly: true });
    const decisions = (db.prepare("SELECT data FROM audit_records WHERE type = 'decision'").all() as { data: string }[]).map((r) => JSON.parse(r.data) as { tool?: string; argsDigest?: string });
    db.close();
    assert.equal(decisions.find((d) => d.tool === 'note')?.argsDigest, digestArgs(args));
    const bytes = storeBytes(gw.dir);
    assert.ok(bytes.includes('[REDACTED:github_token]'), 'the recording holds the masked values');
    // The auditor's session saw the file in clear, so its recording holds what it saw: only
    // the secrets Alice sent or saw are checked here.
    assert.ok(!bytes.includes(`remember ${GITHUB}`), 'no clear argument in the store');
    const store = await openStore('sqlite:./data/portcullis.db', gw.dir);
    try {
      const aliceMessages = [];
      for (const id of sessionIds(gw.dir)) {
        const msgs = await store.readRecording(id);
        if (msgs[0]?.sub === 'alice') aliceMessages.push(...msgs);
      }
      assert.ok(aliceMessages.length > 0);
      for (const m of aliceMessages) for (const secret of CLEAR) assert.ok(!m.body.includes(secret), `alice's recording holds ${secret}: ${m.body.slice(0, 200)}`);
    } finally {
      await store.close();
    }
  });
});

function sessionIds(dir: string): string[] {
  const db = new Database(join(dir, 'data/portcullis.db'), { readonly: true });
  try {
    return (db.prepare('SELECT DISTINCT session_id AS id FROM recordings').all() as { id: string }[]).map((r) => r.id);
  } finally {
    db.close();
  }
}

const EVERYTHING_POLICY = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: ev }
server: ev
default: deny
rules:
  - { name: tools, effect: allow, tools: [echo, get-structured-content, toggle-simulated-logging] }
  - { name: prompts, effect: allow, prompts: [args-prompt] }
masks:
  - name: emails-for-staff
    who: { groups: [staff] }
    detectors: [email]
  - name: weather-is-confidential
    tools: [get-structured-content]
    fields: ["$.temperature", "$.conditions"]
    strategy: hash
  - name: log-lines
    custom: [{ name: log_line, pattern: "[A-Za-z]+[ -]level[ -]message" }]
`;

describe('masking through the gateway: server-everything', () => {
  let gw: ConfiguredGateway;
  let keyDir: { path: string; remove(): void };
  before(async () => {
    keyDir = tempDir('pcl-mask-key-');
    mkdirSync(join(keyDir.path, 'k'));
    writeFileSync(join(keyDir.path, 'k/masking.key'), 'a'.repeat(64));
    gw = await startConfiguredGateway({ servers: { ev: upstreams.everything() }, auth: { apiKeys }, masking: { hashKey: `\${file:${join(keyDir.path, 'k/masking.key')}}` } }, { 'ev.yaml': EVERYTHING_POLICY });
  });
  after(async () => {
    await gw?.close();
    keyDir?.remove();
  });

  it('per who: staff see an email masked, an auditor in clear', async () => {
    const alice = await connect(gw.url('ev'), KEYS.alice);
    const auditor = await connect(gw.url('ev'), KEYS.auditor);
    const args = { message: `mail ${EMAIL} now` };
    assert.equal(textOf(await alice.callTool({ name: 'echo', arguments: args })), 'Echo: mail [REDACTED:email] now');
    assert.equal(textOf(await auditor.callTool({ name: 'echo', arguments: args })), `Echo: mail ${EMAIL} now`);
    await alice.close();
    await auditor.close();
  });

  it('structuredContent: fields hashed within their type, the text copy stays the same JSON, the outputSchema still validates', async () => {
    const alice = await connect(gw.url('ev'), KEYS.alice);
    await alice.listTools(); // the SDK client then validates structuredContent against the outputSchema
    const r = (await alice.callTool({ name: 'get-structured-content', arguments: { location: 'Chicago' } })) as CallToolResult;
    const sc = r.structuredContent as { temperature: number; conditions: string; humidity: number };
    assert.equal(typeof sc.temperature, 'number');
    assert.notEqual(sc.temperature, 36);
    assert.match(sc.conditions, /^conditions_[0-9a-f]{12}$/);
    assert.equal(sc.humidity, 82);
    assert.deepEqual(JSON.parse(textOf(r)), sc);
    const again = (await alice.callTool({ name: 'get-structured-content', arguments: { location: 'Chicago' } })) as CallToolResult;
    assert.deepEqual(again.structuredContent, sc, 'hash is stable');
    await alice.close();
  });

  it('prompts/get messages are masked', async () => {
    const alice = await connect(gw.url('ev'), KEYS.alice);
    const p = await alice.getPrompt({ name: 'args-prompt', arguments: { city: EMAIL } });
    assert.equal((p.messages[0].content as { text: string }).text, "What's weather in [REDACTED:email]?");
    await alice.close();
  });

  it('notifications/message (logging) is masked', async () => {
    const alice = await connect(gw.url('ev'), KEYS.alice);
    const logs: LoggingMessageNotification['params'][] = [];
    alice.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void logs.push(n.params));
    await alice.setLoggingLevel('debug');
    await alice.callTool({ name: 'toggle-simulated-logging', arguments: {} });
    await waitFor('a log message', () => logs.length > 0);
    assert.match(String(logs[0].data), /^\[REDACTED:log_line\]/);
    await alice.callTool({ name: 'toggle-simulated-logging', arguments: {} });
    await alice.close();
  });
});

describe('a mask that hashes needs masking.hashKey', () => {
  it('the gateway refuses to start without it', async () => {
    await assert.rejects(
      startConfiguredGateway({ servers: { ev: upstreams.everything() }, auth: { anonymous: true } }, { 'ev.yaml': EVERYTHING_POLICY }),
      (e: Error & { code?: string }) => e.code === 'PCL_CONFIG_INVALID' && /masking\.hashKey/.test(e.message),
    );
  });
});
