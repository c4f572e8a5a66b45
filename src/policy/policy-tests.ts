// Runs policy tests (*.test.yaml beside the policies) against the same compiler and decide()
// as the gateway.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { LineCounter, parseDocument } from 'yaml';
import { lineOf, yamlErrorAt, zodProblems } from '../config/load.js';
import { PortcullisError, type Problem } from '../errors.js';
import { isTestFile, loadBundle, type CompiledBundle } from './compile.js';
import { maskerFor } from '../masking/select.js';
import { decide } from './decide.js';
import type { DecisionInput } from './decision.js';
import { policyTestFile, type PolicyTestCase } from './schema.js';

export interface TestResult {
  file: string;
  line?: number;
  name: string;
  passed: boolean;
  /** Why it failed. */
  why?: string;
}

export interface TestRun {
  bundle: CompiledBundle;
  results: TestResult[];
  passed: number;
  failed: number;
}

const DEFAULT_METHOD = { tool: 'tools/call', resource: 'resources/read', prompt: 'prompts/get' } as const;

/** The policy path and the test files for a path: a folder, a policy file, or a test file. */
export function locateTests(path: string): { policyPath: string; testFiles: string[] } {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new PortcullisError('PCL_POLICY_INVALID', `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (st.isFile()) {
    if (isTestFile(path)) return { policyPath: dirname(path), testFiles: [path] };
    const stem = path.replace(/\.(ya?ml|json)$/, '');
    const testFiles = [`${stem}.test.yaml`, `${stem}.test.yml`].filter((f) => {
      try {
        return statSync(f).isFile();
      } catch {
        return false;
      }
    });
    return { policyPath: path, testFiles };
  }
  const testFiles: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (e.name.startsWith('.') || e.name === 'node_modules') continue;
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (e.isFile() && isTestFile(e.name)) testFiles.push(join(dir, e.name));
    }
  };
  walk(path);
  return { policyPath: path, testFiles };
}

function parseTestFile(file: string): { tests: PolicyTestCase[]; lines: (i: number) => number | undefined } {
  const text = readFileSync(file, 'utf8');
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: false, uniqueKeys: true });
  const fail = (problems: Problem[]) => {
    throw new PortcullisError('PCL_POLICY_INVALID', `${file} is not a valid policy test file`, problems);
  };
  if (doc.errors.length) fail(doc.errors.map((e) => ({ file, ...yamlErrorAt(e, counter) })));
  const parsed = policyTestFile.safeParse(doc.toJS());
  if (!parsed.success) fail(zodProblems(parsed.error, file, doc, counter, policyTestFile));
  return { tests: parsed.data!.tests, lines: (i) => lineOf(doc, counter, ['tests', i]) };
}

export function testInput(t: PolicyTestCase): DecisionInput {
  const target = t.tool !== undefined ? 'tool' : t.resource !== undefined ? 'resource' : t.prompt !== undefined ? 'prompt' : undefined;
  const input: DecisionInput = {
    identity: { sub: t.identity.sub, groups: t.identity.groups, claims: t.identity.claims, via: 'local' },
    server: t.server,
    method: t.serverRequest ?? t.method ?? (target ? DEFAULT_METHOD[target] : ''),
    time: t.time ? new Date(t.time) : new Date(),
  };
  if (t.serverRequest !== undefined) input.from = 'server';
  if (t.tool !== undefined) input.tool = t.tool;
  if (t.resource !== undefined) input.resource = t.resource;
  if (t.prompt !== undefined) input.prompt = t.prompt;
  if (t.args !== undefined || t.tool !== undefined || t.prompt !== undefined || t.serverRequest !== undefined) input.args = t.args ?? {};
  return input;
}

/** The HMAC key of the hash strategy in policy tests, so expected values can be written down (never a deployment's key). */
export const TEST_HASH_KEY = 'portcullis-policy-tests';

/** Runs one test case against a bundle; returns why it failed, or undefined when it passed. */
export function checkCase(bundle: CompiledBundle, t: PolicyTestCase): string | undefined {
  const input = testInput(t);
  const d = decide(bundle, input);
  const got = `${d.effect} by ${d.rule}${d.message ? ` (${d.message})` : ''}`;
  // A result test may leave the decision out: then only what the client would see is checked.
  if (t.expect !== undefined && d.effect !== t.expect) return `expected ${t.expect}, got ${got}`;
  if (t.rule !== undefined) {
    const same = t.rule.includes('/') ? d.rule === t.rule : d.rule.slice(d.rule.indexOf('/') + 1) === t.rule;
    if (!same) return `expected rule ${t.rule}, got ${got}`;
  }
  if (t.expectResult === undefined) return undefined;
  const target = t.tool !== undefined ? { kind: 'tool' as const, name: t.tool } : t.resource !== undefined ? { kind: 'resource' as const, name: t.resource } : { kind: 'prompt' as const, name: t.prompt! };
  let seen: unknown;
  try {
    const masker = maskerFor(bundle, input.identity, t.server, target, Buffer.from(TEST_HASH_KEY));
    seen = masker ? masker.envelope(t.result) : t.result;
  } catch (e) {
    return `masking failed: ${(e as Error).message}`;
  }
  if (!isDeepStrictEqual(seen, t.expectResult)) return `expected result ${JSON.stringify(t.expectResult)}, got ${JSON.stringify(seen)}`;
  return undefined;
}

/**
 * Runs the tests for a path (a folder: its policies and every *.test.yaml under it; a policy
 * file: it and its sibling <name>.test.yaml; a test file: it against the policies of its folder).
 * Throws PortcullisError when the bundle or a test file is invalid.
 */
export function runPolicyTests(path: string): TestRun {
  const { policyPath, testFiles } = locateTests(path);
  const bundle = loadBundle(policyPath);
  const results: TestResult[] = [];
  for (const file of testFiles) {
    const { tests, lines } = parseTestFile(file);
    tests.forEach((t, i) => {
      const why = checkCase(bundle, t);
      results.push({ file, line: lines(i), name: t.name, passed: why === undefined, why });
    });
  }
  const passed = results.filter((r) => r.passed).length;
  return { bundle, results, passed, failed: results.length - passed };
}

/** The report: one line per failed test, then exactly `N passed, N failed`. */
export function formatTestRun(run: TestRun): string {
  const lines = run.results.filter((r) => !r.passed).map((r) => `FAIL ${r.file}${r.line ? `:${r.line}` : ''} ${r.name}: ${r.why}`);
  lines.push(`${run.passed} passed, ${run.failed} failed`);
  return lines.join('\n') + '\n';
}
