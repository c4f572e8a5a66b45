// What the audit log and the session recordings cost per request, end to end: the same gateway
// (wired as `portcullis serve` wires it: policy files, SQLite store, synchronous=FULL), three ways:
//   thread   the audit log and recorder write through the writer thread (what serve does)
//   loop     they write on the event loop (what wrap does)
//   off      an audit sink that does nothing and no recorder
// in front of the same stdio echo upstream (test/fixtures/raw-server.mjs: plain JS, no SDK, so
// the upstream's own cost stays small), each gateway in its own process. Sequential calls go to
// the three in turn, and the concurrent phase is cut into rounds that alternate between them, so
// noise from a shared machine falls on all alike. CPU per call is read from /proc: the whole
// gateway process, and its event-loop thread alone.
// AUDIT_LATENCY_FSYNC_DELAY_US emulates a slower disk (network block storage): every fsync of
// the gateways returns that much later (strace fault injection; needs strace).
// AUDIT_LATENCY_POSTGRES=postgres://… puts each gateway's store in PostgreSQL instead (a schema
// of its own, dropped at the end).
//   npx tsx bench/audit-latency.ts   (AUDIT_LATENCY_CALLS, AUDIT_LATENCY_CLIENTS, AUDIT_LATENCY_SECONDS,
//                                     AUDIT_LATENCY_ROUNDS, AUDIT_LATENCY_MODES=thread,loop,off,
//                                     AUDIT_LATENCY_FSYNC_DELAY_US, AUDIT_LATENCY_POSTGRES)
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SELF = fileURLToPath(import.meta.url);

type Mode = 'thread' | 'loop' | 'off';

const POLICY = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: bench }
server: "*"
default: deny
rules:
  - { name: echo, effect: allow, tools: [echo] }
