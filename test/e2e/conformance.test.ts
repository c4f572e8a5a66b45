// Transparency, measured: the official MCP conformance server suite
// (@modelcontextprotocol/conformance 0.1.13, all active server scenarios, 40 checks) must pass
// in full against our conformant fixture, and score exactly the same through the gateway.
//
//   node --import tsx --test test/e2e/conformance.test.ts
//
// Results of each run are kept under $TMPDIR/portcullis-conformance-*/ when a test fails.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startConformanceServer, type ConformanceServer } from '../fixtures/conformance-server.js';
import {
  describeFailures,
  diffStatuses,
  runConformanceDetailed,
  scored,
  summarize,
  type ConformanceRun,
} from '../fixtures/conformance.js';
import { freePort, ROOT, startTestGateway, type TestGateway } from './harness.js';

/** Every check the 0.1.13 active server suite makes, as `scenario/checkId`. */
const EXPECTED_CHECKS = [
  'completion-complete/completion-complete',
  'dns-rebinding-protection/localhost-host-rebinding-rejected',
  'dns-rebinding-protection/localhost-host-valid-accepted',
  'elicitation-sep1034-defaults/elicitation-sep1034-boolean-default',
  'elicitation-sep1034-defaults/elicitation-sep1034-enum-default',
  'elicitation-sep1034-defaults/elicitation-sep1034-integer-default',
  'elicitation-sep1034-defaults/elicitation-sep1034-number-default',
  'elicitation-sep1034-defaults/elicitation-sep1034-string-default',
  'elicitation-sep1330-enums/elicitation-sep1330-legacy-enumnames',
  'elicitation-sep1330-enums/elicitation-sep1330-titled-multi',
  'elicitation-sep1330-enums/elicitation-sep1330-titled-single',
  'elicitation-sep1330-enums/elicitation-sep1330-untitled-multi',
  'elicitation-sep1330-enums/elicitation-sep1330-untitled-single',
  'logging-set-level/logging-set-level',
  'ping/ping',
  'prompts-get-embedded-resource/prompts-get-embedded-resource',
  'prompts-get-simple/prompts-get-simple',
  'prompts-get-with-args/prompts-get-with-args',
  'prompts-get-with-image/prompts-get-with-image',
  'prompts-list/prompts-list',
  'resources-list/resources-list',
  'resources-read-binary/resources-read-binary',
  'resources-read-text/resources-read-text',
  'resources-subscribe/resources-subscribe',
  'resources-templates-read/resources-templates-read',
  'resources-unsubscribe/resources-unsubscribe',
  'server-initialize/server-initialize',
  'server-sse-multiple-streams/server-accepts-multiple-post-streams',
  'server-sse-multiple-streams/server-sse-streams-functional',
  'tools-call-audio/tools-call-audio',
  'tools-call-elicitation/tools-call-elicitation',
  'tools-call-embedded-resource/tools-call-embedded-resource',
  'tools-call-error/tools-call-error',
  'tools-call-image/tools-call-image',
  'tools-call-mixed-content/tools-call-mixed-content',
  'tools-call-sampling/tools-call-sampling',
  'tools-call-simple-text/tools-call-simple-text',
  'tools-call-with-logging/tools-call-with-logging',
  'tools-call-with-progress/tools-call-with-progress',
  'tools-list/tools-list',
];

const workDir = mkdtempSync(join(tmpdir(), 'portcullis-conformance-'));
let failed = false;

function report(label: string, run: ConformanceRun): void {
  const { passed, total } = summarize(run.statuses);
  console.log(`conformance ${label}: ${passed}/${total} checks passed in ${(run.durationMs / 1000).toFixed(1)} s`);
}

/**
 * The suite's checks are lenient: a `tools/call` answered with an error result (say "unknown
 * tool", or a policy denial) still passes tools-call-simple-text. So the details each check
 * records (the results the client saw) are compared too, except where they carry the
 * endpoint's own URL or port.
 */
const DETAILS_VARY_BY_ENDPOINT = new Set(['server-initialize', 'dns-rebinding-protection', 'server-sse-multiple-streams']);

function comparableDetails(run: ConformanceRun): Map<string, string> {
  const out = new Map<string, string>();
  for (const [key, check] of run.checks) {
    if (DETAILS_VARY_BY_ENDPOINT.has(check.scenario) || (check.status !== 'SUCCESS' && check.status !== 'FAILURE')) continue;
    out.set(key, JSON.stringify(check.details ?? null));
  }
  return out;
}

/** Tool calls whose result was an error though the scenario expects a normal result. */
function unexpectedToolErrors(run: ConformanceRun): string[] {
  return [...run.checks]
    .filter(([key, c]) => key !== 'tools-call-error/tools-call-error' && (c.details as { result?: { isError?: unknown } } | undefined)?.result?.isError === true)
    .map(([key, c]) => `${key}: ${JSON.stringify((c.details as { result: unknown }).result)}`);
}

function failureReport(run: ConformanceRun): string {
  return `${describeFailures(run).join('\n')}\n--- suite output (tail)\n${run.stdout.slice(-3000)}${run.stderr.slice(-2000)}\nresults in ${workDir}`;
}

