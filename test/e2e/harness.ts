// The one place end-to-end tests start a gateway, an upstream or a `portcullis` process.
// When the policy engine and the audit log are wired into gateway startup, only this file
// changes: tests ask for `startTestGateway(servers, opts)` and inspect `audit` / `decisions`.
import { Client, type ClientOptions } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { getDefaultEnvironment, StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import type { z } from 'zod';
import { loadConfig } from '../../src/config/load.js';
import { configSchema } from '../../src/config/schema.js';
import { serveFromConfig, type Wiring } from '../../src/gateway/start.js';
import { policyPoint, type AuditSink, type PolicyPoint } from '../../src/gateway/decide.js';
import { compileBundle } from '../../src/policy/compile.js';
import { startGateway, type Gateway, type RunningGateway } from '../../src/gateway/gateway.js';
import type { DecisionInput } from '../../src/policy/decision.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The command line from the sources (see test/support/portcullis-from-sources.js). */
export const BIN = join(ROOT, 'test/support/portcullis-from-sources.js');
export const EVERYTHING = join(ROOT, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');
export const FILESYSTEM = join(ROOT, 'node_modules/@modelcontextprotocol/server-filesystem/dist/index.js');
export const RAW_SERVER = join(ROOT, 'test/fixtures/raw-server.mjs');

export type ServersInput = z.input<typeof configSchema>['servers'];
type ConfigInput = z.input<typeof configSchema>;

/** The stdio upstreams the tests use: real npm servers and the raw fixture. */
export const upstreams = {
  everything: () => ({ transport: 'stdio' as const, command: process.execPath, args: [EVERYTHING, 'stdio'] }),
  filesystem: (dir: string) => ({ transport: 'stdio' as const, command: process.execPath, args: [FILESYSTEM, dir] }),
  raw: (env: Record<string, string> = {}) => ({ transport: 'stdio' as const, command: process.execPath, args: [RAW_SERVER], env }),
};

export interface AuditRecord {
  type: string;
  actor: string;
  data: Record<string, unknown>;
}

export interface TestGateway {
  running: RunningGateway;
  gateway: Gateway;
  /** http://127.0.0.1:<port> */
  base: string;
  port: number;
  url(server: string): string;
  /** Every audit record the gateway appended, in order. */
  audit: AuditRecord[];
  /** Every input the policy was asked to decide, in order (the parsed message as policy saw it). */
  decisions: DecisionInput[];
  close(): Promise<void>;
}

export interface TestGatewayOptions {
  limits?: ConfigInput['limits'];
  listen?: ConfigInput['listen'];
  /** Defaults to allow-everything. */
  policy?: PolicyPoint;
  /** Defaults to anonymous access. */
  auth?: ConfigInput['auth'];
  /** More of portcullis.yaml (e.g. auth, metrics); auth defaults to anonymous access. */
  config?: Partial<ConfigInput>;
  /** The gateway's logger; quiet by default (PORTCULLIS_TEST_LOG=debug shows it). */
  log?: Logger;
}

/** A policy document that allows everything on every server (methods included). */
export const ALLOW_ALL_POLICY = 'apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: test }\nserver: "*"\ndefault: allow\nrules:\n  - { name: allow-all, effect: allow, tools: ["*"], resources: ["**"], prompts: ["*"], methods: ["*"], serverRequests: ["*"] }\n';

/** A real compiled bundle that allows everything on every server (methods included). */
export const ALLOW_ALL = compileBundle({ 'allow-all.yaml': ALLOW_ALL_POLICY });

/** A quiet logger; PORTCULLIS_TEST_LOG=debug shows the gateway's logs on stderr. */
function testLogger() {
  const level = process.env.PORTCULLIS_TEST_LOG ?? 'silent';
  return pino({ level }, pino.destination({ fd: 2, sync: true }));
}

/** Starts a gateway on 127.0.0.1, port 0, anonymous access, policy allowing everything. */
export async function startTestGateway(servers: ServersInput, opts: TestGatewayOptions = {}): Promise<TestGateway> {
  const audit: AuditRecord[] = [];
  const decisions: DecisionInput[] = [];
  const inner = opts.policy ?? policyPoint({ current: () => ALLOW_ALL });
  // The real policy engine, watched: every input it is asked to decide is kept for the test.
  const policy: PolicyPoint = {
    current: () => {
      const view = inner.current();
      return { ...view, decide: (input) => (decisions.push(input), view.decide(input)) };
    },
  };
  const sink: AuditSink = { append: async (type, actor, data) => void audit.push({ type, actor, data }) };
  const config = configSchema.parse({
    listen: { host: '127.0.0.1', port: 0, ...opts.listen },
    limits: opts.limits ?? {},
    servers,
    auth: opts.auth ?? { anonymous: true },
    logging: { level: 'silent' },
    ...opts.config,
  } satisfies ConfigInput);
  const running = await startGateway(config, { policy, audit: sink, log: opts.log ?? testLogger(), baseDir: ROOT });
  const port = (running.server.address() as AddressInfo).port;
  return {
    running,
    gateway: running.gateway,
    base: `http://127.0.0.1:${port}`,
    port,
    url: (name) => running.url(name),
    audit,
    decisions,
    close: () => running.close(),
  };
}

// ---------------------------------------------------------------------------------------------
// SDK clients

export const CLIENT_INFO = { name: 'e2e-client', version: '1.0.0' };

/** An SDK client over Streamable HTTP; `setup` registers handlers before connecting. */
export async function connectHttp(url: string, options: ClientOptions = {}, setup?: (c: Client) => void): Promise<Client> {
  const client = new Client(CLIENT_INFO, options);
  setup?.(client);
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  return client;
}

/** An SDK client straight to a stdio server (the "direct" side of transparency checks). */
export async function connectStdioDirect(command: string, args: string[], options: ClientOptions = {}, setup?: (c: Client) => void): Promise<Client> {
  const client = new Client(CLIENT_INFO, options);
  setup?.(client);
  await client.connect(new StdioClientTransport({ command, args, stderr: 'ignore' }));
  return client;
}

export async function connectSse(url: string, options: ClientOptions = {}): Promise<Client> {
  const client = new Client(CLIENT_INFO, options);
  await client.connect(new SSEClientTransport(new URL(url)));
  return client;
}

// ---------------------------------------------------------------------------------------------
// Processes and temp dirs

export function tempDir(prefix = 'pcl-e2e-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    let seen = '';
    const onData = (d: Buffer) => {
      seen += d.toString();
      const m = pattern.exec(seen);
      if (m) done(() => resolvePromise(seen));
    };
    const onExit = (code: number | null) => done(() => reject(new Error(`process exited (${code}) before printing ${pattern}; output:\n${seen}`)));
    const timer = setTimeout(() => done(() => reject(new Error(`timed out waiting for ${pattern}; output:\n${seen}`))), timeoutMs);
    const done = (f: () => void) => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      f();
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('exit', onExit);
  });
}

