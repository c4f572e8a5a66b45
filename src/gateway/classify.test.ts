// classify is the only check a message gets before it is decided and forwarded (the HTTP front no
// longer runs the SDK's schema too): whatever it lets through, a receiver validating with the
// SDK's JSON-RPC schema must accept, or the upstream would drop a decided request unanswered.
import { JSONRPCMessageSchema } from '@modelcontextprotocol/sdk/types.js';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { classify, ShapeError } from './classify.js';

const absent = Symbol('absent');
/** Mostly a value of `valid`, sometimes one of `invalid`: most messages pass, so the property bites. */
const mostly = <T, U>(valid: fc.Arbitrary<T>, invalid: fc.Arbitrary<U>) => fc.oneof({ arbitrary: valid, weight: 6 }, { arbitrary: invalid, weight: 1 });
/** A member that is sometimes there (rarely, when `rare`). */
const member = <T>(values: fc.Arbitrary<T>, rare = false) => fc.oneof({ arbitrary: fc.constant(absent), weight: rare ? 8 : 1 }, { arbitrary: values, weight: rare ? 1 : 2 });
const anyValue = fc.oneof(fc.string({ maxLength: 5 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(fc.integer(), { maxLength: 2 }), fc.dictionary(fc.string({ maxLength: 3 }), fc.integer(), { maxKeys: 2 }));
const obj = fc.dictionary(fc.string({ maxLength: 3 }), anyValue, { maxKeys: 2 });
const jsonrpc = mostly(fc.constant('2.0'), fc.constantFrom('1.0', 2));
const id = mostly(fc.oneof(fc.string({ maxLength: 5 }), fc.integer()), fc.oneof(fc.constantFrom(2 ** 53, -(2 ** 53) - 2, 1.5, NaN), anyValue));
const meta = mostly(
  fc.record({
    progressToken: member(mostly(fc.oneof(fc.string({ maxLength: 3 }), fc.integer()), fc.oneof(fc.constantFrom(2 ** 60, 0.5), anyValue))),
    'io.modelcontextprotocol/related-task': member(mostly(fc.record({ taskId: fc.string() }), fc.oneof(fc.record({ taskId: fc.integer() }), anyValue)), true),
    'vendor.example/x': member(anyValue, true),
  }),
  anyValue,
);
const params = mostly(
  fc.record({
    _meta: member(meta),
    name: mostly(fc.string({ maxLength: 5 }), anyValue),
    arguments: member(mostly(obj, anyValue)),
    protocolVersion: mostly(fc.string({ maxLength: 10 }), anyValue),
    capabilities: mostly(obj, anyValue),
    clientInfo: mostly(obj, anyValue),
    requestId: member(fc.oneof(fc.string(), fc.integer())),
  }),
  anyValue,
);
const extra = member(anyValue, true);
const request = fc.record({ jsonrpc, id, method: mostly(fc.constantFrom('ping', 'tools/call', 'tools/list', 'initialize', 'sampling/createMessage', 'vendor/thing'), anyValue), params: member(params), extra, result: member(obj, true) });
const notification = fc.record({ jsonrpc, method: mostly(fc.constantFrom('notifications/progress', 'notifications/cancelled', 'notifications/initialized'), anyValue), params: member(params), extra, id: member(id, true) });
const result = mostly(fc.record({ _meta: member(meta), content: member(anyValue) }), anyValue);
const error = mostly(fc.record({ code: mostly(fc.integer(), fc.constantFrom(1.5, 2 ** 53)), message: mostly(fc.string({ maxLength: 5 }), anyValue), data: member(anyValue) }), anyValue);
const response = fc.oneof(fc.record({ jsonrpc, id, result, extra, error: member(error, true) }), fc.record({ jsonrpc, id, error, extra, result: member(result, true) }));
const message = fc.oneof(request, notification, response);
const materialise = (m: Record<string, unknown>): unknown => {
  const strip = (v: unknown): unknown => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).filter(([, x]) => x !== absent).map(([k, x]) => [k, strip(x)])) : v);
  return strip(m);
};

describe('classify', () => {
  for (const fromClient of [true, false]) {
    test(`lets through nothing the SDK's JSON-RPC schema refuses (${fromClient ? 'from the client' : 'from the upstream'})`, () => {
      fc.assert(
        fc.property(message, (m) => {
          const raw = materialise(m);
          try {
            classify(raw, fromClient);
          } catch (e) {
            if (e instanceof ShapeError) return;
            throw e;
          }
          assert.ok(JSONRPCMessageSchema.safeParse(raw).success, `classify passed ${JSON.stringify(raw)}`);
        }),
        { numRuns: 20_000 },
      );
    });
  }

  test('what the HTTP front used to leave to the SDK transport is refused, naming it', () => {
    const refused: Array<[unknown, RegExp]> = [
      [{ jsonrpc: '2.0', id: 1, method: 'ping', extra: 1 }, /unexpected member "extra"/],
      [{ jsonrpc: '2.0', id: 1, result: {}, extra: 1 }, /unexpected member "extra"/],
      [JSON.parse('{"jsonrpc":"2.0","id":1,"method":"ping","__proto__":{}}'), /unexpected member "__proto__"/],
      [{ jsonrpc: '2.0', id: 2 ** 53, method: 'ping' }, /id must be a string or an integer/],
      [{ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x', _meta: { progressToken: {} } } }, /params\._meta\.progressToken/],
      [{ jsonrpc: '2.0', method: 'notifications/progress', params: { _meta: [] } }, /params\._meta must be an object/],
      [{ jsonrpc: '2.0', id: 1, result: { _meta: { 'io.modelcontextprotocol/related-task': { taskId: 1 } } } }, /related-task/],
    ];
    for (const [raw, why] of refused) assert.throws(() => classify(raw, true), (e: Error) => e instanceof ShapeError && why.test(e.message), JSON.stringify(raw));
    // Unknown _meta keys and extra params stay: they are the receiver's business.
    assert.equal(classify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x', extra: 1, _meta: { progressToken: 'p', 'vendor.example/x': { y: 1 } } } }, true).type, 'request');
  });
});