describe('MCP conformance suite 0.1.13 (server scenarios)', { concurrency: false }, () => {
  let fixture: ConformanceServer;
  let direct: Promise<ConformanceRun> | undefined;
  /** The direct run, made once and shared by the comparison below. */
  const directRun = () => (direct ??= runConformanceDetailed(fixture.url, join(workDir, 'direct')));

  before(async () => {
    fixture = await startConformanceServer();
  });

  after(async () => {
    await fixture?.close();
    if (!failed) rmSync(workDir, { recursive: true, force: true });
  });

  test('every check passes directly against the fixture', async (t) => {
    try {
      const run = await directRun();
      report('direct', run);
      const scoredChecks = scored(run.statuses);
      assert.deepEqual([...scoredChecks.keys()].sort(), EXPECTED_CHECKS, 'the suite ran exactly the 40 known checks');
      assert.deepEqual(describeFailures(run), [], `failed checks:\n${failureReport(run)}`);
      assert.equal(summarize(run.statuses).passed, 40);
      assert.deepEqual(unexpectedToolErrors(run), [], 'tool calls answered with an error result');
      assert.equal(run.exitCode, 0, `suite exit code\n${failureReport(run)}`);
    } catch (e) {
      failed = true;
      t.diagnostic(`results kept in ${workDir}`);
      throw e;
    }
  });

  /** Runs the suite through `gw` and asserts it scores exactly like the direct run. */
  async function assertSameThroughGateway(t: { diagnostic(msg: string): void }, gw: TestGateway, label: string): Promise<void> {
    try {
      const expected = await directRun();
      const run = await runConformanceDetailed(gw.url('conf'), join(workDir, label));
      report(`through gateway (${label})`, run);
      const diff = diffStatuses(expected.statuses, run.statuses);
      if (diff.length > 0) {
        console.log(`differences (direct → gateway, ${label}):\n${diff.map((d) => `  ${d}`).join('\n')}`);
        for (const line of describeFailures(run)) console.log(`  ${line}`);
      }
      assert.deepEqual(diff, [], `statuses differ through the gateway (${label}):\n${diff.join('\n')}\n${failureReport(run)}`);
      assert.equal(run.exitCode, expected.exitCode);
      const want = comparableDetails(expected);
      const got = comparableDetails(run);
      const detailDiff = [...want.keys()]
        .filter((k) => want.get(k) !== got.get(k))
        .map((k) => `${k}:\n    direct:  ${want.get(k)}\n    gateway: ${got.get(k) ?? 'absent'}`);
      assert.deepEqual(detailDiff, [], `what the client saw differs through the gateway (${label}):\n${detailDiff.join('\n')}`);
    } catch (e) {
      failed = true;
      t.diagnostic(`results kept in ${workDir}`);
      throw e;
    }
  }

  describe('through the gateway (default listen settings)', () => {
    let gateway: TestGateway;

    before(async () => {
      // port 0, anonymous access, allow-everything policy (see harness.ts)
      gateway = await startTestGateway({ conf: { transport: 'http', url: fixture.url } });
    });

    after(async () => {
      await gateway?.close();
    });

    test('scores the same as directly, check by check', async (t) => {
      await assertSameThroughGateway(t, gateway, 'gateway-default');
    });

    test('pending scenarios (JSON Schema 2020-12, SSE polling) score the same too', async (t) => {
      try {
        const [expected, run] = [
          await runConformanceDetailed(fixture.url, join(workDir, 'pending-direct'), { suite: 'pending' }),
          await runConformanceDetailed(gateway.url('conf'), join(workDir, 'pending-gateway'), { suite: 'pending' }),
        ];
        // Only SUCCESS/FAILURE are compared: the SSE-polling scenario's INFO/WARNING entries
        // log events and hints whose number may legitimately differ.
        const diff = diffStatuses(scored(expected.statuses), scored(run.statuses));
        if (diff.length > 0) console.log(`pending differences (direct → gateway):\n${diff.map((d) => `  ${d}`).join('\n')}`);
        assert.deepEqual(describeFailures(expected), [], 'pending scenarios pass directly');
        assert.deepEqual(diff, [], `pending statuses differ through the gateway:\n${diff.join('\n')}\n${failureReport(run)}`);
      } catch (e) {
        failed = true;
        t.diagnostic(`results kept in ${workDir}`);
        throw e;
      }
    });
  });

  // The suite's DNS-rebinding check sends `Origin: http://<the endpoint's own host:port>` and
  // expects 2xx. The gateway refuses every Origin not in listen.allowedOrigins (none by
  // default), so this run lists the gateway's own origin: then every check must match.
  describe('through the gateway (its own origin in listen.allowedOrigins)', () => {
    let gateway: TestGateway;

    before(async () => {
      const port = await freePort();
      gateway = await startTestGateway(
        { conf: { transport: 'http', url: fixture.url } },
        { listen: { port, allowedOrigins: [`http://127.0.0.1:${port}`] } },
      );
    });

    after(async () => {
      await gateway?.close();
    });

    test('scores the same as directly, check by check', async (t) => {
      await assertSameThroughGateway(t, gateway, 'gateway-own-origin');
    });
  });

  // The same fixture as a stdio upstream (one child process per session): exercises the
  // gateway's stdio connector. Slower (~25 s): every scenario's session spawns node + tsx.
  describe('through the gateway to a stdio upstream (own origin allowed)', () => {
    let gateway: TestGateway;

    before(async () => {
      const port = await freePort();
      gateway = await startTestGateway(
        { conf: { transport: 'stdio', command: process.execPath, args: ['--import', 'tsx', join(ROOT, 'test/fixtures/conformance-server.ts'), '--stdio'] } },
        { listen: { port, allowedOrigins: [`http://127.0.0.1:${port}`] } },
      );
    });

    after(async () => {
      await gateway?.close();
    });

    test('scores the same as directly (HTTP fixture), check by check', async (t) => {
      await assertSameThroughGateway(t, gateway, 'gateway-stdio');
    });
  });
});
