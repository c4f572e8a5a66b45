// The 2026-07-28 request metadata headers: whatever a value holds, it travels as a header value
// without CR, LF, NUL or non-ASCII and comes back unchanged; what a client writes, the check a
// server or the gateway's front runs accepts; and any header that differs from the body is caught.
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { validateHeaderValue } from 'node:http';
import { describe, test } from 'node:test';
import { decodeHeaderValue, encodeHeaderValue, headerMismatch, McpHeaderError, modernRequestHeaders, paramHeaderFields, paramHeaders, PROTOCOL_VERSION_META } from './mcp-headers.js';

const anyString = fc.string({ unit: 'binary', maxLength: 60 }).filter((s) => (s as string & { isWellFormed(): boolean }).isWellFormed());
/** Any well-formed string, plain ASCII and sentinel look-alikes included often. */
const wellFormed = fc.oneof(anyString, fc.string({ unit: 'grapheme-ascii', maxLength: 20 }), anyString.map((s) => `=?base64?${s}?=`));
const SAFE = /^[\x20-\x7e\t]*$/;

const REGION = {
  name: 'execute_sql',
  inputSchema: {
    type: 'object',
    properties: {
      region: { type: 'string', 'x-mcp-header': 'Region' },
      limit: { type: 'integer', 'x-mcp-header': 'Limit' },
      dry: { type: ['boolean', 'null'], 'x-mcp-header': 'Dry-Run' },
      target: { type: 'object', properties: { db: { type: 'string', 'x-mcp-header': 'Db' } } },
      query: { type: 'string' },
    },
  },
};
const meta = { [PROTOCOL_VERSION_META]: '2026-07-28' };
const call = (args: unknown, name = 'execute_sql') => ({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { _meta: meta, name, arguments: args } });
const lookup = (headers: Record<string, string>) => (name: string) => headers[name];

