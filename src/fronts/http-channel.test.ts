// Which body a 2025 request's answer comes in is the client's to choose: the Accept ranking.
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { prefersEventStream } from './http-channel.js';

describe('prefersEventStream', () => {
  test('q-values first, then the order of listing', () => {
    const cases: Array<[string | undefined, boolean]> = [
      [undefined, false],
      ['application/json, text/event-stream', false],
      ['text/event-stream, application/json', true],
      ['TEXT/Event-Stream ; charset=utf-8,application/json', true],
      ['application/json;q=0.5, text/event-stream', true],
      ['application/json; q=0.999, text/event-stream;q=1.0', true],
      ['text/event-stream;q=0.9, application/json', false],
      ['text/event-stream;q=0, application/json;q=0.1', false],
      ['*/*, application/json, text/event-stream', false],
      ['text/event-stream, application/json, text/event-stream;q=0', true],
    ];
    for (const [accept, sse] of cases) assert.equal(prefersEventStream(accept), sse, String(accept));
  });

  test('other media ranges, spaces and letter case change nothing', () => {
    const q = fc.option(fc.integer({ min: 0, max: 1000 }).map((n) => (n / 1000).toString()), { nil: undefined });
    const other = fc.constantFrom('*/*', 'text/*', 'application/xml;q=0.3', 'text/plain', 'application/*;q=1');
    fc.assert(
      fc.property(q, q, fc.boolean(), fc.array(other, { maxLength: 4 }), fc.nat(), fc.boolean(), (qs, qj, sseFirst, others, at, shout) => {
        const sse = `text/event-stream${qs === undefined ? '' : `;q=${qs}`}`;
        const json = `application/json${qj === undefined ? '' : `;q=${qj}`}`;
        const plain = sseFirst ? [sse, json] : [json, sse];
        const expected = Number(qs ?? 1) > Number(qj ?? 1) || (Number(qs ?? 1) === Number(qj ?? 1) && sseFirst);
        assert.equal(prefersEventStream(plain.join(', ')), expected);
        const noisy = [...plain];
        noisy.splice(at % (noisy.length + 1), 0, ...others);
        const spelled = noisy.map((r) => ` ${shout ? r.toUpperCase() : r} `).join(',');
        assert.equal(prefersEventStream(spelled), expected, spelled);
      }),
    );
  });
});
