import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { canonicalize } from './canonical.js';

test('RFC 8785 3.2.3: members sorted by UTF-16 code units', () => {
  const input = { '\u20ac': 'Euro Sign', '\r': 'Carriage Return', '\ufb33': 'Hebrew Letter Dalet With Dagesh', '1': 'One', '\ud83d\ude00': 'Emoji: Grinning Face', '\u0080': 'Control', '\u00f6': 'Latin Small Letter O With Diaeresis' };
  // (Compared as text: JSON.parse would put the integer-like key "1" first again.)
  const order = ['\r', '1', '\u0080', '\u00f6', '\u20ac', '\ud83d\ude00', '\ufb33'];
  assert.equal(canonicalize(input), `{${order.map((k) => `${JSON.stringify(k)}:${JSON.stringify(input[k as keyof typeof input])}`).join(',')}}`);
  assert.ok(canonicalize(input).startsWith('{"\\r":"Carriage Return","1":"One","\u0080"'));
});

test('RFC 8785 3.2.2.3: numbers in ECMAScript form', () => {
  assert.equal(canonicalize([1e30, 4.5, 2e-3, 0.000000000000000000000000001, -0, 333333333.33333329, 1e21, 1e-7]), '[1e+30,4.5,0.002,1e-27,0,333333333.3333333,1e+21,1e-7]');
});

test('RFC 8785 3.2.4 example: whitespace removed, literals and escapes', () => {
  const input = { numbers: [333333333.33333329, 1e30, 4.5, 2e-3, 0.000000000000000000000000001], string: '\u20ac$\u000f\u000aA\'\u0042\u0022\u005c\\"/', literals: [null, true, false] };
  assert.equal(
    canonicalize(input),
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
  );
});

test('key order of the input does not matter; nesting is canonical too', () => {
  assert.equal(canonicalize({ b: { y: 1, x: [{ d: 1, c: 2 }] }, a: 'z' }), canonicalize({ a: 'z', b: { x: [{ c: 2, d: 1 }], y: 1 } }));
  assert.equal(canonicalize({ b: { y: 1, x: 2 }, a: 'z' }), '{"a":"z","b":{"x":2,"y":1}}');
});

test('values JSON cannot represent are refused; undefined members dropped like JSON.stringify', () => {
  assert.throws(() => canonicalize(NaN), /NaN/);
  assert.throws(() => canonicalize({ a: Infinity }), /\$\.a/);
  assert.throws(() => canonicalize({ a: 1n }), /BigInt/);
  assert.throws(() => canonicalize('\ud800'), /lone surrogate/);
  assert.throws(() => canonicalize(undefined), /no JSON form/);
  assert.equal(canonicalize({ a: undefined, b: [undefined], c: new Date(0) }), '{"b":[null],"c":"1970-01-01T00:00:00.000Z"}');
});

test("canonical JSON is each object's members in UTF-16 order, whatever order they came in (integer-like names too)", () => {
  const reference = (v: unknown): string =>
    Array.isArray(v)
      ? `[${v.map(reference).join(',')}]`
      : v !== null && typeof v === 'object'
        ? `{${Object.keys(v)
            .sort()
            .map((k) => `${JSON.stringify(k)}:${reference((v as Record<string, unknown>)[k])}`)
            .join(',')}}`
        : JSON.stringify(v);
  // The same members, inserted in the opposite order (integer-like names still come first in Object.keys).
  const reversed = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(reversed) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().reverse().map((k) => [k, reversed((v as Record<string, unknown>)[k])])) : v;
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 4 }), (v) => {
      const expected = reference(v);
      assert.equal(canonicalize(v), expected);
      assert.equal(canonicalize(reversed(v)), expected, 'in reverse order');
    }),
    { numRuns: 3000 },
  );
});