export interface Proc {
  child: ChildProcess;
  pid: number;
  output(): string;
  /** SIGTERM, then SIGKILL after 3 s; resolves with the exit code once gone. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Children still running; killed if the test process exits without stopping them. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

function track(child: ChildProcess): Proc {
  running.add(child);
  child.once('exit', () => running.delete(child));
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => {
    if (child.exitCode !== null || child.signalCode !== null) r({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => r({ code, signal }));
  });
  return {
    child,
    pid: child.pid!,
    output: () => out,
    exited,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal);
        const t = setTimeout(() => child.kill('SIGKILL'), 3_000);
        await exited;
        clearTimeout(t);
      }
      return (await exited).code;
    },
  };
}

/** server-everything in its Streamable HTTP (`/mcp`) or legacy SSE (`/sse`) mode, on a free port. */
export async function startEverythingHttp(mode: 'streamableHttp' | 'sse'): Promise<Proc & { url: string }> {
  const port = await freePort();
  const child = spawn(process.execPath, [EVERYTHING, mode], { env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = track(child);
  await waitForOutput(child, /listening on port|running on port/, 15_000);
  return { ...proc, url: `http://127.0.0.1:${port}/${mode === 'sse' ? 'sse' : 'mcp'}` };
}

/**
 * Writes a portcullis.yaml (JSON is YAML) into a fresh temp dir, with its policy folder (allow
 * everything unless `policies` says otherwise) and its store in that dir; returns the paths.
 */
export function writeConfig(config: Partial<ConfigInput> & Pick<ConfigInput, 'servers'>, policies: Record<string, string> = { 'allow-all.yaml': ALLOW_ALL_POLICY }): { file: string; dir: { path: string; remove(): void } } {
  const dir = tempDir('pcl-cfg-');
  mkdirSync(join(dir.path, 'policies'));
  for (const [name, text] of Object.entries(policies)) writeFileSync(join(dir.path, 'policies', name), text);
  const file = join(dir.path, 'portcullis.yaml');
  writeFileSync(file, JSON.stringify({ policy: { path: './policies', watch: false }, store: { url: 'sqlite:./data/portcullis.db' }, ...config }, null, 2));
  return { file, dir };
}

export interface ConfiguredGateway {
  running: Awaited<ReturnType<typeof serveFromConfig>>;
  base: string;
  /** The admin API's http://host:port, when the config has an admin section. */
  adminBase?: string;
  url(server: string): string;
  /** The config file and its temp dir (policies/ and the store live there). */
  file: string;
  dir: string;
  close(): Promise<void>;
}

/** A gateway wired exactly as `portcullis serve` wires it (real policy files, SQLite audit, auth), in-process. */
export async function startConfiguredGateway(config: Partial<ConfigInput> & Pick<ConfigInput, 'servers'>, policies?: Record<string, string>): Promise<ConfiguredGateway> {
  const { file, dir } = writeConfig({ logging: { level: 'silent' }, ...config, listen: { host: '127.0.0.1', port: 0, ...config.listen } }, policies);
  const running = await serveFromConfig(loadConfig(file));
  const port = (running.server.address() as AddressInfo).port;
  return {
    running,
    base: `http://127.0.0.1:${port}`,
    adminBase: running.admin?.base,
    url: (name) => running.url(name),
    file,
    dir: dir.path,
    close: async () => {
      await running.close();
      dir.remove();
    },
  };
}

export interface WrapSession {
  client: Client;
  transport: StdioClientTransport;
  /** The wrap process's pid. */
  pid: number;
  /** Its portcullis.yaml (the SQLite store is beside it, in data/). */
  file: string;
  stderr(): string;
  close(): Promise<void>;
}

export interface WrapOptions {
  /** Client capabilities and the like. */
  client?: ClientOptions;
  /** Registers client handlers before connecting. */
  setup?: (c: Client) => void;
  /** More of portcullis.yaml. */
  config?: Partial<ConfigInput>;
  /** Policy files (name → text); allow everything by default. */
  policies?: Record<string, string>;
}

/** `portcullis wrap -c <temp config> --server <name> --identity alice`, driven by an SDK client. */
export async function connectWrap(servers: ServersInput, server: string, opts: WrapOptions = {}): Promise<WrapSession> {
  const options = opts.client ?? {};
  const setup = opts.setup;
  const { file, dir } = writeConfig({ servers, logging: { level: 'info' }, ...opts.config }, opts.policies);
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [BIN, 'wrap', '-c', file, '--server', server, '--identity', 'alice'],
    env: { ...getDefaultEnvironment(), NODE_OPTIONS: '' },
    cwd: ROOT,
    stderr: 'pipe',
  });
  let err = '';
  transport.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const client = new Client(CLIENT_INFO, options);
  setup?.(client);
  try {
    await client.connect(transport);
  } catch (e) {
    await transport.close().catch(() => undefined);
    dir.remove();
    throw new Error(`wrap did not start: ${(e as Error).message}\n${err}`);
  }
  const pid = transport.pid!;
  return {
    client,
    transport,
    pid,
    file,
    stderr: () => err,
    close: async () => {
      await client.close().catch(() => undefined);
      await waitFor('wrap to exit', () => !alive(pid), 5_000).catch(() => process.kill(pid, 'SIGKILL'));
      dir.remove();
    },
  };
}

/** `portcullis wrap` with a raw stdin/stdout: what an SDK client would never send, and the wire as written. */
export async function rawWrap(servers: ServersInput, server: string, policies?: Record<string, string>, config: Omit<Parameters<typeof writeConfig>[0], 'servers'> = {}) {
  const { file, dir } = writeConfig({ servers, logging: { level: 'warn' }, ...config }, policies);
  const p = runPortcullis(['wrap', '-c', file, '--server', server, '--identity', 'alice']);
  const lines: any[] = [];
  let buf = '';
  p.child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
    }
  });
  return {
    p,
    file,
    dir: dir.path,
    lines,
    send: (line: string) => void p.child.stdin!.write(`${line}\n`),
    reply: (id: unknown) => waitFor(`the reply to ${JSON.stringify(id)}`, () => lines.find((l) => l.id === id && l.method === undefined), 15_000),
    close: async () => {
      p.child.stdin!.end();
      await Promise.race([p.exited, new Promise((r) => setTimeout(r, 5_000))]);
      await p.stop();
      dir.remove();
    },
  };
}

