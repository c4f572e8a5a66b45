// The approval desk on PostgreSQL, where a held call is released by NOTIFY alone (no polling): an
// approval decided on another replica while the holding replica still writes its audit record
// (the approval is in the store already, the call not yet waiting) must release the call at once.
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { postgresSchema, skipWithoutPostgres } from '../../test/fixtures/postgres.js';
import type { Identity } from '../auth/identity.js';
import type { Decision } from '../policy/decision.js';
import { openStore } from '../store/open.js';
import { ApprovalDesk } from './approvals.js';
import type { Classified } from './classify.js';
import type { Exchange } from './pipeline.js';
import { Session } from './session.js';

test('an approval decided while its call is being held (before the wait began) releases the call at once', { skip: skipWithoutPostgres }, async (t) => {
  const { url } = await postgresSchema(t);
  const store = await openStore(url, process.cwd());
  t.after(() => store.close());
  const log = pino({ level: 'silent' });
  const desk = new ApprovalDesk({
    store,
    log,
    timeoutMs: 5_000,
    webhooks: [],
    // Another replica approves while this one writes the approval's audit record; its NOTIFY
    // arrives before the call waits.
    audit: {
      append: async (type, _actor, data) => {
        if (type !== 'approval.requested') return;
        await store.settleApproval(data.approvalId as string, { status: 'approved', decidedBy: 'replica-b' });
        await new Promise((r) => setTimeout(r, 300));
      },
    },
  });
  await desk.start();
  t.after(() => desk.close());

  const identity: Identity = { sub: 'alice', groups: [], claims: {}, via: 'local' };
  const host = { toUpstream: async () => undefined, toClient: async () => undefined, ended: () => undefined, log, limits: { upstreamTimeoutMs: 60_000, maxResultBytes: 1 << 20, idleTimeoutMs: 60_000 } };
  const session = new Session('s1', 'pay', identity, { send: async () => undefined, close: async () => undefined }, host);
  t.after(() => session.end('test over'));
  const params = { name: 'refund', arguments: { amount: 5 } };
  const message = { jsonrpc: '2.0', id: 1, method: 'tools/call', params } as JSONRPCMessage;
  const m = { type: 'request', id: 1, method: 'tools/call', params, message, action: { kind: 'tool', tool: 'refund', args: { amount: 5 } } } as unknown as Extract<Classified, { type: 'request' }>;
  const x = { session, identity, direction: 'toUpstream', raw: message, startedAt: 0, msg: m, turnReady: Promise.resolve(), releaseTurn: () => undefined } as unknown as Exchange;
  const decision: Decision = { effect: 'approve', rule: 'pay/refunds', bundleVersion: 'v1', approvers: { groups: ['finance'] } };

  const started = performance.now();
  const outcome = await desk.hold(x, m, { identity, server: 'pay', method: 'tools/call', tool: 'refund', args: { amount: 5 }, time: new Date() }, decision, 'd1');
  const took = performance.now() - started;
  assert.equal(outcome.kind, 'approved');
  assert.ok(took < 2_000, `released after ${Math.round(took)} ms: the decision was missed until the approval's expiry`);
});
