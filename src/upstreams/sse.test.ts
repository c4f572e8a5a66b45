// The event stream parser: however the bytes are cut into chunks and whichever line ends the
// server uses, the same events come out, with the id to resume after and the retry delay.
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SseParser, SseTooLarge } from './sse.js';

interface Got {
  data: string;
  type: string;
  lastEventId: string | undefined;
}

function parse(chunks: Buffer[], max = 1 << 20): { events: Got[]; parser: SseParser } {
  const events: Got[] = [];
  const parser: SseParser = new SseParser((data, type) => events.push({ data, type, lastEventId: parser.lastEventId }), max);
  for (const c of chunks) parser.push(c);
  parser.end();
  return { events, parser };
}

/** Cuts bytes at the given points (UTF-8 characters and CRLF pairs get split too). */
function cut(bytes: Buffer, points: number[]): Buffer[] {
  const at = [...new Set(points.map((p) => p % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let start = 0;
  for (const p of at) {
    out.push(bytes.subarray(start, p));
    start = p;
  }
  out.push(bytes.subarray(start));
  return out;
}

// Data without CR or LF (those end lines), possibly with ":" and non-ASCII; ids without NUL or line ends.
const text = fc.string({ unit: 'grapheme', maxLength: 40 }).filter((s) => !/[\r\n]/.test(s));
const eventArb = fc.record({
  lines: fc.array(text, { minLength: 1, maxLength: 3 }),
  id: fc.option(text.filter((s) => !s.includes('\0') && s !== ''), { nil: undefined }),
  type: fc.option(fc.constantFrom('message', 'other'), { nil: undefined }),
  retry: fc.option(fc.nat({ max: 100_000 }), { nil: undefined }),
  comment: fc.boolean(),
});

describe('SseParser', () => {
  test('any chunking and any line ends (LF, CRLF, CR) give the same events, ids and retry', () => {
    fc.assert(
      fc.property(fc.array(eventArb, { minLength: 1, maxLength: 6 }), fc.constantFrom('\n', '\r\n', '\r'), fc.array(fc.nat(), { maxLength: 12 }), (events, eol, points) => {
        const wire = events
          .map((e) => [e.comment ? ': keep-alive' : undefined, e.id !== undefined ? `id: ${e.id}` : undefined, e.type ? `event: ${e.type}` : undefined, e.retry !== undefined ? `retry: ${e.retry}` : undefined, ...e.lines.map((l) => `data: ${l}`), ''].filter((l) => l !== undefined).join(eol) + eol)
          .join('');
        const { events: got, parser } = parse(cut(Buffer.from(wire, 'utf8'), points));
        let id: string | undefined;
        const expected: Got[] = [];
        for (const e of events) {
          if (e.id !== undefined) id = e.id;
          const data = e.lines.join('\n');
          if (data !== '') expected.push({ data, type: e.type ?? 'message', lastEventId: id });
        }
        assert.deepEqual(got, expected);
        assert.equal(parser.lastEventId, id);
        const retries = events.filter((e) => e.retry !== undefined);
        assert.equal(parser.retryMs, retries.at(-1)?.retry);
      }),
      { numRuns: 400 },
    );
  });

  test('a priming event (id, empty data) sets the id to resume after and delivers nothing', () => {
    const { events, parser } = parse([Buffer.from('id: 7\nretry: 1500\ndata: \n\n')]);
    assert.deepEqual(events, []);
    assert.equal(parser.lastEventId, '7');
    assert.equal(parser.retryMs, 1500);
  });

  test('an event cut off by the end of the stream is dropped, and its id does not count', () => {
    const { events, parser } = parse([Buffer.from('id: 1\ndata: {"a":1}\n\nid: 2\ndata: {"half"')]);
    assert.deepEqual(events.map((e) => e.data), ['{"a":1}']);
    assert.equal(parser.lastEventId, '1');
  });

  test('fields as the standard reads them: no space after the colon, a field alone, unknown fields, a BOM, an invalid retry', () => {
    const { events, parser } = parse([Buffer.from('\ufeffdata:a\ndata\nfoo: bar\nretry: 12x\nid\n\n')]);
    assert.deepEqual(events, [{ data: 'a\n', type: 'message', lastEventId: undefined }]);
    assert.equal(parser.retryMs, undefined);
  });

  test('an event or a line over the limit throws SseTooLarge (the stream cannot be resynchronised)', () => {
    assert.throws(() => parse([Buffer.from(`data: ${'x'.repeat(100)}\n`)], 50), SseTooLarge);
    assert.throws(() => parse([Buffer.from(`data: ${'x'.repeat(30)}\n`), Buffer.from(`data: ${'x'.repeat(30)}\n`)], 50), SseTooLarge);
    assert.throws(() => parse([Buffer.from('data: '), ...Array.from({ length: 10 }, () => Buffer.from('x'.repeat(10)))], 50), SseTooLarge);
    assert.doesNotThrow(() => parse([Buffer.from(`data: ${'x'.repeat(40)}\n\n`.repeat(10))], 50));
  });
});