/** The command line (from the sources) as a plain child process (for serve and bad-usage checks). */
export function runPortcullis(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  return track(child);
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP, for what an SDK client would never send

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** The JSON body, or the JSON-RPC messages of an SSE body (first one), when there is one. */
  json: any;
  /** Every JSON-RPC message in an SSE body. */
  messages: any[];
}

export const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };

/** One HTTP request with node:http: any method, any headers (Host included), any body. */
export function raw(
  base: string,
  path: string,
  opts: { method?: string; headers?: Record<string, string | string[]>; body?: string | Buffer; timeoutMs?: number; setHost?: boolean } = {},
): Promise<RawResponse> {
  const u = new URL(base);
  return new Promise((resolvePromise, reject) => {
    const req = httpRequest(
      { host: u.hostname, port: u.port, path, method: opts.method ?? 'POST', headers: opts.headers, setHost: opts.setHost ?? true, timeout: opts.timeoutMs ?? 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const messages = parseBody(text, res.headers['content-type']);
          resolvePromise({ status: res.statusCode ?? 0, headers: res.headers, text, json: messages[0], messages });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('raw request timed out')));
    req.on('error', reject);
    req.end(opts.body);
  });
}

function parseBody(text: string, type: string | undefined): any[] {
  if (type?.includes('text/event-stream')) {
    return text
      .split('\n')
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).trim())
      .filter(Boolean)
      .map((d) => JSON.parse(d));
  }
  try {
    return text ? [JSON.parse(text)] : [];
  } catch {
    return [];
  }
}

