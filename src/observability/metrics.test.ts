// Metric labels come from a closed set: whatever method strings clients send, the number of
// series stays bounded (an unbounded label is a memory leak in the gateway and in Prometheus).
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createMetrics, METHOD_LABELS, methodLabel } from './metrics.js';

const KNOWN = ['initialize', 'ping', 'tools/list', 'tools/call', 'resources/read', 'resources/templates/list', 'prompts/get', 'completion/complete', 'sampling/createMessage', 'elicitation/create', 'roots/list', 'tasks/get', 'server/discover'];

/** Strings that look like MCP methods (near-misses) as well as anything at all. */
const methodLike = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.tuple(fc.constantFrom(...KNOWN), fc.constantFrom('', ' ', '/', 'x', '\u0000', '\u200b', 's')).map(([m, tail]) => m + tail),
  fc.constantFrom(...KNOWN).map((m) => m.toUpperCase()),
  fc.tuple(fc.stringMatching(/^[a-z]{1,12}$/), fc.stringMatching(/^[a-zA-Z]{1,12}$/)).map(([a, b]) => `${a}/${b}`),
);

describe('methodLabel', () => {
  test('MCP methods label as themselves', () => {
    for (const m of KNOWN) assert.equal(methodLabel(m), m);
  });

  test('every label is an MCP method or "other"; a near-miss (case, spaces, invisible characters) is "other"', () => {
    assert.ok(METHOD_LABELS.size < 40);
    fc.assert(
      fc.property(methodLike, (m) => {
        const label = methodLabel(m);
        assert.ok(label === 'other' || METHOD_LABELS.has(label), `"${m}" became label "${label}"`);
        if (label !== 'other') assert.equal(label, m);
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.constantFrom(...KNOWN), fc.constantFrom(' ', '/', '\u0000', '\u200b', 's', 'X'), fc.boolean(), (known, extra, before) => {
        assert.equal(methodLabel(before ? extra + known : known + extra), 'other');
      }),
    );
  });

  test('a flood of made-up methods adds one series, not one per method', async () => {
    const metrics = createMetrics();
    const distinct = new Set<string>();
    fc.assert(
      fc.property(methodLike, (m) => {
        if (METHOD_LABELS.has(m)) return;
        distinct.add(m);
        metrics.requests.inc({ server: 'files', method: methodLabel(m), effect: 'deny' });
      }),
      { numRuns: 1000 },
    );
    assert.ok(distinct.size > 500, `${distinct.size} distinct methods`);
    const series = (await metrics.requests.get()).values;
    assert.deepEqual(series.map((v) => v.labels), [{ server: 'files', method: 'other', effect: 'deny' }]);
  });
});
