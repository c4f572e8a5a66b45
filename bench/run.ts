// `npm run bench`: the proxy benchmark (direct vs gateway vs plain relay), then the policy
// decision, audit and auth benchmarks when their files are present; one report at the end.
//
// Environment (all optional): BENCH_SEQ_CALLS (2000), BENCH_CLIENTS (32), BENCH_DURATION_MS
// (5000 per path), BENCH_PROFILE=0 to skip the --cpu-prof run, BENCH_GATEWAY_LOG (info),
// BENCH_ONLY=proxy|decisions|audit|auth|masking|approvals (comma list) to run a subset.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchProxy, envChoice, formatProxyReport, stopAll } from './proxy.js';

const here = dirname(fileURLToPath(import.meta.url));
const env = (name: string, fallback: number) => (process.env[name] ? Number(process.env[name]) : fallback);
const only = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',').map((s) => s.trim())) : undefined;
const wanted = (name: string) => !only || only.has(name);

interface Section {
  name: string;
  text: string;
  failed?: boolean;
}

/** The other benchmarks export `benchX()`; each is optional, so a missing file does not break the run. */
const OPTIONAL: Array<{ name: string; file: string; fn: string }> = [
  { name: 'decisions', file: 'decisions.ts', fn: 'benchDecisions' },
  { name: 'audit', file: 'audit.ts', fn: 'benchAudit' },
  { name: 'auth', file: 'auth.ts', fn: 'benchAuth' },
  { name: 'masking', file: 'masking.ts', fn: 'benchMasking' },
  { name: 'approvals', file: 'approvals.ts', fn: 'benchApprovals' },
];

function render(value: unknown): string {
  if (value === undefined || value === null) return '(no report returned)';
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as { text?: unknown }).text === 'string') return (value as { text: string }).text;
  if (typeof value === 'object' && typeof (value as { report?: unknown }).report === 'string') return (value as { report: string }).report;
  return JSON.stringify(value, null, 2);
}

async function capturingStdout<T>(f: () => Promise<T>): Promise<{ result: T; printed: string }> {
  const original = process.stdout.write;
  let printed = '';
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    printed += text;
    process.stderr.write(text);
    const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    cb?.();
    return true;
  }) as typeof process.stdout.write;
  try {
    return { result: await f(), printed };
  } finally {
    process.stdout.write = original;
  }
}

async function main(): Promise<number> {
  const started = performance.now();
  const sections: Section[] = [];
  if (wanted('proxy')) {
    try {
      const report = await benchProxy({
        seqCalls: env('BENCH_SEQ_CALLS', 2000),
        clients: env('BENCH_CLIENTS', 32),
        durationMs: env('BENCH_DURATION_MS', 5000),
        profile: process.env.BENCH_PROFILE !== '0',
        gatewayLogLevel: process.env.BENCH_GATEWAY_LOG ?? 'info',
        auditWriter: envChoice('BENCH_AUDIT_WRITER', ['thread', 'loop'] as const),
      });
      sections.push({ name: 'proxy', text: formatProxyReport(report) });
    } catch (e) {
      sections.push({ name: 'proxy', text: `== Proxy ==\nFAILED: ${(e as Error).stack ?? (e as Error).message}`, failed: true });
    }
  }
  for (const b of OPTIONAL) {
    if (!wanted(b.name)) continue;
    const file = join(here, b.file);
    if (!existsSync(file)) {
      sections.push({ name: b.name, text: `== ${b.name} ==\n(skipped: bench/${b.file} is not there yet)` });
      continue;
    }
    process.stderr.write(`bench: ${b.fn}()\n`);
    try {
      // A computed specifier: the type checker does not require the file to exist.
      const mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
      const fn = mod[b.fn];
      if (typeof fn !== 'function') throw new Error(`bench/${b.file} does not export ${b.fn}()`);
      // They print their own tables: capture them (and echo them to stderr as progress), so the
      // report at the end is one piece.
      const { result, printed } = await capturingStdout(() => (fn as () => Promise<unknown>)());
      const text = [printed.trimEnd(), result === undefined ? '' : render(result)].filter(Boolean).join('\n');
      sections.push({ name: b.name, text: `== ${b.name} (bench/${b.file}) ==\n${text || '(no output)'}` });
    } catch (e) {
      sections.push({ name: b.name, text: `== ${b.name} ==\nFAILED: ${(e as Error).stack ?? (e as Error).message}`, failed: true });
    }
  }
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(`\n${'='.repeat(100)}\nPortcullis benchmark report (npm run bench, ${seconds.toFixed(0)} s)\n${'='.repeat(100)}\n`);
  for (const s of sections) process.stdout.write(`\n${s.text}\n`);
  return sections.some((s) => s.failed) ? 1 : 0;
}

const cleanup = () => void stopAll().finally(() => process.exit(130));
process.once('SIGINT', cleanup);
process.once('SIGTERM', cleanup);
const code = await main();
await stopAll();
process.exit(code);
