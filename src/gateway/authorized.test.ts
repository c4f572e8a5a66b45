// `Authorized` is nominal: only the decide stage can make one. The type-check (tsc --noEmit, which
// includes this file) is the assertion: if a literal of the right shape were accepted, the
// expect-error directives below would be unused, and tsc would fail.
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Decision } from '../policy/decision.js';
import { connectUpstream, type Upstream } from '../upstreams/upstream.js';
import { pino } from 'pino';
import { Authorized } from './decide.js';

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
});
