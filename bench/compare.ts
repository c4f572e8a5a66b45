// Gateway builds and settings side by side (docs/bench.md, "Comparing builds"): the same echo
// upstream and 1,000-rule policy behind several gateways at once, 1-client calls interleaved call
// by call, then 32-client rounds per gateway in A B … B A order, so drift on a shared machine
// falls on every variant alike. `npm run bench` measures one build against direct and the relays;
// this tells whether a change helped.
//
//   npx tsx bench/compare.ts '[{"name":"before","src":"../before-checkout"},{"name":"after"},{"name":"loop","config":{"audit":{"writer":"loop"}}}]'
//
// A variant: name; src, another checkout whose src/ is compiled and run (default: this one);
// config, members merged into the generated portcullis.yaml; flags, node options; log, the
// logging.level. COMPARE_PATHS (2026-stdio,2026-http,2025-http), COMPARE_SEQ (calls per variant
// and path, 1000; 0 skips), COMPARE_SECONDS (per variant and path, 6; 0 skips), COMPARE_CLIENTS (32).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compiledGateway, cpuMicros, echoServerScript, generateLargePolicy, memoryMb, openClient, startGateway, stopAll, summarize, track, waitForLine, writeGatewayConfig, type ClientKind, type Gateway } from './proxy.js';

interface Variant {
  name: string;
  src?: string;
  config?: Record<string, unknown>;
  flags?: string[];
  log?: string;
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const num = (name: string, fallback: number) => (process.env[name] ? Number(process.env[name]) : fallback);
const PATHS = (process.env.COMPARE_PATHS ?? '2026-stdio,2026-http,2025-http').split(',');
const SEQ = num('COMPARE_SEQ', 1000);
const SECONDS = num('COMPARE_SECONDS', 6);
const CLIENTS = num('COMPARE_CLIENTS', 32);

/** The client a path uses and the gateway server it calls. */
function pathOf(p: string): [ClientKind, string] {
  if (!/^(2025|2026)-(http|stdio)$/.test(p)) throw new Error(`COMPARE_PATHS: ${p} is not one of 2025-http, 2025-stdio, 2026-http, 2026-stdio`);
  return [p.startsWith('2026') ? 'raw-2026' : 'sdk', p.endsWith('stdio') ? 'echo-stdio' : 'echo-http'];
}

async function main(): Promise<void> {
  const variants = JSON.parse(process.argv[2] ?? '[{"name":"this"}]') as Variant[];
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-compare-'));
  const apiKey = `pcl_${randomBytes(32).toString('base64url')}`;
  const echoScript = await echoServerScript();
  const echo = track(spawn(process.execPath, [echoScript, '--http'], { detached: true, stdio: ['ignore', 'pipe', 'inherit'] }));
  const echoUrl = (await waitForLine(echo, 'stdout', /ECHO_URL (\S+)/, 15_000, 'echo server'))[1];
  const { files } = generateLargePolicy(1000);
  const gateways: Gateway[] = [];
  for (const v of variants) {
    const d = join(dir, v.name);
    const config = writeGatewayConfig(d, echoUrl, echoScript, apiKey, v.log ?? 'info', files, v.config ?? {});
    const main = v.src ? await compiledGateway(resolve(v.src), join(ROOT, 'node_modules', '.cache', `portcullis-compare-${v.name}`)) : undefined;
    gateways.push(await startGateway(d, config, v.flags ?? [], v.name, { main }));
  }
  console.log(`load average ${loadavg()[0].toFixed(2)}; idle RSS ${gateways.map((g, i) => `${variants[i].name} ${g.idleRssMb.toFixed(1)} MB`).join(', ')}`);

  if (SEQ > 0) {
    const targets = [{ label: 'direct (2025 session, small client)', c: await openClient('raw-2025', echoUrl, apiKey) }];
    for (const p of PATHS) for (const [i, g] of gateways.entries()) targets.push({ label: `${variants[i].name} ${p}`, c: await openClient(pathOf(p)[0], g.urls[pathOf(p)[1]], apiKey) });
    for (let i = 0; i < 200; i++) for (const t of targets) await t.c.call(i, 'echo');
    const lat = targets.map(() => [] as number[]);
    for (let i = 0; i < SEQ; i++) {
      for (let k = 0; k < targets.length; k++) {
        const j = i % 2 ? targets.length - 1 - k : k; // A B … B A
        const t0 = performance.now();
        await targets[j].c.call(i, 'echo');
        lat[j].push(performance.now() - t0);
      }
    }
    console.log(`-- 1 client, ${SEQ} calls each, interleaved call by call: ms`);
    for (const [k, t] of targets.entries()) {
      const s = summarize(lat[k]);
      console.log(`${t.label.padEnd(36)} p50 ${s.p50.toFixed(3)}  p90 ${s.p90.toFixed(3)}  p99 ${s.p99.toFixed(3)}  mean ${s.mean.toFixed(3)}`);
    }
    await Promise.all(targets.map((t) => t.c.close()));
  }

  if (SECONDS > 0) {
    console.log(`-- ${CLIENTS} clients, ${SECONDS} s per variant and path in two rounds (A B … B A)`);
    for (const p of PATHS) {
      const [kind, server] = pathOf(p);
      const sums = gateways.map(() => ({ calls: 0, cpu: 0, loop: 0, rss: 0 }));
      for (const i of [...gateways.keys(), ...[...gateways.keys()].reverse()]) {
        const g = gateways[i];
        const clients = [];
        for (let n = 0; n < CLIENTS; n += 8) clients.push(...(await Promise.all(Array.from({ length: Math.min(8, CLIENTS - n) }, () => openClient(kind, g.urls[server], apiKey)))));
        await Promise.all(clients.map(async (c) => {
          for (let n = 0; n < 20; n++) await c.call(n, 'echo');
        }));
        let calls = 0;
        let rss = 0;
        const sampler = setInterval(() => (rss = Math.max(rss, memoryMb(g.pid).rss)), 50);
        const cpu0 = cpuMicros(g.pid);
        const loop0 = cpuMicros(g.pid, g.pid);
        const end = performance.now() + (SECONDS * 1000) / 2;
        await Promise.all(clients.map(async (c, n) => {
          for (let j = 0; performance.now() < end; j++, calls++) await c.call(n * 1e6 + j, 'echo');
        }));
        clearInterval(sampler);
        const s = sums[i];
        s.calls += calls;
        s.cpu += cpuMicros(g.pid) - cpu0;
        s.loop += cpuMicros(g.pid, g.pid) - loop0;
        s.rss = Math.max(s.rss, rss);
        await Promise.all(clients.map((c) => c.close()));
      }
      for (const [i, s] of sums.entries()) {
        console.log(`${`${variants[i].name} ${p}`.padEnd(36)} calls/s ${(s.calls / SECONDS).toFixed(0).padStart(5)}  CPU/call ${(s.cpu / s.calls).toFixed(0)} µs  loop ${(s.loop / s.calls).toFixed(0)} µs  peak RSS ${s.rss.toFixed(0)} MB`);
      }
    }
  }
  console.log(`load average after ${loadavg()[0].toFixed(2)}`);
}

main()
  .catch((e: Error) => {
    console.error(e.stack ?? e.message);
    process.exitCode = 1;
  })
  .finally(() => stopAll());
