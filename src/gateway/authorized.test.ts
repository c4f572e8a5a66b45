// `Authorized` is nominal: only the decide stage can make one. The type-check (tsc --noEmit, which
// includes this file) is the assertion: if a literal of the right shape were accepted, the
// expect-error directives below would be unused, and tsc would fail.
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Decision } from '../policy/decision.js';
import { connectUpstream, type Upstream } from '../upstreams/upstream.js';
import { pino } from 'pino';
import { canonicalize } from '../audit/canonical.js';
import { ANONYMOUS } from '../auth/identity.js';
import { compileBundle } from '../policy/compile.js';
import { Authorized, gatewayMessage, policyPoint, translated } from './decide.js';

const message = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'wipe' } } as JSONRPCMessage;
const decision: Decision = { effect: 'allow', rule: 'forged', bundleVersion: 'none' };

describe('Authorized', () => {
  test('an object literal of the same shape is not an Authorized, for the compiler', () => {
    // @ts-expect-error a literal lacks the private #brand
    const forged: Authorized = { message, decision };
    const send = (_: Authorized) => undefined;
    // @ts-expect-error nor can one be passed where an upstream expects an Authorized
    send({ message, decision });
    assert.equal(Authorized.is(forged), false);
  });

  test('an upstream refuses a forged message at run time too (a cast gets past the compiler)', async () => {
    const upstream: Upstream = await connectUpstream('raw', { transport: 'stdio', era: '2025', command: process.execPath, args: ['-e', 'process.stdin.resume()'], env: {}, share: 'none' }, pino({ level: 'silent' }), process.cwd());
    try {
      await assert.rejects(upstream.send({ message, decision } as unknown as Authorized), /refused a message that carries no decision/);
    } finally {
      await upstream.close();
    }
  });

  describe('translated: another hop\'s ids, never another decision', () => {
    const records: Array<{ type: string; data: Record<string, unknown> }> = [];
    const points = policyPoint({ current: () => compileBundle({ 'p.yaml': 'apiVersion: portcullis/v1\nkind: Policy\nmetadata: { name: p }\nserver: "*"\ndefault: deny\nrules: []\n' }) });
    const decided = (m: object) => gatewayMessage(points, { append: async (type, _actor, data) => void records.push({ type, data }) }, ANONYMOUS, 'srv', m as JSONRPCMessage);

    test('gatewayMessage records its decision before it hands out the message', async () => {
      const a = await decided({ jsonrpc: '2.0', id: 'pcl-open', method: 'initialize', params: {} });
      assert.equal(Authorized.is(a), true);
      assert.equal(records.at(-1)!.type, 'decision');
      assert.equal(records.at(-1)!.data.rule, 'protocol/gateway');
      assert.equal(records.at(-1)!.data.requestId, 'pcl-open');
      const failing = gatewayMessage(points, { append: async () => Promise.reject(new Error('disk full')) }, ANONYMOUS, 'srv', { jsonrpc: '2.0', method: 'notifications/initialized' } as JSONRPCMessage);
      await assert.rejects(failing, /disk full/);
    });

    test('the id, the progress token and a cancellation\'s requestId may change', async () => {
      const call = await decided({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: { x: 1 }, _meta: { progressToken: 't' } } });
      const moved = translated(call, { jsonrpc: '2.0', id: 'pcl-9', method: 'tools/call', params: { name: 'echo', arguments: { x: 1 }, _meta: { progressToken: 'pcl-p-9' } } } as JSONRPCMessage);
      assert.equal((moved.message as { id: unknown }).id, 'pcl-9');
      const cancel = await decided({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 7, reason: 'r' } });
      assert.equal(Authorized.is(translated(cancel, { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 'pcl-9', reason: 'r' } } as JSONRPCMessage)), true);
    });

    test('generated parameters: a copy (same values or equal ones) passes with a new id and envelope; any other change of a decided member throws', async () => {
      await fc.assert(
        fc.asyncProperty(fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 5 }), fc.string(), fc.jsonValue(), async (params, key, other) => {
          const decidedParams = Object.fromEntries(Object.entries(params).filter(([k]) => !['_meta', 'inputResponses', 'requestState'].includes(k)));
          const a = await decided({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: decidedParams });
          const same = { jsonrpc: '2.0', id: 'pcl-1', method: 'tools/call', params: { ...decidedParams, _meta: { progressToken: 'p' } } };
          assert.equal(Authorized.is(translated(a, same as JSONRPCMessage)), true);
          assert.equal(Authorized.is(translated(a, JSON.parse(JSON.stringify(same)) as JSONRPCMessage)), true);
          if (['_meta', 'inputResponses', 'requestState'].includes(key)) return;
          const changed = { ...decidedParams, [key]: other };
          if (canonicalize(changed) === canonicalize(decidedParams)) return; // no change after all (the same value, or -0 for 0)
          assert.throws(() => translated(a, { ...same, params: changed } as JSONRPCMessage), /changed what was decided/);
        }),
        { numRuns: 200 },
      );
    });

    test('anything policy decided on may not change', async () => {
      const call = await decided({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: { x: 1 } } });
      for (const params of [{ name: 'wipe', arguments: { x: 1 } }, { name: 'echo', arguments: { x: 2 } }, { name: 'echo', arguments: { x: 1 }, requestId: 3 }]) {
        assert.throws(() => translated(call, { jsonrpc: '2.0', id: 7, method: 'tools/call', params } as JSONRPCMessage), /changed what was decided/);
      }
      const cancel = await decided({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 7, reason: 'r' } });
      assert.throws(() => translated(cancel, { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 7, reason: 'other' } } as JSONRPCMessage), /changed what was decided/);
      // Only a cancellation's requestId is another hop's id: elsewhere it is a parameter like any other.
      const progress = await decided({ jsonrpc: '2.0', method: 'notifications/progress', params: { requestId: 7, progressToken: 't', progress: 1 } });
      assert.throws(() => translated(progress, { jsonrpc: '2.0', method: 'notifications/progress', params: { requestId: 8, progressToken: 't', progress: 1 } } as JSONRPCMessage), /changed what was decided/);
    });
  });
});
