// The proxy benchmark: the same `tools/call echo` load sent
//   direct-http    client → echo upstream (Streamable HTTP)
//   gateway-http   client → portcullis serve → the same echo upstream over HTTP
//   relay-stdio    client → mcp-proxy (a plain relay that enforces nothing) → echo over stdio
//   gateway-stdio  client → portcullis serve → echo over stdio
// in one run, with the official SDK Client and StreamableHTTPClientTransport on every path (one
// MCP session per client). mcp-proxy can only front a stdio server, so the relay is compared with
// the gateway fronting the same stdio server; the direct comparison is over HTTP.
//
// The gateway runs as its own process (`node bin/portcullis.js serve -c <generated config>`), so
// its CPU time and memory are read from /proc/<pid>/stat and /proc/<pid>/status. A second,
// short run of the gateway under --cpu-prof gives the hot spots by self time. A last 1-client
// run puts gateway-http with a generated 1,000-rule policy beside the small-policy gateway-http
// (BENCH_LARGE_POLICY=0 skips it; BENCH_LARGE_POLICY_CALLS sets its calls, 1000).
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createWriteStream, existsSync, openSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export interface ProxyBenchOptions {
  /** Timed sequential calls per path (one client), after warm-up. */
  seqCalls: number;
  seqWarmup: number;
  /** Concurrent clients, and how long each concurrent phase runs. */
  clients: number;
  durationMs: number;
  /** Profile the gateway under the concurrent load (a separate run, so it does not skew the figures). */
  profile: boolean;
  profileMs: number;
  /** The gateway's logging.level (info is what a deployment runs with). */
  gatewayLogLevel: string;
  /** 1-client gateway-http with a generated large policy beside the small-policy gateway (0 calls: skipped). */
  largePolicyCalls: number;
  largePolicyRules: number;
  progress: (line: string) => void;
}

export const DEFAULTS: ProxyBenchOptions = {
  seqCalls: 2000,
  seqWarmup: 300,
  clients: 32,
  durationMs: 5000,
  profile: true,
  profileMs: 5000,
  gatewayLogLevel: 'info',
  largePolicyCalls: process.env.BENCH_LARGE_POLICY === '0' ? 0 : Number(process.env.BENCH_LARGE_POLICY_CALLS ?? 1000),
  largePolicyRules: 1000,
  progress: (line) => process.stderr.write(`bench: ${line}\n`),
};

type PathName = 'direct-http' | 'gateway-http' | 'relay-stdio' | 'gateway-stdio';
const PATHS: PathName[] = ['direct-http', 'gateway-http', 'relay-stdio', 'gateway-stdio'];

interface PathTarget {
  name: PathName;
  url: string;
  /** The process that does this path's proxying (the upstream itself for direct). */
  pid: number;
  role: string;
}

export interface SequentialFigures {
  calls: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  max: number;
}

export interface ConcurrentFigures {
  clients: number;
  calls: number;
  seconds: number;
  rps: number;
  errors: number;
  /** CPU of the path's own process (gateway, relay; for direct the upstream) per call, µs. */
  cpuUsPerCall: number;
  /** CPU of that process's main thread alone (its event loop; the gateway's audit writer thread is not in it) per call, µs. */
  loopCpuUsPerCall: number;
  /** Peak VmRSS sampled during the phase, and VmHWM after it, MB. */
  peakRssMb: number;
  hwmMb: number;
  /** The bench process's own CPU (the load generator), µs per call: shows contention on small machines. */
  loadGenCpuUsPerCall: number;
  setupMs: number;
  /** performance.now() at the start and end of the timed phase (to cut a profile to it). */
  window: [number, number];
}

export interface HotSpot {
  selfMs: number;
  selfPct: number;
  fn: string;
  where: string;
}

export interface ProxyReport {
  options: Omit<ProxyBenchOptions, 'progress'>;
  machine: string;
  /** 'allowed' once the policy engine is wired and the echo text comes back; 'denied' while serve fails closed. */
  gatewayOutcome: 'allowed' | 'denied';
  gatewayOutcomeDetail: string;
  policyEngineInStart: boolean;
  sequential: Record<PathName, SequentialFigures>;
  concurrent: Record<PathName, ConcurrentFigures>;
  profile?: ProfileSummary;
  profileNote: string;
  profileFile?: string;
  relayDescription: string;
  gatewayIdleRssMb: number;
  /** 1-minute load average before and after: other work on the machine skews the figures. */
  load: [number, number];
  largePolicy?: LargePolicyFigures;
}

export interface LargePolicyFigures {
  rules: number;
  files: number;
  /** Rules in the documents that cover echo-http (its own document and the "*" one). */
  coveringRules: number;
  startMs: number;
  idleRssMb: number;
  /** Interleaved in the same rounds: the small-policy gateway and the large-policy one. */
  small: SequentialFigures;
  large: SequentialFigures;
}

// ---------------------------------------------------------------------------------------------
// Processes

const started: ChildProcess[] = [];

export function track(child: ChildProcess): ChildProcess {
  started.push(child);
  return child;
}

/** Ends one process group we started (detached: the group id is the child's pid). */
export async function stop(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const kill = (sig: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      try {
        child.kill(sig);
      } catch {
        /* already gone */
      }
    }
  };
  kill(signal);
  const timer = setTimeout(() => kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
  // The group may still hold children (stdio upstreams) if the leader died first.
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    /* nothing left */
  }
}

export async function stopAll(): Promise<void> {
  await Promise.all(started.splice(0).map((c) => stop(c)));
}

