// The cost of masking one result, on one core: a 10 KB tools/call result (text content and the
// same text as structuredContent) through every built-in detector and a field path, with few
// values to mask (the usual case) and with many (a leaky result). Run alone: npx tsx bench/masking.ts
import { pathToFileURL } from 'node:url';
import { compileBundle } from '../src/policy/compile.js';
import { maskerFor } from '../src/masking/select.js';

const POLICY = `apiVersion: portcullis/v1
kind: Policy
metadata: { name: bench }
server: db
default: allow
masks:
  - name: all
    detectors: [email, phone, credit_card, iban, us_ssn, ipv4, ipv6, jwt, private_key, aws_access_key, github_token, slack_token]
    fields: ["$.rows[*].ssn"]
`;

const PROSE = 'The quarterly report lists revenue by region, with notes from the finance team on 2024-03-31 figures (version 1.4.2). ';
const LEAKS = 'Contact bob.smith@example.com or +44 20 7946 0958; card 4111 1111 1111 1111; host 10.1.2.3; key AKIAIOSFODNN7EXAMPLE. ';

function result(leaky: boolean): unknown {
  let text = '';
  let i = 0;
  while (text.length < 10_240) text += leaky && i++ % 3 === 0 ? LEAKS : PROSE;
  text = text.slice(0, 10_240);
  return { content: [{ type: 'text', text }], structuredContent: { summary: text.slice(0, 2048), rows: [{ id: 1, ssn: '123-45-6789' }] } };
}

export async function benchMasking(): Promise<string> {
  const bundle = compileBundle({ 'bench.yaml': POLICY });
  const masker = maskerFor(bundle, { sub: 'b', groups: [], claims: {}, via: 'local' }, 'db', { kind: 'tool', name: 'query' })!;
  const lines = ['masking a 10 KB tools/call result (12 detectors + 1 field path), one core:', 'case        µs/result p50   p99'];
  for (const leaky of [false, true]) {
    const r = result(leaky);
    for (let i = 0; i < 200; i++) masker.envelope(r); // warm up
    const samples: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const t0 = process.hrtime.bigint();
      masker.envelope(r);
      samples.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
    samples.sort((a, b) => a - b);
    const p = (q: number) => samples[Math.floor(q * (samples.length - 1))].toFixed(0);
    lines.push(`${(leaky ? 'leaky' : 'typical').padEnd(12)}${p(0.5).padStart(10)}  ${p(0.99).padStart(5)}`);
  }
  const text = lines.join('\n') + '\n';
  process.stdout.write(text);
  return text;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await benchMasking();
