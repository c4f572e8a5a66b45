// SharedUpstream against a real stdio server (test/fixtures/raw-server.mjs, which records every
// line it receives), driven with generated sessions, request ids and cancellations. Whatever the
// sessions send, each gets exactly the answers to its own requests under its own ids, the server
// sees only ids of the connection's own, and a cancellation reaches it only for a request of the
// session that sent it.
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { ROOT, tempDir, waitFor } from '../../test/e2e/harness.js';
import { ANONYMOUS } from '../auth/identity.js';
import { gatewayMessage, policyPoint } from '../gateway/decide.js';
import { compileBundle } from '../policy/compile.js';
import { SharedUpstream, type Lease } from './shared.js';
import { connectUpstream } from './upstream.js';

const points = policyPoint({ current: () => compileBundle({ 'p.yaml': 'apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: p }\nserver: "*"\ndefault: allow\nrules: []\n' }) });
const authorize = (m: object) => gatewayMessage(points, { append: async () => undefined }, ANONYMOUS, 'raw', m as JSONRPCMessage);

async function openShared(record: string): Promise<SharedUpstream> {
  const server = { transport: 'stdio' as const, era: '2025' as const, command: process.execPath, args: [join(ROOT, 'test/fixtures/raw-server.mjs')], env: { RECORD_FILE: record }, share: 'credential' as const, shareIdle: 0 };
  const shared = new SharedUpstream(await connectUpstream('raw', server, pino({ level: 'silent' }), ROOT), () => undefined);
  await shared.open(authorize, 5_000);
  return shared;
}

type Op = { session: number; kind: 'call'; id: RequestId; ms: number } | { session: number; kind: 'cancel'; id: RequestId };
const op = (sessions: number) =>
  fc.oneof(
    fc.record({ session: fc.nat(sessions - 1), kind: fc.constant('call' as const), id: fc.constantFrom<RequestId>(1, 2, '1', 'a', 'pcl-1'), ms: fc.nat(25) }),
    fc.record({ session: fc.nat(sessions - 1), kind: fc.constant('cancel' as const), id: fc.constantFrom<RequestId>(1, 2, '1', 'a', 'pcl-1', 'pcl-2', 'pcl-open') }),
  );

test('generated sessions, colliding ids and cancellations: each session gets its own answers; the server sees only the connection\'s ids and only a session\'s own cancellations', async () => {
  const dir = tempDir('pcl-shared-unit-');
  try {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 2, max: 3 }).chain((n) => fc.tuple(fc.constant(n), fc.array(op(n), { minLength: 1, maxLength: 14 }))), async ([n, ops]) => {
        const record = join(dir.path, 'received.jsonl');
        rmSync(record, { force: true });
        const shared = await openShared(record);
        const leases: Lease[] = [];
        const got: JSONRPCMessage[][] = [];
        for (let i = 0; i < n; i++) {
          const lease = shared.lease()!;
          got.push([]);
          lease.onmessage = (m) => got[i].push(m);
          leases.push(lease);
        }
        // What each session expects: an answer for each call it did not cancel (a session never
        // has two requests with one id in flight: the Session admits ids so).
        const inFlight = leases.map(() => new Map<RequestId, string>());
        const expected = leases.map(() => [] as Array<{ id: RequestId; tag: string }>);
        let tags = 0;
        for (const o of ops) {
          const lease = leases[o.session];
          if (o.kind === 'call') {
            if (inFlight[o.session].has(o.id)) continue;
            const tag = `s${o.session}-${tags++}`;
            inFlight[o.session].set(o.id, tag);
            await lease.send(await authorize({ jsonrpc: '2.0', id: o.id, method: 'tools/call', params: { name: 'slow', arguments: { ms: o.ms, tag } } }));
          } else {
            inFlight[o.session].delete(o.id);
            await lease.send(await authorize({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: o.id, reason: `by s${o.session}` } }));
          }
        }
        for (let i = 0; i < n; i++) for (const [id, tag] of inFlight[i]) expected[i].push({ id, tag });
        const answered = () => got.every((g, i) => g.length >= expected[i].length);
        await waitFor('every call the sessions kept to be answered', answered, 3_000);
        await new Promise((r) => setTimeout(r, 40)); // the cancelled calls' late answers, which must go nowhere
        for (let i = 0; i < n; i++) {
          const answers = got[i].map((m) => ({ id: (m as { id: RequestId }).id, tag: ((m as unknown as { result: { content: Array<{ text: string }> } }).result.content[0].text).replace('slow done: ', '') }));
          const byTag = (a: { tag: string }, b: { tag: string }) => a.tag.localeCompare(b.tag);
          assert.deepEqual(answers.sort(byTag), expected[i].sort(byTag), `session ${i}`);
        }
        const lines = existsSync(record) ? readFileSync(record, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
        const tagOf = new Map<RequestId, string>(lines.filter((m) => m.method === 'tools/call').map((m) => [m.id, m.params.arguments.tag]));
        for (const m of lines) {
          if (m.method !== undefined && m.id !== undefined) assert.match(String(m.id), /^pcl-/, `the server saw a client's id: ${JSON.stringify(m)}`);
          if (m.method === 'notifications/cancelled') {
            // Only a request of the same session, under the id the server knows it by.
            assert.equal(tagOf.get(m.params.requestId)?.split('-')[0], m.params.reason.replace('by ', ''), JSON.stringify(m));
          }
        }
        for (const lease of leases) await lease.close();
      }),
      { numRuns: 25 },
    );
  } finally {
    dir.remove();
  }
});