process.once('exit', () => {
  for (const c of started) {
    if (c.pid !== undefined && c.exitCode === null) {
      try {
        process.kill(-c.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
});

export function waitForLine(child: ChildProcess, stream: 'stdout' | 'stderr', pattern: RegExp, timeoutMs: number, what: string): Promise<RegExpExecArray> {
  return new Promise((resolvePromise, reject) => {
    let buffer = '';
    const src = child[stream]!;
    const onData = (d: Buffer) => {
      buffer += d.toString('utf8');
      const m = pattern.exec(buffer);
      if (m) done(() => resolvePromise(m));
    };
    const onExit = (code: number | null) => done(() => reject(new Error(`${what} exited (code ${code}) before it was ready:\n${buffer.slice(-2000)}`)));
    const timer = setTimeout(() => done(() => reject(new Error(`${what} was not ready within ${timeoutMs} ms:\n${buffer.slice(-2000)}`))), timeoutMs);
    const done = (f: () => void) => {
      clearTimeout(timer);
      src.off('data', onData);
      child.off('exit', onExit);
      f();
    };
    src.on('data', onData);
    child.on('exit', onExit);
  });
}

export async function freePort(): Promise<number> {
  return new Promise((r, j) => {
    const s = createServer();
    s.once('error', j);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => r(port));
    });
  });
}

/** Compiled gateway, echo server and profile. BENCH_CACHE_DIR (inside the checkout, so the compiled
 *  gateway still finds node_modules) keeps runs in worktrees that share one node_modules apart. */
const CACHE_DIR = process.env.BENCH_CACHE_DIR ? resolve(process.env.BENCH_CACHE_DIR) : join(ROOT, 'node_modules', '.cache', 'portcullis-bench');

/** The echo server as plain JavaScript (TypeScript's transpileModule, no type check), so upstream
 *  children start in ~0.2 s without tsx: 32 stdio sessions mean 32 children. Cached by mtime. */
export async function echoServerScript(): Promise<string> {
  const src = join(ROOT, 'bench', 'echo-server.ts');
  const dir = CACHE_DIR;
  const out = join(dir, 'echo-server.mjs');
  if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) return out;
  const ts = (await import('typescript')).default;
  const js = ts.transpileModule(readFileSync(src, 'utf8'), { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
  mkdirSync(dir, { recursive: true });
  writeFileSync(out, js);
  return out;
}

// ---------------------------------------------------------------------------------------------
// /proc

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of one process (all its threads), in microseconds; with `thread`, of that thread only. */
export function cpuMicros(pid: number, thread?: number): number {
  const stat = readFileSync(thread === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLK_TCK;
}

export function memoryMb(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

// ---------------------------------------------------------------------------------------------
// Generated gateway config and policy

export const BENCH_POLICY = `# Generated by bench/proxy.ts: a realistic policy for the bench's echo server.
apiVersion: portcullis/v1
kind: Policy
metadata:
  name: bench-echo
  description: Agents may echo and add; ops may use anything; credentials and shell tools never pass.
server: "echo-*"
default: deny
rules:
  - name: agents-may-echo
    effect: allow
    who: { groups: [agents] }
    tools: [echo]
    when: 'size(args.message) <= 4096 && args.message.matches("(?i)\\\\b(drop|truncate)\\\\s+table\\\\b") == false'
  - name: agents-may-add
    effect: allow
    who: { groups: [agents] }
    tools: [get-sum]
    when: 'has(args.a) && has(args.b)'
  - name: ops-may-use-anything
    effect: allow
    who: { groups: [ops] }
    tools: ["*"]
  - name: no-credentials-in-messages
    effect: deny
    tools: ["*"]
    when: 'has(args.message) && args.message.matches("(?i)(password|secret|api[_-]?key|token)\\\\s*[:=]")'
    message: credentials must not be sent through tools
  - name: no-shell-tools
    effect: deny
    tools: ["exec*", "shell*", "run-*"]
    message: shell tools are not available through this gateway
  - name: suspended-accounts
    effect: deny
    who: { groups: [suspended] }
    tools: ["*"]
    message: this account is suspended
masks:
  - name: pii
    tools: ["*"]
    detectors: [email, phone, credit_card, us_ssn, secrets]
    strategy: redact
`;

/** A deterministic pseudo-random sequence, so runs compare. */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
}

/**
 * A large policy shaped like a real organisation's: `rules` rules over 50 servers × 20 tools and
 * 40 groups, one document per server, plus guard rails on every server ("*") and the bench's own
 * servers ("echo-*"), whose `echo` is allowed to the bench identity (group agents) by one CEL
 * rule. Team rules: 60% allow for a group on a tool, 10% the same with a CEL condition on
 * arguments, 5% on a tool prefix glob, 15% approve, 10% deny for one subject. The guard rails
 * (deny with CEL on every tool) are evaluated on every call, as a real bundle's would be.
 */
export function generateLargePolicy(rules: number): { files: Record<string, string>; coveringRules: number } {
  const SERVERS = 48;
  const TOOLS = 20;
  const GROUPS = 40;
  const rand = rng(rules);
  const doc = (name: string, server: string, lines: string[]) => `# Generated by bench/proxy.ts (large policy)\napiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: ${name} }\nserver: "${server}"\ndefault: deny\nrules:\n${lines.map((l) => `  - ${l}`).join('\n')}\n`;
  const guard = [
    `{ name: no-credentials, effect: deny, tools: ["*"], when: 'has(args.message) && args.message.matches("(?i)(password|secret|api[_-]?key|token)\\\\s*[:=]")', message: credentials must not be sent through tools }`,
    `{ name: no-drops, effect: deny, tools: ["*"], when: 'has(args.sql) && args.sql.matches("(?i)\\\\b(drop|truncate)\\\\s+table\\\\b")', message: no drops }`,
    `{ name: no-huge-args, effect: deny, tools: ["*"], when: 'has(args.message) && size(args.message) > 65536', message: arguments too large }`,
    `{ name: no-shell-tools, effect: deny, tools: ["exec*", "shell*", "run-*"], message: shell tools are not available }`,
    `{ name: suspended, effect: deny, who: { groups: [suspended] }, tools: ["*"], message: this account is suspended }`,
    `{ name: contractors-office-hours, effect: deny, who: { groups: [contractors] }, tools: ["*"], when: 'time.getHours("UTC") < 6 || time.getHours("UTC") > 20' }`,
  ];
  const echo = [
    `{ name: agents-may-echo, effect: allow, who: { groups: [agents] }, tools: [echo], when: 'size(args.message) <= 4096 && !args.message.matches("(?i)\\\\b(drop|truncate)\\\\s+table\\\\b")' }`,
    `{ name: agents-may-add, effect: allow, who: { groups: [agents] }, tools: [get-sum], when: 'has(args.a) && has(args.b)' }`,
    `{ name: ops-may-use-anything, effect: allow, who: { groups: [ops] }, tools: ["*"] }`,
  ];
  const perServer: string[][] = Array.from({ length: SERVERS }, () => []);
  const budget = rules - guard.length - echo.length;
  for (let i = 0; i < budget; i++) {
    const tool = Math.floor(rand() * TOOLS);
    const group = Math.floor(rand() * GROUPS);
    const r = rand();
    // Every 25th team rule lands on the bench's servers (echo and its neighbours), the rest spread.
    const onEcho = i % 25 === 0;
    const toolName = onEcho && tool === 0 ? 'echo' : `tool${tool}`;
    let rule: string;
    if (r < 0.6) rule = `{ name: r${i}, effect: allow, who: { groups: [g${group}] }, tools: [${toolName}] }`;
    else if (r < 0.7) rule = `{ name: r${i}, effect: allow, who: { groups: [g${group}] }, tools: [${toolName}], when: 'has(args.limit) && args.limit <= 100' }`;
    else if (r < 0.75) rule = `{ name: r${i}, effect: allow, who: { groups: [g${group}] }, tools: ["tool${tool % 10}*"] }`;
    else if (r < 0.9) rule = `{ name: r${i}, effect: approve, who: { groups: [g${group}] }, tools: [${toolName}], approvers: { groups: [admins] } }`;
    else rule = `{ name: r${i}, effect: deny, who: { sub: [user${group}] }, tools: [${toolName}] }`;
    if (onEcho) echo.push(rule);
    else perServer[i % SERVERS]!.push(rule);
  }
  const files: Record<string, string> = { 'all-servers.yaml': doc('all-servers', '*', guard), 'bench-echo.yaml': doc('bench-echo', 'echo-*', echo) };
  perServer.forEach((lines, k) => {
    if (lines.length) files[`svc${String(k).padStart(2, '0')}.yaml`] = doc(`svc${k}`, `svc${k}`, lines);
  });
  return { files, coveringRules: guard.length + echo.length };
}

function writeGatewayConfig(dir: string, echoUrl: string, echoScript: string, apiKey: string, logLevel: string, policy: Record<string, string> = { 'bench-echo.yaml': BENCH_POLICY }): string {
  mkdirSync(join(dir, 'policy'), { recursive: true });
  for (const [name, text] of Object.entries(policy)) writeFileSync(join(dir, 'policy', name), text);
  const config = {
    listen: { host: '127.0.0.1', port: 0 },
    servers: {
      'echo-http': { transport: 'http', url: echoUrl },
      'echo-stdio': { transport: 'stdio', command: process.execPath, args: [echoScript, '--stdio'] },
    },
    auth: { apiKeys: [{ id: 'bench', sha256: createHash('sha256').update(apiKey).digest('hex'), sub: 'bench-agent', groups: ['agents', 'bench'] }] },
    policy: { path: join(dir, 'policy'), watch: false },
    store: { url: `sqlite:${join(dir, 'data', 'portcullis.db')}` },
    logging: { level: logLevel },
  };
  const file = join(dir, 'portcullis.yaml');
  // JSON is YAML: no need for a serializer here.
  writeFileSync(file, `# Generated by bench/proxy.ts\n${JSON.stringify(config, null, 2)}\n`);
  return file;
}

export interface Gateway {
  child: ChildProcess;
  pid: number;
  urls: Record<string, string>;
  logFile: string;
  /** VmRSS right after start-up, before any session. */
  idleRssMb: number;
}

/**
 * The gateway as it runs in production: the sources compiled to JavaScript (esbuild, one file per
 * module, no bundling), not transpiled at load by tsx, whose hooks cost memory and start-up time.
 */
let compiledMain: Promise<string> | undefined;
function compiledGateway(): Promise<string> {
  compiledMain ??= (async () => {
    const { build } = await import('esbuild');
    const out = join(CACHE_DIR, 'dist');
    const entryPoints = readdirSync(join(ROOT, 'src'), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && !f.endsWith('.d.ts'))
      .map((f) => join(ROOT, 'src', f));
    await build({ entryPoints, outdir: out, outbase: ROOT, format: 'esm', platform: 'node', target: 'node20', bundle: false, logLevel: 'error' });
    return join(out, 'src', 'cli', 'main.js');
  })();
  return compiledMain;
}

export async function startGateway(dir: string, configFile: string, nodeFlags: string[] = [], tag = 'gateway'): Promise<Gateway> {
  // The gateway's log (stdout) goes straight to a file, not through this process: the load
  // generator must not pay for the gateway's logging, and a pipe would not be like a deployment.
  const logFile = join(dir, `${tag}.log`);
  const logFd = openSync(logFile, 'w');
  const child = track(
    spawn(process.execPath, [...nodeFlags, await compiledGateway(), 'serve', '-c', configFile], {
      cwd: dir,
      detached: true,
      stdio: ['ignore', logFd, 'pipe'],
      env: { ...process.env, NODE_ENV: 'production' },
    }),
  );
  closeSync(logFd);
  const errLog = createWriteStream(join(dir, `${tag}.stderr.log`));
  child.stderr!.on('data', (d: Buffer) => errLog.write(d));
  const m = await waitForLine(child, 'stderr', /MCP endpoints:\n((?:\s+http\S+\n)+)/, 30_000, `portcullis serve (log: ${logFile})`);
  const idle = memoryMb(child.pid!);
  const urls: Record<string, string> = {};
  for (const u of m[1].trim().split(/\s+/)) urls[decodeURIComponent(u.slice(u.lastIndexOf('/') + 1))] = u;
  return { child, pid: child.pid!, urls, logFile, idleRssMb: idle.rss };
}

// ---------------------------------------------------------------------------------------------
// Clients

export interface BenchClient {
  client: Client;
  transport: StreamableHTTPClientTransport;
}

export async function connect(url: string, apiKey: string): Promise<BenchClient> {
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${apiKey}` } } });
  const client = new Client({ name: 'portcullis-bench', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

export async function disconnect(c: BenchClient): Promise<void> {
  await c.transport.terminateSession().catch(() => undefined);
  await c.client.close().catch(() => undefined);
}

type Expect = 'echo' | 'denied';

const message = (i: number) => `bench message ${i}: the quick brown fox jumps over the lazy dog`;

/** One tools/call echo; throws when the answer is not what this path should give. */
export async function call(c: BenchClient, i: number, expect: Expect): Promise<void> {
  const msg = message(i);
  const r = (await c.client.callTool({ name: 'echo', arguments: { message: msg } })) as { content?: Array<{ type: string; text?: string }>; isError?: boolean };
  const text = r.content?.[0]?.text;
  if (expect === 'echo') {
    if (r.isError || text !== `Echo: ${msg}`) throw new Error(`unexpected echo result: ${JSON.stringify(r).slice(0, 300)}`);
  } else if (!r.isError || !text?.startsWith('Denied by policy')) {
    throw new Error(`expected a policy denial, got: ${JSON.stringify(r).slice(0, 300)}`);
  }
}

/** What the gateway answers now: the echo (policy engine wired, allow policy in force) or a denial. */
async function probeOutcome(url: string, apiKey: string): Promise<{ outcome: Expect; detail: string }> {
  const c = await connect(url, apiKey);
  try {
    const msg = message(0);
    const r = (await c.client.callTool({ name: 'echo', arguments: { message: msg } })) as { content?: Array<{ text?: string }>; isError?: boolean };
    const text = r.content?.[0]?.text ?? '';
    if (!r.isError && text === `Echo: ${msg}`) return { outcome: 'echo', detail: `allowed: "${text.slice(0, 60)}…"` };
    if (r.isError && text.startsWith('Denied by policy')) return { outcome: 'denied', detail: text };
    throw new Error(`the gateway answered neither the echo nor a policy denial: ${JSON.stringify(r).slice(0, 300)}`);
  } finally {
    await disconnect(c);
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

export function summarize(latencies: number[]): SequentialFigures {
  const s = [...latencies].sort((a, b) => a - b);
  return { calls: s.length, p50: percentile(s, 0.5), p90: percentile(s, 0.9), p99: percentile(s, 0.99), mean: s.reduce((a, b) => a + b, 0) / s.length, max: s[s.length - 1] };
}

/** One client per path, calls interleaved in rounds so drift on a shared machine hits every path alike. */
async function sequential(targets: PathTarget[], apiKey: string, expects: Record<PathName, Expect>, o: ProxyBenchOptions): Promise<Record<PathName, SequentialFigures>> {
  const clients = await Promise.all(targets.map((t) => connect(t.url, apiKey)));
  try {
    for (let i = 0; i < o.seqWarmup; i++) for (let k = 0; k < targets.length; k++) await call(clients[k], i, expects[targets[k].name]);
    const lat: number[][] = targets.map(() => []);
    const rounds = 4;
    const perRound = Math.ceil(o.seqCalls / rounds);
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < targets.length; k++) {
        const c = clients[k];
        const e = expects[targets[k].name];
        for (let i = 0; i < perRound && lat[k].length < o.seqCalls; i++) {
          const t0 = performance.now();
          await call(c, i, e);
          lat[k].push(performance.now() - t0);
        }
      }
    }
    return Object.fromEntries(targets.map((t, k) => [t.name, summarize(lat[k])])) as Record<PathName, SequentialFigures>;
  } finally {
    await Promise.all(clients.map(disconnect));
  }
}

/**
 * Two gateway-http targets, one client each, calls alternating one by one (A B B A …), so load
 * from anything else on the machine falls on both alike.
 */
async function sequentialPair(urls: [string, string], apiKey: string, calls: number, warmup: number): Promise<[SequentialFigures, SequentialFigures]> {
  const clients = await Promise.all(urls.map((u) => connect(u, apiKey)));
  try {
    for (let i = 0; i < warmup; i++) for (const c of clients) await call(c, i, 'echo');
    const lat: number[][] = [[], []];
    for (let i = 0; i < calls; i++) {
      for (const k of i % 2 === 0 ? [0, 1] : [1, 0]) {
        const t0 = performance.now();
        await call(clients[k]!, i, 'echo');
        lat[k]!.push(performance.now() - t0);
      }
    }
    return [summarize(lat[0]!), summarize(lat[1]!)];
  } finally {
    await Promise.all(clients.map(disconnect));
  }
}

async function concurrent(t: PathTarget, apiKey: string, expect: Expect, o: ProxyBenchOptions, durationMs = o.durationMs): Promise<ConcurrentFigures> {
  const setup0 = performance.now();
  const clients: BenchClient[] = [];
  // Sessions open a few at a time (a stdio session starts a child process).
  for (let i = 0; i < o.clients; i += 8) clients.push(...(await Promise.all(Array.from({ length: Math.min(8, o.clients - i) }, () => connect(t.url, apiKey)))));
  try {
    await Promise.all(clients.map(async (c) => {
      for (let i = 0; i < 30; i++) await call(c, i, expect);
    }));
    const setupMs = performance.now() - setup0;
    let calls = 0;
    let errors = 0;
    let peakRss = 0;
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, memoryMb(t.pid).rss)), 50);
    const cpu0 = cpuMicros(t.pid);
    const loop0 = cpuMicros(t.pid, t.pid);
    const me0 = process.cpuUsage();
    const t0 = performance.now();
    const deadline = t0 + durationMs;
    await Promise.all(clients.map(async (c, k) => {
      let i = 0;
      while (performance.now() < deadline) {
        try {
          await call(c, k * 1_000_000 + i++, expect);
          calls++;
        } catch (e) {
          if (++errors <= 3) o.progress(`${t.name}: ${(e as Error).message}`);
        }
      }
    }));
    const t1 = performance.now();
    const seconds = (t1 - t0) / 1000;
    const cpu = cpuMicros(t.pid) - cpu0;
    const loop = cpuMicros(t.pid, t.pid) - loop0;
    const me = process.cpuUsage(me0);
    clearInterval(sampler);
    const mem = memoryMb(t.pid);
    peakRss = Math.max(peakRss, mem.rss);
    return {
      clients: o.clients,
      calls,
      seconds,
      rps: calls / seconds,
      errors,
      cpuUsPerCall: cpu / calls,
      loopCpuUsPerCall: loop / calls,
      peakRssMb: peakRss,
      hwmMb: mem.hwm,
      loadGenCpuUsPerCall: (me.user + me.system) / calls,
      setupMs,
      window: [t0, t1],
    };
  } finally {
    await Promise.all(clients.map(disconnect));
  }
}

// ---------------------------------------------------------------------------------------------
// Profile

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: CallFrame; hitCount?: number; children?: number[] }>;
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  functions: HotSpot[];
  /** Self time grouped by file (src/…), package (node_modules/<pkg>) or Node internal module. */
  modules: HotSpot[];
  /** Every sample charged to the innermost gateway frame (src/…) on its stack: which gateway code
   *  the time is spent for, including the libraries and Node internals it calls. */
  bySrcFrame: HotSpot[];
  busyMs: number;
  windowMs: number;
  samples: number;
}

/**
 * Self time per function (and per module) over the samples in [from, to] (profile clock, µs);
 * (idle) is left out, so percentages are of the time the gateway was busy.
 */
export function summarizeProfile(profile: CpuProfile, from = -Infinity, to = Infinity, top = 20): ProfileSummary {
  const frames = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const sources = new Map<string, string[]>();
  const where = (f: CallFrame) => (f.url ? `${shortUrl(f.url)}:${sourceLine(f, sources)}` : '(native)');
  /** The nearest ancestor frame that satisfies `test`. */
  const ancestor = (id: number, test: (f: CallFrame) => boolean): CallFrame | undefined => {
    for (let p = parent.get(id); p !== undefined; p = parent.get(p)) {
      const f = frames.get(p)!;
      if (test(f)) return f;
    }
    return undefined;
  };
  const isSrc = (f: CallFrame) => f.url.startsWith(`file://${ROOT}/src/`);
  const byFn = new Map<string, HotSpot>();
  const byModule = new Map<string, HotSpot>();
  const bySrc = new Map<string, HotSpot>();
  const add = (map: Map<string, HotSpot>, key: string, fn: string, at: string, us: number) => {
    const h = map.get(key) ?? { selfMs: 0, selfPct: 0, fn, where: at };
    h.selfMs += us / 1000;
    map.set(key, h);
  };
  let busy = 0;
  let count = 0;
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i] ?? 0;
    t += dt;
    if (t < from || t > to) continue;
    const id = profile.samples[i];
    const f = frames.get(id);
    if (!f || f.functionName === '(idle)') continue;
    // A sample's time is the interval until the next one.
    const us = profile.timeDeltas[i + 1] ?? dt;
    busy += us;
    count++;
    let name = f.functionName || '(anonymous)';
    let at = where(f);
    if (!f.url && !name.startsWith('(')) {
      // A native function: say which JavaScript called it.
      const caller = ancestor(id, (a) => a.url !== '');
      if (caller) at = `(native) ← ${caller.functionName || '(anonymous)'} ${where(caller)}`;
    }
    add(byFn, `${name}@${at}`, name, at, us);
    const mod = moduleOf(f.url, f.functionName);
    add(byModule, mod, mod, '', us);
    const src = isSrc(f) ? f : ancestor(id, isSrc);
    if (src) {
      name = src.functionName || '(anonymous)';
      add(bySrc, `${name}@${where(src)}`, name, where(src), us);
    } else {
      const lib = f.url ? moduleOf(f.url, f.functionName) : (ancestor(id, (a) => a.url !== '')?.url ?? '');
      const label = `(no gateway frame on the stack: ${lib.startsWith('file:') || lib.startsWith('node:') ? moduleOf(lib, '') : lib || f.functionName})`;
      add(bySrc, label, label, '', us);
    }
  }
  const rank = (xs: Iterable<HotSpot>) =>
    [...xs]
      .map((h) => ({ ...h, selfPct: busy ? (100 * h.selfMs * 1000) / busy : 0 }))
      .sort((a, b) => b.selfMs - a.selfMs)
      .slice(0, top);
  return {
    functions: rank(byFn.values()),
    modules: rank(byModule.values()),
    bySrcFrame: rank(bySrc.values()),
    busyMs: busy / 1000,
    windowMs: Number.isFinite(to - from) ? (to - from) / 1000 : (profile.endTime - profile.startTime) / 1000,
    samples: count,
  };
}

/**
 * The 1-based source line of a frame. tsx compiles src/ without line breaks (every function is on
 * line 1 of the compiled code), so for our own files the line is found by the function's name in
 * the TypeScript source; "?" when the name is not unique or the function is anonymous.
 */
function sourceLine(f: CallFrame, cache: Map<string, string[]>): string {
  const file = f.url.replace(/^file:\/\//, '');
  const compiledFlat = f.lineNumber === 0 && f.url.startsWith(`file://${ROOT}/src/`);
  if (!compiledFlat) return String(f.lineNumber + 1);
  let lines = cache.get(file);
  if (!lines) {
    try {
      lines = readFileSync(file, 'utf8').split('\n');
    } catch {
      lines = [];
    }
    cache.set(file, lines);
  }
  const name = f.functionName.replace(/^(get|set) /, '');
  if (!name || !/^[\w$#]+$/.test(name)) return '?';
  const esc = name.replace(/[$]/g, '\\$');
  const re = new RegExp(`(?:function\\*?\\s+${esc}\\s*[(<]|(?:const|let|var)\\s+${esc}\\s*[:=]|^\\s*(?:(?:public|private|protected|static|readonly|async|override)\\s+)*(?:get\\s+|set\\s+)?${esc}\\s*[(<]|class\\s+${esc}\\b)`);
  const hits = lines.flatMap((l, i) => (re.test(l) ? [i + 1] : []));
  return hits.length === 1 ? String(hits[0]) : hits.length > 1 ? hits.join('|') : '?';
}

function moduleOf(url: string, fn: string): string {
  if (!url) return fn === '(garbage collector)' ? '(garbage collector)' : `(native: ${fn || 'anonymous'})`;
  const u = shortUrl(url);
  const pkg = /^node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
  if (pkg) return `node_modules/${pkg[1]}`;
  if (u.startsWith('node:')) return u.replace(/^node:internal\//, 'node:internal/').split('/').slice(0, 3).join('/');
  return u;
}

function shortUrl(url: string): string {
  let u = url.replace(/^file:\/\//, '');
  if (u.startsWith(ROOT + '/')) u = u.slice(ROOT.length + 1);
  return u.replace(/^.*node_modules\//, 'node_modules/').split('?')[0];
}

interface ProfileResult {
  summary?: ProfileSummary;
  note: string;
  file?: string;
}

async function profileGateway(dir: string, configFile: string, apiKey: string, expect: Expect, o: ProxyBenchOptions): Promise<ProfileResult> {
  const profDir = join(dir, 'cpuprofile');
  mkdirSync(profDir, { recursive: true });
  const gw = await startGateway(dir, configFile, ['--cpu-prof', `--cpu-prof-dir=${profDir}`, '--cpu-prof-interval=250'], 'gateway-profiled');
  const target: PathTarget = { name: 'gateway-http', url: gw.urls['echo-http'], pid: gw.pid, role: 'gateway (profiled)' };
  const figures = await concurrent(target, apiKey, expect, o, o.profileMs);
  // The profile is written when the process exits; serve exits on SIGTERM after draining.
  await stop(gw.child, 'SIGTERM', 10_000);
  const exitedAt = performance.now();
  const files = readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) return { note: 'no profile written (the gateway did not exit cleanly on SIGTERM)' };
  const file = join(profDir, files[0]);
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  // The profile ends when the process exits: map the timed phase onto its clock from there, so
  // start-up (tsx compiling the sources), session set-up and shutdown are left out.
  const [t0, t1] = figures.window;
  const from = profile.endTime - (exitedAt - t0) * 1000;
  const to = profile.endTime - (exitedAt - t1) * 1000;
  const summary = summarizeProfile(profile, from, to);
  return {
    summary,
    file,
    note: `gateway-http, ${o.clients} clients, timed phase only (${(summary.windowMs / 1000).toFixed(1)} s, ${summary.samples} busy samples); ${figures.rps.toFixed(0)} calls/s while profiled, gateway busy ${summary.busyMs.toFixed(0)} ms = ${((summary.busyMs * 1000) / Math.max(1, figures.calls)).toFixed(0)} µs per call`,
  };
}

// ---------------------------------------------------------------------------------------------
// The run

export async function benchProxy(options: Partial<ProxyBenchOptions> = {}): Promise<ProxyReport> {
  const o: ProxyBenchOptions = { ...DEFAULTS, ...options };
  const loadBefore = loadavg()[0];
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-'));
  const apiKey = `pcl_${randomBytes(32).toString('base64url')}`;
  let keepDir = false;
  try {
    const echoScript = await echoServerScript();

    o.progress('starting the echo upstream (HTTP)');
    const echo = track(spawn(process.execPath, [echoScript, '--http'], { detached: true, stdio: ['ignore', 'pipe', 'inherit'] }));
    const echoUrl = (await waitForLine(echo, 'stdout', /ECHO_URL (\S+)/, 15_000, 'echo server'))[1];

    o.progress('starting portcullis serve');
    const configFile = writeGatewayConfig(dir, echoUrl, echoScript, apiKey, o.gatewayLogLevel);
    const gw = await startGateway(dir, configFile);

    o.progress('starting mcp-proxy (stdio echo upstream)');
    const relayPort = await freePort();
    const relayBin = join(ROOT, 'node_modules', 'mcp-proxy', 'dist', 'bin', 'mcp-proxy.mjs');
    const relay = track(
      spawn(process.execPath, [relayBin, '--host', '127.0.0.1', '--port', String(relayPort), '--server', 'stream', '--', process.execPath, echoScript, '--stdio'], {
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    await waitForLine(relay, 'stdout', /starting server on port/, 15_000, 'mcp-proxy');
    const relayUrl = `http://127.0.0.1:${relayPort}/mcp`;
    for (let i = 0; ; i++) {
      const ok = await fetch(relayUrl, { method: 'GET' }).then((r) => (r.body?.cancel(), true), () => false);
      if (ok) break;
      if (i > 100) throw new Error('mcp-proxy does not answer');
      await new Promise((r) => setTimeout(r, 50));
    }

    const targets: PathTarget[] = [
      { name: 'direct-http', url: echoUrl, pid: echo.pid!, role: 'echo upstream' },
      { name: 'gateway-http', url: gw.urls['echo-http'], pid: gw.pid, role: 'gateway' },
      { name: 'relay-stdio', url: relayUrl, pid: relay.pid!, role: 'mcp-proxy' },
      { name: 'gateway-stdio', url: gw.urls['echo-stdio'], pid: gw.pid, role: 'gateway' },
    ];

    const probe = await probeOutcome(gw.urls['echo-http'], apiKey);
    const policyEngineInStart = !readFileSync(join(ROOT, 'src', 'gateway', 'start.ts'), 'utf8').includes('(no policy engine)');
    o.progress(`gateway answers: ${probe.detail}`);
    if (policyEngineInStart && probe.outcome !== 'echo') {
      throw new Error(`src/gateway/start.ts wires a policy engine, yet the bench's allow policy did not allow echo: ${probe.detail}`);
    }
    const expects: Record<PathName, Expect> = { 'direct-http': 'echo', 'gateway-http': probe.outcome, 'relay-stdio': 'echo', 'gateway-stdio': probe.outcome };
    // Every path answers as expected before anything is timed.
    for (const t of targets) {
      const c = await connect(t.url, apiKey);
      await call(c, 1, expects[t.name]).finally(() => disconnect(c));
    }

    o.progress(`1 client, sequential: ${o.seqWarmup} warm-up + ${o.seqCalls} timed calls per path`);
    const seq = await sequential(targets, apiKey, expects, o);

    const conc = {} as Record<PathName, ConcurrentFigures>;
    for (const t of targets) {
      o.progress(`${o.clients} clients for ${o.durationMs / 1000} s: ${t.name}`);
      conc[t.name] = await concurrent(t, apiKey, expects[t.name], o);
    }

    let largePolicy: LargePolicyFigures | undefined;
    if (o.largePolicyCalls > 0 && probe.outcome === 'echo') {
      const largeDir = join(dir, 'large-policy');
      mkdirSync(largeDir);
      const { files, coveringRules } = generateLargePolicy(o.largePolicyRules);
      const largeConfig = writeGatewayConfig(largeDir, echoUrl, echoScript, apiKey, o.gatewayLogLevel, files);
      o.progress(`starting portcullis serve with a generated ${o.largePolicyRules}-rule policy (${Object.keys(files).length} files)`);
      const t0 = performance.now();
      const large = await startGateway(largeDir, largeConfig, [], 'gateway-large-policy');
      const startMs = performance.now() - t0;
      const largeProbe = await probeOutcome(large.urls['echo-http'], apiKey);
      if (largeProbe.outcome !== 'echo') throw new Error(`the generated large policy did not allow echo: ${largeProbe.detail}`);
      o.progress(`1 client, sequential: gateway-http with ${o.largePolicyRules} rules vs the small policy, ${o.largePolicyCalls} calls each`);
      const [small, big] = await sequentialPair([gw.urls['echo-http'], large.urls['echo-http']], apiKey, o.largePolicyCalls, Math.min(o.seqWarmup, 200));
      await stop(large.child);
      largePolicy = { rules: o.largePolicyRules, files: Object.keys(files).length, coveringRules, startMs, idleRssMb: large.idleRssMb, small, large: big };
    }

    await stop(gw.child);
    let prof: ProfileResult = { note: 'profiling disabled' };
    if (o.profile) {
      o.progress(`profiling the gateway (${o.clients} clients, ${o.profileMs / 1000} s, --cpu-prof)`);
      prof = await profileGateway(dir, configFile, apiKey, probe.outcome, o);
      if (prof.file) {
        // Keep the profile where it can be opened (Chrome DevTools, speedscope).
        const keep = join(CACHE_DIR, 'gateway.cpuprofile');
        writeFileSync(keep, readFileSync(prof.file));
        prof.file = keep;
      }
    }
    const { progress: _progress, ...shown } = o;
    void _progress;
    return {
      options: shown,
      machine: machineLine(),
      gatewayOutcome: probe.outcome === 'echo' ? 'allowed' : 'denied',
      gatewayOutcomeDetail: probe.detail,
      policyEngineInStart,
      sequential: seq,
      concurrent: conc,
      profile: prof.summary,
      profileNote: prof.note,
      profileFile: prof.file,
      gatewayIdleRssMb: gw.idleRssMb,
      load: [loadBefore, loadavg()[0]],
      relayDescription: 'mcp-proxy 6.7 (node_modules), Streamable HTTP front, one shared stdio child for all sessions',
      largePolicy,
    };
  } catch (e) {
    keepDir = true;
    throw Object.assign(e as Error, { message: `${(e as Error).message}\n(bench files kept in ${dir})` });
  } finally {
    await stopAll();
    if (!keepDir) rmSync(dir, { recursive: true, force: true });
  }
}

export function machineLine(): string {
  const cpus = readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m)?.[1] ?? 'unknown CPU';
  const n = (readFileSync('/proc/cpuinfo', 'utf8').match(/^processor\s*:/gm) ?? []).length;
  return `Node ${process.version}, ${n} × ${cpus.trim()}`;
}

// ---------------------------------------------------------------------------------------------
// Report

const ms = (v: number) => `${v.toFixed(3)} ms`;
const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');

export function formatProxyReport(r: ProxyReport): string {
  const out: string[] = [];
  const s = r.sequential;
  const c = r.concurrent;
  out.push('== Proxy: tools/call echo, direct vs gateway vs plain relay ==');
  out.push(`${r.machine}; load average ${r.load[0].toFixed(2)} before, ${r.load[1].toFixed(2)} after${Math.max(...r.load) > 1.5 ? ' (other work was running: figures are noisy)' : ''}`);
  out.push(`gateway: portcullis serve as its own process, logging.level=${r.options.gatewayLogLevel}, API-key auth, generated policy (6 rules, CEL when, 1 mask)`);
  out.push(`relay:   ${r.relayDescription}`);
  out.push(`gateway answer: ${r.gatewayOutcome.toUpperCase()} (${r.gatewayOutcomeDetail.slice(0, 110)})`);
  if (r.gatewayOutcome === 'denied') {
    out.push('  !! serve still fails closed (no policy engine wired in src/gateway/start.ts): gateway figures are the');
    out.push('  !! DENY path (decide + audit, no upstream round trip); they are not the allowed-call figures.');
  }
  out.push('');
  out.push(`-- 1 client, sequential (${r.options.seqCalls} timed calls per path after ${r.options.seqWarmup} warm-up, interleaved in 4 rounds) --`);
  out.push(pad(['path', 'p50', 'p90', 'p99', 'mean', 'max'], [16, 11, 11, 11, 11, 11]));
  for (const p of PATHS) out.push(pad([p, ms(s[p].p50), ms(s[p].p90), ms(s[p].p99), ms(s[p].mean), ms(s[p].max)], [16, 11, 11, 11, 11, 11]));
  const addP50 = s['gateway-http'].p50 - s['direct-http'].p50;
  const addP99 = s['gateway-http'].p99 - s['direct-http'].p99;
  const addStdioP50 = s['gateway-stdio'].p50 - s['relay-stdio'].p50;
  const addStdioP99 = s['gateway-stdio'].p99 - s['relay-stdio'].p99;
  out.push(`gateway added latency (gateway-http − direct-http): p50 ${ms(addP50)}  [target < 0.3 ms: ${verdict(addP50 < 0.3)}]   p99 ${ms(addP99)}  [target < 1 ms: ${verdict(addP99 < 1)}]`);
  out.push(`gateway vs relay, stdio upstream (gateway-stdio − relay-stdio): p50 ${ms(addStdioP50)}   p99 ${ms(addStdioP99)}`);
  out.push('');
  out.push(`-- ${r.options.clients} concurrent clients, ${(r.options.durationMs / 1000).toFixed(0)} s per path (one session each) --`);
  out.push(pad(['path', 'calls/s', 'calls', 'errors', 'CPU/call', 'loop CPU/call', 'peak RSS', 'VmHWM', 'measured process', 'loadgen CPU/call'], [16, 10, 8, 7, 11, 14, 10, 10, 18, 16]));
  const role: Record<PathName, string> = { 'direct-http': 'echo upstream', 'gateway-http': 'gateway', 'relay-stdio': 'mcp-proxy', 'gateway-stdio': 'gateway' };
  for (const p of PATHS) {
    const f = c[p];
    out.push(pad([p, f.rps.toFixed(0), String(f.calls), String(f.errors), `${f.cpuUsPerCall.toFixed(0)} µs`, `${f.loopCpuUsPerCall.toFixed(0)} µs`, `${f.peakRssMb.toFixed(1)} MB`, `${f.hwmMb.toFixed(1)} MB`, role[p], `${f.loadGenCpuUsPerCall.toFixed(0)} µs`], [16, 10, 8, 7, 11, 14, 10, 10, 18, 16]));
  }
  const ratioDirect = c['gateway-http'].rps / c['direct-http'].rps;
  const ratioRelay = c['gateway-stdio'].rps / c['relay-stdio'].rps;
  const gwCpu = Math.max(c['gateway-http'].cpuUsPerCall, c['gateway-stdio'].cpuUsPerCall);
  const gwMem = Math.max(c['gateway-http'].hwmMb, c['gateway-stdio'].hwmMb, c['gateway-http'].peakRssMb, c['gateway-stdio'].peakRssMb);
  out.push(`throughput gateway-http / direct-http: ${ratioDirect.toFixed(2)}`);
  out.push(`throughput gateway-stdio / relay-stdio: ${ratioRelay.toFixed(2)}  [target ≥ 1.00: ${verdict(ratioRelay >= 1)}]  (same stdio echo server; the gateway starts one child per session, mcp-proxy shares one)`);
  out.push(`gateway CPU per call: http ${c['gateway-http'].cpuUsPerCall.toFixed(0)} µs, stdio ${c['gateway-stdio'].cpuUsPerCall.toFixed(0)} µs  [target < 150 µs: ${verdict(gwCpu < 150)}]; of it on the event-loop thread: http ${c['gateway-http'].loopCpuUsPerCall.toFixed(0)} µs, stdio ${c['gateway-stdio'].loopCpuUsPerCall.toFixed(0)} µs`);
  out.push(`gateway memory: idle ${r.gatewayIdleRssMb.toFixed(1)} MB after start-up; peak VmRSS ${Math.max(c['gateway-http'].peakRssMb, c['gateway-stdio'].peakRssMb).toFixed(1)} MB, VmHWM ${Math.max(c['gateway-http'].hwmMb, c['gateway-stdio'].hwmMb).toFixed(1)} MB  [target < 150 MB: ${verdict(gwMem < 150)}]`);
  if (r.largePolicy) {
    const L = r.largePolicy;
    const rules = L.rules.toLocaleString('en-US');
    out.push('');
    out.push(`-- 1 client, gateway-http with a generated ${rules}-rule policy (${L.files} files; ${L.coveringRules} rules cover echo-http) vs the 6-rule one, ${L.large.calls} calls each, alternating --`);
    out.push(pad(['path', 'p50', 'p90', 'p99', 'mean', 'max'], [26, 11, 11, 11, 11, 11]));
    for (const [name, f] of [['gateway-http, 6 rules', L.small], [`gateway-http, ${rules} rules`, L.large]] as const) {
      out.push(pad([name, ms(f.p50), ms(f.p90), ms(f.p99), ms(f.mean), ms(f.max)], [26, 11, 11, 11, 11, 11]));
    }
    out.push(`${rules} rules − 6 rules (alternating calls): p50 ${ms(L.large.p50 - L.small.p50)}   p99 ${ms(L.large.p99 - L.small.p99)}`);
    out.push(`${rules} rules − the 6-rule gateway-http of the table above: p50 ${ms(L.large.p50 - s['gateway-http'].p50)}   p99 ${ms(L.large.p99 - s['gateway-http'].p99)}`);
    out.push(`${rules} rules − direct-http: p50 ${ms(L.large.p50 - s['direct-http'].p50)}   p99 ${ms(L.large.p99 - s['direct-http'].p99)}; start-up to listening ${L.startMs.toFixed(0)} ms, idle RSS ${L.idleRssMb.toFixed(1)} MB`);
  }
  out.push('');
  out.push(`-- gateway hot spots by self time (${r.profileNote}) --`);
  if (!r.profile) out.push('  (none)');
  else {
    out.push('  by function (self time, % of busy time):');
    for (const h of r.profile.functions) out.push(`  ${h.selfPct.toFixed(1).padStart(5)}%  ${h.selfMs.toFixed(0).padStart(6)} ms  ${h.fn}  ${h.where}`);
    out.push('  by the innermost gateway (src/) frame on the stack (gateway code plus what it calls):');
    for (const h of r.profile.bySrcFrame.slice(0, 15)) out.push(`  ${h.selfPct.toFixed(1).padStart(5)}%  ${h.selfMs.toFixed(0).padStart(6)} ms  ${h.fn}  ${h.where}`);
    out.push('  by module:');
    for (const h of r.profile.modules.slice(0, 12)) out.push(`  ${h.selfPct.toFixed(1).padStart(5)}%  ${h.selfMs.toFixed(0).padStart(6)} ms  ${h.fn}`);
  }
  if (r.profileFile) out.push(`  profile: ${r.profileFile} (open in Chrome DevTools or speedscope)`);
  return out.join('\n');
}

function pad(cells: string[], widths: number[]): string {
  return cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' ').trimEnd();
}

export const TARGETS = { addedP50Ms: 0.3, addedP99Ms: 1, cpuUsPerCall: 150, memoryMb: 150, relayRatio: 1 };
