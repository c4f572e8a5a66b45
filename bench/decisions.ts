// Policy decisions per second and p99 latency per decision as the bundle grows, on one core.
// Rules spread over 50 servers × 20 tools (one policy document per server), with group-based
// `who`, some globs, and CEL conditions on arguments. Run alone: npx tsx bench/decisions.ts
import { pathToFileURL } from 'node:url';
import type { Identity } from '../src/auth/identity.js';
import { compileBundle } from '../src/policy/compile.js';
import { decide } from '../src/policy/decide.js';
import type { DecisionInput } from '../src/policy/decision.js';

const SERVERS = 50;
const TOOLS = 20;
const GROUPS = 40;

/** A deterministic pseudo-random sequence, so runs compare. */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

/**
 * N rules: per server one guard rail (deny on any tool when the SQL drops something), the rest
 * team rules: 60% allow for a group on one tool, 10% the same with a CEL condition on arguments,
 * 5% allow for a group on a tool prefix glob, 15% approve for a group, 10% deny for one subject.
 * With `matches`, the team rules with a condition test the SQL with a regular expression instead
 * (RE2: named groups, `\A`, case folding), and there are three times as many of them.
 */
export function generateBundle(rules: number, matches = false) {
  const rand = rng(rules);
  const perServer = new Map<number, string[]>();
  const push = (server: number, rule: string) => (perServer.get(server) ?? perServer.set(server, []).get(server)!).push(`  - ${rule}`);
  for (let i = 0; i < rules; i++) {
    const server = i % SERVERS;
    if (i < SERVERS) {
      push(server, `{ name: r${i}, effect: deny, tools: ["*"], when: 'has(args.sql) && args.sql.matches("(?i)\\\\bdrop\\\\b")', message: no drops }`);
      continue;
    }
    const tool = Math.floor(rand() * TOOLS);
    const group = Math.floor(rand() * GROUPS);
    const r = rand();
    let rule: string;
    if (r < 0.6) rule = `{ name: r${i}, effect: allow, who: { groups: [g${group}] }, tools: [tool${tool}] }`;
    else if (matches && r < 0.9) rule = `{ name: r${i}, effect: allow, who: { groups: [g${group}] }, tools: [tool${tool}], when: 'args.sql.matches("(?i)\\\\A\\\\s*(?P<verb>select|with)\\\\s.*\\\\bfrom\\\\s+orders\\\\b")' }`;
    else if (r < 0.7) rule = `{ name: r${i}, effect: allow, who: { groups: [g${group}] }, tools: [tool${tool}], when: 'has(args.limit) && args.limit <= 100' }`;
    else if (r < 0.75) rule = `{ name: r${i}, effect: allow, who: { groups: [g${group}] }, tools: ["tool${tool % 10}*"] }`;
    else if (r < 0.9) rule = `{ name: r${i}, effect: approve, who: { groups: [g${group}] }, tools: [tool${tool}], approvers: { groups: [admins] } }`;
    else rule = `{ name: r${i}, effect: deny, who: { sub: [user${group}] }, tools: [tool${tool}] }`;
    push(server, rule);
  }
  const files: Record<string, string> = {};
  for (const [server, lines] of perServer) {
    files[`srv${server}.yaml`] = `apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: srv${server} }\nserver: srv${server}\nrules:\n${lines.join('\n')}\n`;
  }
  return compileBundle(files);
}

export function generateInputs(count: number): DecisionInput[] {
  const rand = rng(42);
  const identities: Identity[] = Array.from({ length: 100 }, (_, i) => ({
    sub: i === 0 ? 'mallory' : `user${i}`,
    groups: [`g${i % GROUPS}`, `g${(i * 7) % GROUPS}`, `g${(i * 13) % GROUPS}`],
    claims: { dept: 'eng' },
    via: 'oidc',
  }));
  const time = new Date();
  return Array.from({ length: count }, () => {
    const drop = rand() < 0.05;
    return {
      identity: identities[Math.floor(rand() * identities.length)],
      server: `srv${Math.floor(rand() * SERVERS)}`,
      method: 'tools/call',
      tool: `tool${Math.floor(rand() * TOOLS)}`,
      args: { sql: drop ? 'DROP TABLE users' : 'select * from orders where id = 1', limit: Math.floor(rand() * 200) },
      time,
    };
  });
}

export async function benchDecisions(): Promise<void> {
  const inputs = generateInputs(100_000);
  const rows: string[] = [];
  process.stdout.write('policy decisions, one core\n');
  process.stdout.write('(1000m: 1,000 rules, 30% with a `matches` condition, beside the guard rail that every row has)\n');
  process.stdout.write('rules    decisions/s   p50 (µs)  p99 (µs)  effects (allow/approve/deny)\n');
  const cases: Array<[number, boolean]> = [[10, false], [100, false], [1_000, false], [10_000, false], [1_000, true]];
  for (const [n, matches] of cases) {
    const bundle = generateBundle(n, matches);
    for (let i = 0; i < 50_000; i++) decide(bundle, inputs[i % inputs.length]); // warm up (JIT, view cache)
    // Throughput: as many decisions as fit in ~1 s.
    let done = 0;
    const start = process.hrtime.bigint();
    let elapsed = 0n;
    while (elapsed < 1_000_000_000n) {
      for (let i = 0; i < 10_000; i++) decide(bundle, inputs[(done + i) % inputs.length]);
      done += 10_000;
      elapsed = process.hrtime.bigint() - start;
    }
    const perSecond = Math.round((done * 1e9) / Number(elapsed));
    // Latency: each decision timed on its own.
    const samples = new Float64Array(100_000);
    const effects = { allow: 0, approve: 0, deny: 0 };
    for (let i = 0; i < samples.length; i++) {
      const t0 = process.hrtime.bigint();
      const d = decide(bundle, inputs[i]);
      samples[i] = Number(process.hrtime.bigint() - t0) / 1000;
      effects[d.effect]++;
    }
    samples.sort();
    const p = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))].toFixed(2);
    const row = `${(String(n) + (matches ? 'm' : '')).padEnd(8)} ${perSecond.toLocaleString('en-US').padStart(11)}   ${p(0.5).padStart(8)}  ${p(0.99).padStart(8)}  ${effects.allow}/${effects.approve}/${effects.deny}`;
    rows.push(row);
    process.stdout.write(row + '\n');
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await benchDecisions();
