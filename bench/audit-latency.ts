// What the audit log and the session recordings cost per request, end to end: the same gateway
// (wired as `portcullis serve` wires it: policy files, SQLite store, synchronous=FULL) with
//   audit-on    the real audit log (a durable decision record before every forward) and recorder
//   audit-off   an audit sink that does nothing and no recorder
// in front of the same stdio echo upstream (test/fixtures/raw-server.mjs: plain JS, no SDK, so
// the upstream's own cost stays small), each gateway in its own
// process. Sequential calls alternate between the two so machine noise hits both alike; then N
// concurrent clients per gateway, one gateway at a time.
//   npx tsx bench/audit-latency.ts        (AUDIT_LATENCY_CALLS, AUDIT_LATENCY_CLIENTS, AUDIT_LATENCY_SECONDS)
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SELF = fileURLToPath(import.meta.url);

const POLICY = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: bench }
server: "*"
default: deny
rules:
  - { name: echo, effect: allow, tools: [echo] }
`;

/** Child mode: one gateway, audit on or off; prints "GATEWAY_URL <url>" once it listens. */
async function runGateway(mode: 'on' | 'off', configFile: string): Promise<void> {
  const { loadConfig } = await import('../src/config/load.js');
  const { serveFromConfig, wire } = await import('../src/gateway/start.js');
  const { startGateway } = await import('../src/gateway/gateway.js');
  const loaded = loadConfig(configFile);
  let running: { url(s: string): string; close(): Promise<void> };
  if (mode === 'on') {
    running = await serveFromConfig(loaded);
  } else {
    const wiring = await wire(loaded);
    const gw = await startGateway(loaded.config, { ...wiring.options, audit: { append: async () => undefined }, recorder: undefined, health: undefined });
    running = { url: gw.url, close: async () => (await gw.close(), await wiring.close()) };
  }
  process.stdout.write(`GATEWAY_URL ${running.url('echo')}\n`);
  process.once('SIGTERM', () => void running.close().then(() => process.exit(0)));
}

function startChild(mode: 'on' | 'off', configFile: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', SELF, '--gateway', mode, configFile], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolvePromise, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /GATEWAY_URL (\S+)/.exec(out);
      if (m) resolvePromise({ child, url: m[1] });
    });
    child.once('exit', (code) => reject(new Error(`gateway (audit ${mode}) exited ${code}`)));
  });
}

async function connect(url: string): Promise<Client> {
  const client = new Client({ name: 'bench', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  return client;
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

export async function benchAuditLatency(): Promise<void> {
  const calls = Number(process.env.AUDIT_LATENCY_CALLS ?? 2000);
  const clients = Number(process.env.AUDIT_LATENCY_CLIENTS ?? 16);
  const seconds = Number(process.env.AUDIT_LATENCY_SECONDS ?? 4);
  const dir = mkdtempSync(join(tmpdir(), 'pcl-bench-audit-latency-'));
  const children: ChildProcess[] = [];
  try {
    mkdirSync(join(dir, 'policies'));
    writeFileSync(join(dir, 'policies/bench.yaml'), POLICY);
    const config = {
      listen: { host: '127.0.0.1', port: 0 },
      servers: { echo: { transport: 'stdio', command: process.execPath, args: [join(ROOT, 'test/fixtures/raw-server.mjs')] } },
      auth: { anonymous: true },
      policy: { path: './policies', watch: false },
      store: { url: 'sqlite:./data/portcullis.db' },
      logging: { level: 'warn' },
    };
    writeFileSync(join(dir, 'portcullis.yaml'), JSON.stringify(config, null, 2));
    const on = await startChild('on', join(dir, 'portcullis.yaml'));
    const off = await startChild('off', join(dir, 'portcullis.yaml'));
    children.push(on.child, off.child);
    const targets = [
      { name: 'audit-on ', url: on.url },
      { name: 'audit-off', url: off.url },
    ];

    // Sequential: one client per gateway, calls alternate.
    const seq = await Promise.all(targets.map((t) => connect(t.url)));
    const lat: number[][] = targets.map(() => []);
    const warmup = Math.min(300, Math.floor(calls / 5));
    for (let i = 0; i < warmup + calls; i++) {
      for (let k = 0; k < targets.length; k++) {
        const t0 = performance.now();
        await seq[k].callTool({ name: 'echo', arguments: { message: `m${i}` } });
        if (i >= warmup) lat[k].push(performance.now() - t0);
      }
    }
    await Promise.all(seq.map((c) => c.close()));
    const p = lat.map((l) => l.sort((a, b) => a - b)).map((l) => ({ p50: pct(l, 0.5), p90: pct(l, 0.9), p99: pct(l, 0.99) }));
    for (const [k, t] of targets.entries()) {
      console.log(`sequential ${t.name}: p50 ${p[k].p50.toFixed(3)} ms  p90 ${p[k].p90.toFixed(3)} ms  p99 ${p[k].p99.toFixed(3)} ms  (${calls} calls)`);
    }
    console.log(`audit adds, sequential: p50 ${(p[0].p50 - p[1].p50).toFixed(3)} ms  p90 ${(p[0].p90 - p[1].p90).toFixed(3)} ms  p99 ${(p[0].p99 - p[1].p99).toFixed(3)} ms`);

    // Concurrent: N clients on one gateway at a time, for a fixed time.
    for (const t of targets) {
      const cs = await Promise.all(Array.from({ length: clients }, () => connect(t.url)));
      const l: number[] = [];
      const deadline = performance.now() + seconds * 1000;
      const start = performance.now();
      await Promise.all(
        cs.map(async (c, i) => {
          for (let n = 0; performance.now() < deadline; n++) {
            const t0 = performance.now();
            await c.callTool({ name: 'echo', arguments: { message: `c${i}-${n}` } });
            l.push(performance.now() - t0);
          }
        }),
      );
      const elapsed = (performance.now() - start) / 1000;
      await Promise.all(cs.map((c) => c.close()));
      l.sort((a, b) => a - b);
      console.log(`${clients} clients ${t.name}: ${Math.round(l.length / elapsed)} calls/s  p50 ${pct(l, 0.5).toFixed(2)} ms  p99 ${pct(l, 0.99).toFixed(2)} ms`);
    }
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
    rmSync(dir, { recursive: true, force: true });
  }
}

const argv = process.argv.slice(2);
if (argv[0] === '--gateway') await runGateway(argv[1] as 'on' | 'off', argv[2]);
else if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await benchAuditLatency();