`;

/** Child mode: one gateway; prints "GATEWAY_URL <url> <pid>" once it listens. */
async function runGateway(mode: Mode, configFile: string): Promise<void> {
  const { loadConfig } = await import('../src/config/load.js');
  const { wire } = await import('../src/gateway/start.js');
  const { startGateway } = await import('../src/gateway/gateway.js');
  const loaded = loadConfig(configFile);
  const wiring = await wire(loaded, { thread: mode === 'thread' });
  const options = mode === 'off' ? { ...wiring.options, audit: { append: async () => undefined }, recorder: undefined, health: undefined } : wiring.options;
  const gw = await startGateway(loaded.config, options);
  process.stdout.write(`GATEWAY_URL ${gw.url('echo')} ${process.pid}\n`);
  process.once('SIGTERM', () => void gw.close().then(() => wiring.close()).then(() => process.exit(0)));
}

function startChild(mode: Mode, configFile: string): Promise<{ child: ChildProcess; url: string; pid: number }> {
  const args = ['--import', 'tsx', SELF, '--gateway', mode, configFile];
  const delay = Number(process.env.AUDIT_LATENCY_FSYNC_DELAY_US ?? 0);
  const child = delay
    ? spawn('strace', ['-f', '--seccomp-bpf', '-e', 'trace=fsync,fdatasync', '-e', `inject=fsync,fdatasync:delay_exit=${delay}`, '-o', '/dev/null', process.execPath, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolvePromise, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /GATEWAY_URL (\S+) (\d+)/.exec(out);
      if (m) resolvePromise({ child, url: m[1], pid: Number(m[2]) });
    });
    child.once('exit', (code) => reject(new Error(`gateway (${mode}) exited ${code}`)));
  });
}

async function connect(url: string): Promise<Client> {
  const client = new Client({ name: 'bench', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  return client;
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

export async function benchAuditLatency(): Promise<void> {
  const { cpuMicros } = await import('./proxy.js'); // not in the gateway children
  const calls = Number(process.env.AUDIT_LATENCY_CALLS ?? 2000);
  const clients = Number(process.env.AUDIT_LATENCY_CLIENTS ?? 16);
  const seconds = Number(process.env.AUDIT_LATENCY_SECONDS ?? 12);
  const rounds = Number(process.env.AUDIT_LATENCY_ROUNDS ?? 4);
  const modes = (process.env.AUDIT_LATENCY_MODES ?? 'thread,loop,off').split(',') as Mode[];
  const dir = mkdtempSync(join(tmpdir(), 'pcl-bench-audit-latency-'));
  const children: { child: ChildProcess; pid: number }[] = [];
  const postgres = process.env.AUDIT_LATENCY_POSTGRES;
  const admin = postgres ? new (await import('pg')).default.Client(postgres) : undefined;
  await admin?.connect();
  const schemas: string[] = [];
  try {
    const targets: { name: Mode; url: string; pid: number }[] = [];
    for (const mode of modes) {
      const sub = join(dir, mode);
      mkdirSync(join(sub, 'policies'), { recursive: true });
      writeFileSync(join(sub, 'policies/bench.yaml'), POLICY);
      const config = {
        listen: { host: '127.0.0.1', port: 0 },
        servers: { echo: { transport: 'stdio', command: process.execPath, args: [join(ROOT, 'test/fixtures/raw-server.mjs')] } },
        auth: { anonymous: true },
        policy: { path: './policies', watch: false },
        store: { url: 'sqlite:./data/portcullis.db' },
        ...(postgres && { store: { url: `${postgres}${postgres.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=pcl_latency_${mode}_${process.pid}`)}` } }),
        logging: { level: 'warn' },
      };
      if (admin) {
        schemas.push(`pcl_latency_${mode}_${process.pid}`);
        await admin.query(`CREATE SCHEMA ${schemas.at(-1)}`);
      }
      writeFileSync(join(sub, 'portcullis.yaml'), JSON.stringify(config, null, 2));
      const g = await startChild(mode, join(sub, 'portcullis.yaml'));
      children.push(g);
      targets.push({ name: mode, url: g.url, pid: g.pid });
    }

    // Sequential: one client per gateway, calls in turn (the order rotates).
    const seq = await Promise.all(targets.map((t) => connect(t.url)));
    const lat: number[][] = targets.map(() => []);
    const warmup = Math.min(300, Math.floor(calls / 5));
    for (let i = 0; i < warmup + calls; i++) {
      for (let j = 0; j < targets.length; j++) {
        const k = (i + j) % targets.length;
        const t0 = performance.now();
        await seq[k].callTool({ name: 'echo', arguments: { message: `m${i}` } });
        if (i >= warmup) lat[k].push(performance.now() - t0);
      }
    }
    await Promise.all(seq.map((c) => c.close()));
    for (const [k, t] of targets.entries()) {
      const l = lat[k].sort((a, b) => a - b);
      console.log(`sequential ${t.name.padEnd(6)}: p50 ${pct(l, 0.5).toFixed(3)} ms  p90 ${pct(l, 0.9).toFixed(3)} ms  p99 ${pct(l, 0.99).toFixed(3)} ms  (${calls} calls)`);
    }

    // Concurrent: N clients per gateway; `rounds` rounds, each gateway in turn, seconds/rounds each.
    const sessions = await Promise.all(targets.map((t) => Promise.all(Array.from({ length: clients }, () => connect(t.url)))));
    const totals = targets.map(() => ({ calls: 0, seconds: 0, cpu: 0, loop: 0, lat: [] as number[] }));
    for (let r = 0; r < rounds; r++) {
      for (let j = 0; j < targets.length; j++) {
        const k = (r + j) % targets.length;
        const { pid } = targets[k];
        const tot = totals[k];
        const [cpu0, loop0, t0] = [cpuMicros(pid), cpuMicros(pid, pid), performance.now()];
        const deadline = t0 + (seconds * 1000) / rounds;
        await Promise.all(
          sessions[k].map(async (c, i) => {
            for (let n = 0; performance.now() < deadline; n++) {
              const t = performance.now();
              await c.callTool({ name: 'echo', arguments: { message: `c${i}-${n}` } });
              tot.lat.push(performance.now() - t);
              tot.calls++;
            }
          }),
        );
        tot.seconds += (performance.now() - t0) / 1000;
        tot.cpu += cpuMicros(pid) - cpu0;
        tot.loop += cpuMicros(pid, pid) - loop0;
      }
    }
    await Promise.all(sessions.flat().map((c) => c.close()));
    for (const [k, t] of targets.entries()) {
      const tot = totals[k];
      const l = tot.lat.sort((a, b) => a - b);
      console.log(
        `${clients} clients ${t.name.padEnd(6)}: ${Math.round(tot.calls / tot.seconds)} calls/s  p50 ${pct(l, 0.5).toFixed(2)} ms  p99 ${pct(l, 0.99).toFixed(2)} ms` +
          `  CPU per call: process ${(tot.cpu / tot.calls).toFixed(0)} µs, event-loop thread ${(tot.loop / tot.calls).toFixed(0)} µs`,
      );
    }
  } finally {
    for (const { pid } of children) process.kill(pid, 'SIGTERM'); // the gateway itself, also under strace
    await Promise.all(children.map(({ child }) => new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)))));
    for (const schema of schemas) await admin!.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin?.end();
    rmSync(dir, { recursive: true, force: true });
  }
}

const argv = process.argv.slice(2);
if (argv[0] === '--gateway') await runGateway(argv[1] as Mode, argv[2]);
else if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await benchAuditLatency();