describe('header values', () => {
  test('any string encodes to a value Node accepts, with nothing outside visible ASCII, space and tab, and decodes back to itself', () => {
    fc.assert(
      fc.property(wellFormed, (value) => {
        const encoded = encodeHeaderValue(value);
        assert.match(encoded, SAFE);
        assert.ok(!/[\r\n\0]/.test(encoded));
        assert.doesNotThrow(() => validateHeaderValue('mcp-param-x', encoded));
        assert.equal(decodeHeaderValue(encoded), value);
      }),
      { numRuns: 2000 },
    );
  });

  test('plain ASCII stays as it is; what a header cannot carry as is, or that looks like the sentinel, is base64 (the spec\'s examples)', () => {
    assert.equal(encodeHeaderValue('us-west1'), 'us-west1');
    assert.equal(encodeHeaderValue('Hello, 世界'), '=?base64?SGVsbG8sIOS4lueVjA==?=');
    assert.equal(encodeHeaderValue(' padded '), '=?base64?IHBhZGRlZCA=?=');
    assert.equal(encodeHeaderValue('line1\nline2'), '=?base64?bGluZTEKbGluZTI=?=');
    assert.equal(encodeHeaderValue('=?base64?literal?='), '=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=');
    assert.equal(encodeHeaderValue(''), '=?base64??=');
    assert.equal(decodeHeaderValue('=?base64??='), '');
    assert.throws(() => encodeHeaderValue('a\ud800'), McpHeaderError);
  });

  test('decoding refuses invalid characters, non-canonical base64, invalid UTF-8, and a bare value that looks encoded', () => {
    for (const bad of ['a\r\nb', 'a\0', 'caf\u00e9', ' lead', 'trail\t', '=?base64?SGk?=', '=?base64?SGk=\n?=', '=?base64?SGl=?=', '=?base64?SG-k?=', '=?base64?/w==?=', '=?base64?=', '=?base64?literal?=']) {
      assert.equal(decodeHeaderValue(bad), undefined, JSON.stringify(bad));
    }
    assert.equal(decodeHeaderValue('a b\tc'), 'a b\tc');
    assert.equal(decodeHeaderValue('=?base64?SGk=?='), 'Hi');
  });

  test('no header value a peer sends decodes unless it is valid: whatever comes out has a valid encoding that gives it back', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 30 }), fc.string({ maxLength: 30 }).map((s) => `=?base64?${s}?=`)), (raw) => {
        const decoded = decodeHeaderValue(raw);
        if (decoded === undefined) return;
        assert.match(raw, SAFE);
        assert.equal(decodeHeaderValue(encodeHeaderValue(decoded)), decoded);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('x-mcp-header annotations', () => {
  test('collects string, integer and boolean properties reached through properties, nested ones included', () => {
    const found = paramHeaderFields(REGION.inputSchema);
    assert.ok('fields' in found);
    assert.deepEqual(
      found.fields.map((f) => [f.path.join('.'), f.name, f.type]).sort(),
      [
        ['dry', 'Dry-Run', 'boolean'],
        ['limit', 'Limit', 'integer'],
        ['region', 'Region', 'string'],
        ['target.db', 'Db', 'string'],
      ],
    );
  });

  test('an invalid annotation makes the tool invalid, with the reason', () => {
    const invalid: Array<[unknown, RegExp]> = [
      [{ type: 'object', properties: { n: { type: 'number', 'x-mcp-header': 'N' } } }, /string, an integer or a boolean/],
      [{ type: 'object', properties: { o: { type: 'object', 'x-mcp-header': 'O' } } }, /string, an integer or a boolean/],
      [{ type: 'object', properties: { a: { type: 'string', 'x-mcp-header': 'Has Space' } } }, /not an HTTP token/],
      [{ type: 'object', properties: { a: { type: 'string', 'x-mcp-header': 'A\r\nX: 1' } } }, /not an HTTP token/],
      [{ type: 'object', properties: { a: { type: 'string', 'x-mcp-header': '' } } }, /not an HTTP token/],
      [{ type: 'object', properties: { a: { type: 'string', 'x-mcp-header': 'Same' }, b: { type: 'string', 'x-mcp-header': 'same' } } }, /already used/],
      [{ type: 'object', properties: { l: { type: 'array', items: { type: 'string', 'x-mcp-header': 'L' } } } }, /reached through "properties" alone/],
      [{ type: 'object', anyOf: [{ properties: { a: { type: 'string', 'x-mcp-header': 'A' } } }] }, /reached through "properties" alone/],
      [{ type: 'object', $defs: { a: { type: 'string', 'x-mcp-header': 'A' } }, properties: { a: { $ref: '#/$defs/a' } } }, /reached through "properties" alone/],
      [{ type: 'string', 'x-mcp-header': 'Root' }, /reached through "properties" alone/],
    ];
    for (const [schema, why] of invalid) {
      const found = paramHeaderFields(schema);
      assert.ok('problem' in found, JSON.stringify(schema));
      assert.match(found.problem, why);
    }
    assert.throws(() => paramHeaders({ name: 'bad', inputSchema: invalid[0][0] }, { n: 1 }), /tool "bad" is invalid/);
  });

  test('a property named "x-mcp-header", or the word in an example, is no annotation', () => {
    const found = paramHeaderFields({ type: 'object', properties: { 'x-mcp-header': { type: 'string', examples: [{ 'x-mcp-header': 'X' }] } } });
    assert.deepEqual(found, { fields: [] });
  });
});

describe('request headers from the body', () => {
  test('a tools/call carries the version, method, name and each annotated argument present (null and absent ones omitted)', () => {
    const headers = modernRequestHeaders(call({ region: 'Zürich', limit: -7, dry: null, target: { db: 'main' }, query: 'SELECT 1' }), REGION);
    assert.deepEqual(headers, {
      'mcp-protocol-version': '2026-07-28',
      'mcp-method': 'tools/call',
      'mcp-name': 'execute_sql',
      'mcp-param-region': '=?base64?WsO8cmljaA==?=',
      'mcp-param-limit': '-7',
      'mcp-param-db': 'main',
    });
    assert.deepEqual(modernRequestHeaders({ method: 'resources/read', params: { _meta: meta, uri: 'file:///a b' } }), {
      'mcp-protocol-version': '2026-07-28',
      'mcp-method': 'resources/read',
      'mcp-name': 'file:///a b',
    });
    assert.deepEqual(modernRequestHeaders({ method: 'tools/list', params: { _meta: meta } }), { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/list' });
  });

  test('refuses what it cannot mirror: no protocol version, no name, a version or method with line breaks', () => {
    assert.throws(() => modernRequestHeaders({ method: 'tools/list', params: {} }), McpHeaderError);
    assert.throws(() => modernRequestHeaders({ method: 'tools/call', params: { _meta: meta } }), /params.name/);
    assert.throws(() => modernRequestHeaders({ method: 'tools/list', params: { _meta: { [PROTOCOL_VERSION_META]: '2026\r\nX: 1' } } }), McpHeaderError);
    assert.throws(() => modernRequestHeaders({ method: 'tools/list\n', params: { _meta: meta } }), McpHeaderError);
  });

  test('what the client writes, the check accepts; any change to one header, or its removal, is caught', () => {
    const args = fc.record(
      { region: wellFormed, limit: fc.integer({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }), dry: fc.option(fc.boolean(), { nil: null }), target: fc.record({ db: wellFormed }, { requiredKeys: [] }) },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(args, wellFormed, fc.nat(), fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 8 }), (a, name, pick, junk) => {
        const message = call(a, name);
        const headers = modernRequestHeaders(message, REGION);
        assert.equal(headerMismatch(lookup(headers), message, REGION), undefined);
        for (const v of Object.values(headers)) assert.match(v, SAFE);
        const keys = Object.keys(headers);
        const key = keys[pick % keys.length];
        fc.pre(!(key === 'mcp-param-limit' && /^\.0+$/.test(junk))); // 42.0 is 42
        const without = { ...headers };
        delete without[key];
        assert.match(headerMismatch(lookup(without), message, REGION) ?? '', /missing/);
        const changed = { ...headers, [key]: headers[key] + junk };
        assert.notEqual(headerMismatch(lookup(changed), message, REGION), undefined, `${key}: ${changed[key]}`);
      }),
      { numRuns: 1000 },
    );
  });

  test('integers compare as numbers (42.0 is 42); booleans and strings exactly; invalid characters never match', () => {
    const message = call({ region: 'eu', limit: 42, dry: false });
    const ok = { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'execute_sql', 'mcp-param-region': 'eu', 'mcp-param-dry-run': 'false' };
    for (const limit of ['42', '42.0', '=?base64?NDI=?=']) assert.equal(headerMismatch(lookup({ ...ok, 'mcp-param-limit': limit }), message, REGION), undefined, limit);
    for (const limit of ['42.5', '0x2a', '4.2e1', ' 42', '+42', '43']) assert.match(headerMismatch(lookup({ ...ok, 'mcp-param-limit': limit }), message, REGION) ?? '', /Mcp-Param-Limit/, limit);
    assert.match(headerMismatch(lookup({ ...ok, 'mcp-param-limit': '42', 'mcp-param-dry-run': 'False' }), message, REGION) ?? '', /Mcp-Param-Dry-Run/);
    assert.match(headerMismatch(lookup({ ...ok, 'mcp-param-limit': '42', 'mcp-param-region': 'e\u00fc' }), message, REGION) ?? '', /invalid characters/);
    // A value the body does not have: the header is not expected, and one sent anyway is ignored.
    assert.equal(headerMismatch(lookup({ ...ok, 'mcp-param-limit': '42', 'mcp-param-db': 'x' }), message, REGION), undefined);
    assert.match(headerMismatch(lookup({ ...ok, 'mcp-param-limit': '42', 'mcp-name': 'other' }), message, REGION) ?? '', /Mcp-Name/);
    assert.match(headerMismatch(lookup({ ...ok, 'mcp-param-limit': '42', 'mcp-protocol-version': '2025-11-25' }), message, REGION) ?? '', /MCP-Protocol-Version/);
  });
});