/** POSTs one JSON-RPC message (object, or raw string) to /mcp/<server>, with the MCP headers. */
export function post(gw: { base: string }, server: string, body: unknown, headers: Record<string, string> = {}): Promise<RawResponse> {
  return raw(gw.base, `/mcp/${server}`, { headers: { ...MCP_HEADERS, ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

export const INIT_PARAMS = { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: CLIENT_INFO };

/** initialize + notifications/initialized over raw HTTP (with `auth` headers, kept in the returned headers); returns the session id and the result. */
export async function rawSession(gw: { base: string }, server: string, protocolVersion = '2025-11-25', auth: Record<string, string> = {}): Promise<{ sessionId: string; result: any; headers: Record<string, string> }> {
  const res = await post(gw, server, { jsonrpc: '2.0', id: 0, method: 'initialize', params: { ...INIT_PARAMS, protocolVersion } }, auth);
  if (res.status !== 200) throw new Error(`initialize failed: ${res.status} ${res.text}`);
  const sessionId = res.headers['mcp-session-id'] as string;
  const headers = { ...auth, 'mcp-session-id': sessionId, 'mcp-protocol-version': res.json.result.protocolVersion };
  const note = await post(gw, server, { jsonrpc: '2.0', method: 'notifications/initialized' }, headers);
  if (note.status !== 202) throw new Error(`initialized notification: ${note.status} ${note.text}`);
  return { sessionId, result: res.json.result, headers };
}
