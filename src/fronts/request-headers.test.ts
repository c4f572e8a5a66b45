import fc from 'fast-check';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeHeaderValue, encodeHeaderValue, paramHeadersOf } from './request-headers.js';

describe('Mcp-Name / Mcp-Param value encoding', () => {
  test('every string survives encode then decode, and what is sent is a valid header value', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (value) => {
        fc.pre((value as string & { isWellFormed(): boolean }).isWellFormed());
        const sent = encodeHeaderValue(value);
        assert.match(sent, /^[\x20-\x7e]*$/, 'visible ASCII only: no CR, LF, NUL, tab or non-ASCII on the wire');
        assert.doesNotMatch(sent, /^ | $/, 'no edge spaces (HTTP would trim them)');
        assert.equal(decodeHeaderValue(sent), value);
      }),
      { numRuns: 3000 },
    );
  });

  test('one value, one spelling: a sentinel that is not canonical Base64 of UTF-8 decodes to nothing', () => {
    assert.equal(decodeHeaderValue('=?base64?SGVsbG8=?='), 'Hello');
    for (const bad of ['=?base64?SGVsbG8?=', '=?base64?SGVsbG9=?=', '=?base64?SGVs!!!bG8=?=', '=?BASE64?SGVsbG8=?=', '=?base64?/w==?=', '=?base64?SGVsbG8=']) {
      const decoded = decodeHeaderValue(bad);
      assert.ok(decoded === undefined || decoded === bad, `${bad} → ${decoded}`);
    }
    assert.equal(decodeHeaderValue('=?base64?/w==?='), undefined, 'not UTF-8');
    assert.equal(decodeHeaderValue('=?base64?SGVsbG8?='), undefined, 'padding missing');
    assert.equal(decodeHeaderValue('zürich'), undefined, 'non-ASCII must be encoded');
    assert.equal(decodeHeaderValue('a\u0001b'), undefined, 'control characters must be encoded');
  });
});

describe('x-mcp-header annotations', () => {
  test('nested properties are followed; names are case-insensitively unique tokens', () => {
    const headers = paramHeadersOf({ type: 'object', properties: { region: { type: 'string', 'x-mcp-header': 'Region' }, target: { type: 'object', properties: { zone: { type: 'string', 'x-mcp-header': 'Zone' } } } } });
    assert.deepEqual([...headers!], [['region', { name: 'Region', path: ['region'] }], ['zone', { name: 'Zone', path: ['target', 'zone'] }]]);
    assert.equal(paramHeadersOf({ properties: { a: { 'x-mcp-header': 'X' }, b: { 'x-mcp-header': 'x' } } }), undefined, 'duplicate ignoring case');
    assert.equal(paramHeadersOf({ properties: { a: { 'x-mcp-header': 'has space' } } }), undefined, 'not a token');
    assert.equal(paramHeadersOf({ properties: { a: { 'x-mcp-header': '' } } }), undefined, 'empty');
    assert.equal(paramHeadersOf({ 'x-mcp-header': 'Root' }), undefined, 'on the root');
    assert.equal(paramHeadersOf({ properties: { n: { type: 'number', 'x-mcp-header': 'N' } } }), undefined, 'on a number');
    assert.equal(paramHeadersOf({ properties: { o: { type: 'object', 'x-mcp-header': 'O' } } }), undefined, 'on an object');
  });
});
